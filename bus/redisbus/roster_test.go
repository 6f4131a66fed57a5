package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

func newRosterTransport(t *testing.T, url string) bus.Roster {
	t.Helper()
	tr, err := NewTransport(&Options{URL: url, Prefix: "rt"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeTransport(t, tr) })
	ro, ok := tr.(bus.Roster)
	if !ok {
		t.Fatalf("%T is no bus.Roster", tr)
	}
	return ro
}

// rosterNode is one process beating on the record.
type rosterNode struct {
	t     *testing.T
	tr    bus.Roster
	node  string
	inst  uint64
	info  uint64
	stale time.Duration
	// interval is how often the node beats (zero: stale).
	interval time.Duration
	since    bus.RosterVersion
}

func (n *rosterNode) beat(leave bool) bus.RosterView {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := n.try(ctx, leave)
	if err != nil {
		n.t.Fatalf("%s: Beat: %v", n.node, err)
	}
	return v
}

func (n *rosterNode) try(ctx context.Context, leave bool) (bus.RosterView, error) {
	v, err := n.tr.Beat(ctx, bus.RosterBeat{Node: n.node, Instance: n.inst, Info: n.info, Stale: n.stale, Forget: 4 * n.stale, Interval: n.interval, Since: n.since, Leave: leave})
	if err == nil {
		n.since = v.Version
	}
	return v, err
}

// names lists the changes as "node/fresh-or-stale/info".
func names(v bus.RosterView) []string {
	var out []string
	for _, e := range v.Changed {
		var s string
		switch {
		case e.Unconfirmed:
			s = "unconfirmed"
		case e.Fresh:
			s = "fresh"
		case e.Left:
			s = "left"
		default:
			s = "stale"
		}
		out = append(out, e.Node+"/"+s+"/"+strconv.FormatUint(e.Info, 10))
	}
	slices.Sort(out)
	return out
}

// TestRosterChanges: a beat returns what changed since the caller's last one
// (nothing in a steady state), an info change, a process that stops beating
// (stale once its bound passed, as seen by the next beat of anyone), one that
// leaves, and a record that the broker lost (a new epoch: everything again).
func TestRosterChanges(t *testing.T) {
	srv := redistest.Standalone(t)
	a := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "a", inst: 1, stale: time.Hour}
	b := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "b", inst: 2, stale: 300 * time.Millisecond}
	c := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "c", inst: 3, stale: time.Hour}

	v := a.beat(false)
	if !v.Full || !slices.Equal(names(v), []string{"a/fresh/0"}) {
		t.Fatalf("first beat: full %v, %v", v.Full, names(v))
	}
	b.beat(false)
	c.info = 7
	c.beat(false)
	if v := a.beat(false); v.Full || !slices.Equal(names(v), []string{"b/fresh/0", "c/fresh/7"}) {
		t.Fatalf("a after b and c joined: full %v, %v", v.Full, names(v))
	}
	for i := range 3 {
		if v := a.beat(false); len(v.Changed) != 0 {
			t.Fatalf("steady beat %d: %v", i, names(v))
		}
	}
	c.info = 8
	c.beat(false)
	if v := a.beat(false); !slices.Equal(names(v), []string{"c/fresh/8"}) {
		t.Fatalf("after c's info changed: %v", names(v))
	}

	// b stops beating: the first beat after its bound marks it stale.
	time.Sleep(400 * time.Millisecond) // b's stale bound must pass (time, not a condition)
	if v := c.beat(false); !slices.Equal(names(v), []string{"b/stale/0"}) {
		t.Fatalf("c after b's bound: %v", names(v))
	}
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/stale/0"}) {
		t.Fatalf("a after b's bound: %v", names(v))
	}
	// b comes back (a late beat): fresh again, a change.
	b.beat(false)
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/fresh/0"}) {
		t.Fatalf("a after b came back: %v", names(v))
	}

	// c leaves.
	c.beat(true)
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/fresh/0", "c/left/8"}) && !slices.Equal(names(v), []string{"c/left/8"}) {
		t.Fatalf("a after c left: %v", names(v))
	}

	// The record is lost (a Redis without persistence restarted): a new
	// epoch, and the next beat gets the whole record as it is now.
	old := a.since
	if _, err := srv.Do(context.Background(), "FLUSHALL"); err != nil {
		t.Fatal(err)
	}
	v = a.beat(false)
	if !v.Full || v.Version.Epoch == old.Epoch || !slices.Equal(names(v), []string{"a/fresh/0"}) {
		t.Fatalf("after the record was lost: full %v, epoch %q (was %q), %v", v.Full, v.Version.Epoch, old.Epoch, names(v))
	}
}

// TestRosterForgets: a stale entry is removed once the forget bound passed,
// and the record's keys expire when no one beats.
func TestRosterForgets(t *testing.T) {
	srv := redistest.Standalone(t)
	a := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "a", inst: 1, stale: time.Hour}
	b := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "b", inst: 2, stale: 100 * time.Millisecond}
	a.beat(false)
	b.beat(false)
	time.Sleep(150 * time.Millisecond) // past b's stale bound
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/stale/0"}) {
		t.Fatalf("after b's bound: %v", names(v))
	}
	time.Sleep(450 * time.Millisecond) // past b's forget bound (4 × stale)
	a.beat(false)
	a.since = bus.RosterVersion{}
	if v := a.beat(false); !slices.Equal(names(v), []string{"a/fresh/0"}) {
		t.Fatalf("whole record after b's forget bound: %v", names(v))
	}
	for _, k := range rosterKeys("rt") {
		r, err := srv.Do(context.Background(), "PTTL", k)
		if err != nil {
			t.Fatal(err)
		}
		ttl, _ := r.(int64)
		if k != rosterKeys("rt")[2] && k != rosterKeys("rt")[5] && (ttl <= 0 || ttl > 2*int64(4*time.Hour/time.Millisecond)) {
			t.Errorf("%s: pttl %d ms, want (0, 8h]", k, ttl)
		}
	}
}

// TestRosterFailoverLostChanges: a reader whose version is ahead of the
// record's (a failover lost the record's last changes) gets the whole record.
func TestRosterFailoverLostChanges(t *testing.T) {
	srv := redistest.Standalone(t)
	a := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "a", inst: 1, stale: time.Hour}
	a.beat(false)
	a.since.N += 5
	if v := a.beat(false); !v.Full || !slices.Equal(names(v), []string{"a/fresh/0"}) {
		t.Fatalf("version ahead of the record: full %v, %v", v.Full, names(v))
	}
}

// TestRosterCluster: the record's keys share one slot, so the script runs on a
// Redis Cluster.
func TestRosterCluster(t *testing.T) {
	cs := redistest.Cluster(t)
	a := &rosterNode{t: t, tr: newRosterTransport(t, cs.URL()), node: "a", inst: 1, stale: time.Hour}
	b := &rosterNode{t: t, tr: newRosterTransport(t, cs.URL()), node: "b", inst: 2, stale: time.Hour}
	a.beat(false)
	b.beat(false)
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/fresh/0"}) {
		t.Fatalf("a after b joined: %v", names(v))
	}
}

// TestRosterWriteOutage: while Redis refuses writes (out of memory under
// noeviction) no node can beat, for longer than any stale bound. Once writes
// are taken again, the first beat does not take the nodes that could not write
// for stopped: the pause does not count towards their bounds. A node that
// then stops is stale after its bound, as before.
func TestRosterWriteOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	const stale, interval = 600 * time.Millisecond, 100 * time.Millisecond
	a := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "a", inst: 1, stale: stale, interval: interval}
	b := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "b", inst: 2, stale: stale, interval: interval}
	a.beat(false)
	b.beat(false)
	a.beat(false)
	do := func(args ...string) {
		t.Helper()
		if _, err := srv.Do(context.Background(), args...); err != nil {
			t.Fatal(err)
		}
	}
	do("CONFIG", "SET", "maxmemory-policy", "noeviction")
	do("CONFIG", "SET", "maxmemory", "1")
	refused := 0
	deadline := time.Now().Add(3 * stale) // the outage lasts longer than any bound
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, errA := a.try(ctx, false)
		_, errB := b.try(ctx, false)
		cancel()
		if errA != nil && errB != nil {
			refused++
		}
		time.Sleep(interval)
	}
	do("CONFIG", "SET", "maxmemory", "0")
	if refused == 0 {
		t.Fatal("Redis took every beat while out of memory: no outage was made")
	}
	if v := a.beat(false); !slices.Equal(names(v), []string{"a/fresh/0", "b/unconfirmed/0"}) {
		t.Fatalf("a's first beat after the outage: %v, want b unconfirmed (not stale)", names(v))
	}
	b.beat(false)
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/fresh/0"}) {
		t.Fatalf("a after b's first beat after the outage: %v, want b fresh", names(v))
	}
	for range 3 {
		if v := a.beat(false); len(v.Changed) != 0 {
			t.Fatalf("a after the outage, both beating: %v", names(v))
		}
		time.Sleep(interval)
	}
	// b stops: stale after its bound, as ever.
	testwait.For(t, 10*time.Second, "b to turn stale after it stopped", func() bool {
		time.Sleep(interval)
		return slices.Contains(names(a.beat(false)), "b/stale/0")
	})
}

// shiftRecord moves the record's clock readings (its last write and every
// bound) by d, as if Redis's clock had stepped by -d since.
func shiftRecord(t *testing.T, srv *redistest.Server, prefix string, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	keys := rosterKeys(prefix)
	ms := d.Milliseconds()
	r, err := srv.Do(ctx, "HGET", keys[4], "last")
	if err != nil {
		t.Fatal(err)
	}
	last, err := strconv.ParseInt(fmt.Sprint(r), 10, 64)
	if err != nil {
		t.Fatalf("last write %v: %v", r, err)
	}
	if _, err := srv.Do(ctx, "HSET", keys[4], "last", strconv.FormatInt(last+ms, 10)); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys[1:3] {
		r, err := srv.Do(ctx, "ZRANGE", k, "0", "-1", "WITHSCORES")
		if err != nil {
			t.Fatal(err)
		}
		all, _ := r.([]any)
		for i := 0; i+1 < len(all); i += 2 {
			score, err := strconv.ParseFloat(fmt.Sprint(all[i+1]), 64)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := srv.Do(ctx, "ZADD", k, strconv.FormatInt(int64(score)+ms, 10), fmt.Sprint(all[i])); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestRosterClockSteps: Redis's clock steps forward by more than every bound
// (no entry turns stale for it), then back by ten minutes (a process that
// stops is stale after its bound, not ten minutes later).
func TestRosterClockSteps(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	const stale, interval = time.Second, 100 * time.Millisecond
	a := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "a", inst: 1, stale: stale, interval: interval}
	b := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "b", inst: 2, stale: stale, interval: interval}
	a.beat(false)
	b.beat(false)
	a.beat(false)

	shiftRecord(t, srv, "rt", -time.Minute) // the clock stepped forward a minute
	if v := a.beat(false); !slices.Equal(names(v), []string{"a/fresh/0", "b/unconfirmed/0"}) {
		t.Fatalf("after the clock stepped forward: %v, want b unconfirmed (not stale)", names(v))
	}
	b.beat(false)
	if v := a.beat(false); !slices.Equal(names(v), []string{"b/fresh/0"}) {
		t.Fatalf("after b beat again: %v", names(v))
	}

	shiftRecord(t, srv, "rt", 10*time.Minute) // and back ten minutes; b stops
	a.beat(false)
	testwait.For(t, 10*time.Second, "b to turn stale within its bound after the clock stepped back", func() bool {
		time.Sleep(interval)
		return slices.Contains(names(a.beat(false)), "b/stale/0")
	})
}

// TestRosterMixedIntervals: processes that beat at different intervals; the
// clock steps forward a minute and the slow one writes first: the fast one's
// entry is not stale (its bound moves on by the pause beyond its own
// interval), only unconfirmed until it writes again.
func TestRosterMixedIntervals(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	fast := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "fast", inst: 1, stale: 3 * time.Second, interval: time.Second}
	slow := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "slow", inst: 2, stale: 15 * time.Second, interval: 5 * time.Second}
	slow.beat(false)
	fast.beat(false)
	shiftRecord(t, srv, "rt", -time.Minute)
	if v := slow.beat(false); !slices.Equal(names(v), []string{"fast/unconfirmed/0", "slow/fresh/0"}) {
		t.Fatalf("slow's beat after the clock stepped: %v, want fast unconfirmed", names(v))
	}
	fast.beat(false)
	if v := slow.beat(false); !slices.Equal(names(v), []string{"fast/fresh/0"}) {
		t.Fatalf("after fast beat again: %v", names(v))
	}
}

// TestRosterRemovalMissed: a reader that last read before an entry turned
// stale and was removed (it beats less often than that entry's forget bound)
// gets the whole record, without the entry, instead of holding it forever.
func TestRosterRemovalMissed(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	reader := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "reader", inst: 1, stale: time.Hour}
	gone := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "gone", inst: 2, stale: 100 * time.Millisecond, interval: 20 * time.Millisecond}
	other := &rosterNode{t: t, tr: newRosterTransport(t, srv.URL()), node: "other", inst: 3, stale: 100 * time.Millisecond, interval: 20 * time.Millisecond}
	gone.beat(false)
	other.beat(false)
	if v := reader.beat(false); !slices.Contains(names(v), "gone/fresh/0") {
		t.Fatalf("reader: %v", names(v))
	}
	// gone stops; other beats on until gone was removed (4 × its bound).
	testwait.For(t, 10*time.Second, "gone's entry to be removed", func() bool {
		time.Sleep(20 * time.Millisecond)
		other.beat(false)
		r, err := srv.Do(context.Background(), "HEXISTS", rosterKeys("rt")[0], rosterMember("gone", 2))
		return err == nil && r == int64(0)
	})
	v := reader.beat(false)
	if !v.Full || slices.ContainsFunc(names(v), func(s string) bool { return strings.HasPrefix(s, "gone/") }) {
		t.Fatalf("reader after gone was removed: full %v, %v; want the whole record without gone", v.Full, names(v))
	}
	if v := reader.beat(false); v.Full {
		t.Fatalf("reader's next beat is a whole read again: %v", names(v))
	}
}

func TestRosterUnavailable(t *testing.T) {
	srv := redistest.Standalone(t)
	tr := newRosterTransport(t, srv.URL())
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := tr.Beat(ctx, bus.RosterBeat{Node: "a", Instance: 1, Stale: time.Second})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Beat with Redis down: %v, want ErrUnavailable", err)
	}
}

func FuzzParseRoster(f *testing.F) {
	f.Add("e1\n0\n1")
	f.Add("e1\n4\n0\n0000000000000001:a\n7\nf\n0000000000000002:b\n0\ns")
	f.Add("e1\n4\n0\n0000000000000001\n7\nf")
	f.Add("e1\n9\n1\n0000000000000003:c\n2\nu\n0000000000000004:d\n0\nl")
	f.Fuzz(func(t *testing.T, s string) {
		v, err := parseRoster(strings.Split(s, "\n"))
		if err != nil {
			if !errors.Is(err, errRosterReply) {
				t.Fatalf("error %v does not wrap errRosterReply", err)
			}
			return
		}
		for _, e := range v.Changed {
			if got := rosterMember(e.Node, e.Instance); !strings.Contains(s, got) {
				t.Fatalf("member %q not in the input", got)
			}
			if (e.Unconfirmed && !e.Fresh) || (e.Left && e.Fresh) {
				t.Fatalf("impossible state %+v", e)
			}
		}
	})
}
