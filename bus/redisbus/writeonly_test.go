package redisbus

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// lastEntryID returns the id of the last entry of key on srv ("" when none),
// read after READONLY (srv may be a replica).
func lastEntryID(t *testing.T, ctx context.Context, srv *redistest.Server, key string) string {
	t.Helper()
	v, err := srv.DoAll(ctx, []string{"READONLY"}, []string{"XREVRANGE", key, "+", "-", "COUNT", "1"})
	if err != nil {
		t.Fatalf("XREVRANGE %s on %s: %v", key, srv.Addr(), err)
	}
	entries := v[1].([]any)
	if len(entries) == 0 {
		return ""
	}
	return entries[0].([]any)[0].(string)
}

// waitReplicated waits until replica holds key up to the last entry it has
// now on primary.
func waitReplicated(t *testing.T, ctx context.Context, primary, replica *redistest.Server, key string) {
	t.Helper()
	want := lastEntryID(t, ctx, primary, key)
	testwait.For(t, 20*time.Second, "the replica holding "+key+" up to "+want, func() bool {
		got := lastEntryID(t, ctx, replica, key)
		return got == want || got != "" && idBefore(want, got)
	})
}

// learnPrimary waits until the client of s sends the commands of key's slot
// to the node serving it now (its slot map refreshed, as other traffic makes
// it happen), checked by a read on a pinned connection, which returns a
// redirection instead of following it.
func learnPrimary(t *testing.T, ctx context.Context, s *streams, key string) {
	t.Helper()
	c, err := s.client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, "the client's slot map naming the new primary of "+key, func() bool {
		var rerr error
		err := c.Dedicated(func(dc rueidis.DedicatedClient) error {
			rerr = dc.Do(ctx, c.B().Xlen().Key(key).Build()).Error()
			return nil
		})
		return err == nil && rerr == nil
	})
}

// commandCalls returns how many times srv ran command (INFO commandstats).
func commandCalls(t *testing.T, ctx context.Context, srv *redistest.Server, command string) int {
	t.Helper()
	info, err := srv.Info(ctx, "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	stats, ok := info["cmdstat_"+command]
	if !ok {
		return 0
	}
	for f := range strings.SplitSeq(stats, ",") {
		if v, ok := strings.CutPrefix(f, "calls="); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("cmdstat_%s %q", command, stats)
			}
			return n
		}
	}
	t.Fatalf("cmdstat_%s %q", command, stats)
	return 0
}

// lagFailover detaches the replica of the primary serving key, runs during,
// then has the replica take over (CLUSTER FAILOVER TAKEOVER) without what
// during wrote, and checks that it lacks it. It returns the old primary and
// the new one.
func lagFailover(t *testing.T, ctx context.Context, cs *redistest.ClusterSet, key string, during func()) (old, promoted *redistest.Server) {
	t.Helper()
	old, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(key))
	if err != nil {
		t.Fatal(err)
	}
	reps, err := cs.ReplicasOf(ctx, old)
	if err != nil || len(reps) == 0 {
		t.Fatalf("replicas of %s: %v, %v", old.Addr(), reps, err)
	}
	promoted = reps[0]
	waitReplicated(t, ctx, old, promoted, key)
	if err := redistest.DetachReplica(ctx, old, promoted); err != nil {
		t.Fatal(err)
	}
	during()
	lastOld := lastEntryID(t, ctx, old, key)
	if err := cs.Failover(ctx, promoted, "TAKEOVER"); err != nil {
		t.Fatalf("takeover by %s: %v", promoted.Addr(), err)
	}
	if err := redistest.AttachReplica(ctx, promoted); err != nil {
		t.Fatal(err)
	}
	if got := lastEntryID(t, ctx, promoted, key); got == lastOld {
		t.Fatalf("the promoted replica holds %s up to %s, as the old primary did: it did not lag", key, got)
	}
	return old, promoted
}

// TestClusterFailoverWriteOnlyPartition: transports that only write to a
// partition (an inbox of another node), whose shard fails over to a lagging
// replica (CLUSTER FAILOVER TAKEOVER, the old primary still running), after
// their client has learnt the new primary from other traffic: the next write,
// a probe or data, is refused with ErrPrimaryChanged and written nowhere,
// whether the transport knew the node of its last write (pinned: the old
// primary answers MOVED) or not (the node of the slot map lacks its last
// entry). Before the failover, pinned writes cost no check: the primary runs
// no XRANGE nor CLUSTER SLOTS for 20 batches.
func TestClusterFailoverWriteOnlyPartition(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	o := inboxOpts(1, 4)
	o.Prefix = "writeonly"
	p := 1 // inbox 0
	key := InboxKey(o.Prefix, 0)
	pinned, once := newTransport(t, cs.URL(), o), newTransport(t, cs.URL(), o)
	frame := func(s string) []bus.Frame { return []bus.Frame{{Partition: p, Data: []byte(s)}} }
	probe := func(s string) []bus.Frame {
		return []bus.Frame{{Partition: p, Data: []byte(s), Probe: true, NoWait: true}}
	}

	publish(t, once, frame("once-1"))
	publish(t, pinned, frame("pinned-1"))
	publish(t, pinned, frame("pinned-2")) // locates the node: one check
	primary, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(key))
	if err != nil {
		t.Fatal(err)
	}
	xrange, slots := commandCalls(t, ctx, primary, "xrange"), commandCalls(t, ctx, primary, "cluster|slots")
	for i := range 10 {
		publish(t, pinned, frame("pinned-more-"+strconv.Itoa(i)))
		publish(t, pinned, probe("pinned-probe-"+strconv.Itoa(i)))
	}
	if x, s := commandCalls(t, ctx, primary, "xrange")-xrange, commandCalls(t, ctx, primary, "cluster|slots")-slots; x != 0 || s != 0 {
		t.Errorf("20 pinned batches ran %d XRANGE and %d CLUSTER SLOTS on the primary, want 0", x, s)
	}

	old, promoted := lagFailover(t, ctx, cs, key, func() {
		publish(t, once, frame("once-lost"))
		publish(t, pinned, frame("pinned-lost"))
	})
	learnPrimary(t, ctx, streamsOf(t, pinned), key)
	learnPrimary(t, ctx, streamsOf(t, once), key)

	if err := pinned.Publish(ctx, probe("pinned-after")); !errors.Is(err, ErrPrimaryChanged) || !errors.Is(err, bus.ErrPrimaryChanged) {
		t.Errorf("probe of a transport that knew the old primary %s, after the failover: %v, want ErrPrimaryChanged", old.Addr(), err)
	}
	if err := once.Publish(ctx, frame("once-after")); !errors.Is(err, ErrPrimaryChanged) || !errors.Is(err, bus.ErrPrimaryChanged) {
		t.Errorf("data of a transport that wrote once, after the failover: %v, want ErrPrimaryChanged", err)
	}
	for _, f := range streamOn(t, ctx, promoted, key) {
		if strings.HasSuffix(f, "-after") || strings.HasSuffix(f, "-lost") {
			t.Errorf("the new primary holds %q", f)
		}
	}
	// What the bus does next: write the lost entries again, then the rest.
	publish(t, pinned, frame("pinned-lost"))
	publish(t, pinned, probe("pinned-after"))
	publish(t, once, frame("once-lost"))
	publish(t, once, frame("once-after"))
	var got []string
	for _, f := range streamOn(t, ctx, promoted, key) {
		if strings.HasSuffix(f, "-after") || strings.HasSuffix(f, "-lost") {
			got = append(got, f)
		}
	}
	if want := []string{"pinned-lost", "pinned-after", "once-lost", "once-after"}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("new primary holds %v, want %v", got, want)
	}
}

// gatedTransport is the streams transport with a gate on Publish: while
// closed, Publish calls wait (as a write still on its way would), and the
// ones under way have returned.
type gatedTransport struct {
	*streams
	gate sync.RWMutex
}

func (g *gatedTransport) Publish(ctx context.Context, frames []bus.Frame) error {
	if !g.gate.TryRLock() {
		g.gate.RLock()
		// The wait is not the broker's: the write gets its own time.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
	}
	defer g.gate.RUnlock()
	return g.streams.Publish(ctx, frames)
}

// TestClusterFailoverInboxRepublished: node a sends messages to node b's
// inbox, which a never reads, on a shard none of a's own partitions is on.
// The shard fails over to a replica that lacks a's last messages, while b
// has not read them yet, and a's client learns the new primary before a
// writes again. a's next write there (an announcement of its probe round) is
// refused, a publishes again what the new primary lacks, and b receives
// every message of a once, in order, with no gap reported.
func TestClusterFailoverInboxRepublished(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const shared, inboxes = 1, 8
	o := inboxOpts(shared, inboxes)
	o.Prefix = "inboxfail"
	shardOf := func(key string) string {
		srv, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(key))
		if err != nil {
			t.Fatal(err)
		}
		return srv.Addr()
	}
	inboxKey := func(id string) string { return InboxKey(o.Prefix, bus.InboxOf(id, shared, inboxes)-shared) }
	sharedShard := shardOf(StreamKey(o.Prefix, 0))
	var aID, bID string
	for i := 0; aID == "" || bID == ""; i++ {
		if i > 1000 {
			t.Fatal("no node ids with inboxes on the shards wanted")
		}
		id := "n" + strconv.Itoa(i)
		sh := shardOf(inboxKey(id))
		switch {
		case sh == sharedShard:
		case bID == "":
			bID = id
		case sh != shardOf(inboxKey(bID)):
			aID = id
		}
	}
	key := inboxKey(bID)

	open := func(id string, tr bus.Transport, cfg bus.Config) *bus.Reliable {
		cfg.NodeID, cfg.Logger = id, slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := bus.New(tr, &cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Close(ctx); err != nil {
				t.Errorf("Close %s: %v", id, err)
			}
		})
		return b
	}
	ta := &gatedTransport{streams: streamsOf(t, newTransport(t, cs.URL(), o))}
	a := open(aID, ta, bus.Config{Retain: bus.RetainConfig{Window: time.Minute}})
	a.Receive(func(bus.Message) {})
	var mu sync.Mutex
	var got []string
	tb := streamsOf(t, newTransport(t, cs.URL(), o))
	b := open(bID, tb, bus.Config{})
	// b reads its inbox from where it was when b started (MarkStart, which
	// New calls without waiting): before a writes there.
	testwait.For(t, 20*time.Second, "b's start recorded", func() bool {
		return len(tb.unstarted([]int{bus.InboxOf(bID, shared, inboxes)})) == 0
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	send := func(from, to int) {
		for i := from; i < to; i++ {
			if err := a.PublishTo(ctx, bID, []byte("m"+strconv.Itoa(i))); err != nil {
				t.Fatal(err)
			}
		}
		testwait.For(t, 20*time.Second, "a's messages acknowledged", func() bool { return a.Stats().Published == uint64(to) })
	}
	send(0, 5)
	lagFailover(t, ctx, cs, key, func() {
		send(5, 10) // only on the primary
		ta.gate.Lock()
	})
	learnPrimary(t, ctx, ta.streams, key)
	ta.gate.Unlock()

	b.Receive(func(m bus.Message) {
		if m.Origin == aID {
			mu.Lock()
			got = append(got, string(m.Payload))
			mu.Unlock()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); count() < 10; {
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("b received %v within 30 s, want 10 messages\nb %+v\na %+v", got, b.Stats(), a.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	send(10, 11) // after anything a announced before it
	testwait.For(t, 30*time.Second, "b receiving a's last message", func() bool { return count() >= 11 })
	mu.Lock()
	defer mu.Unlock()
	var want []string
	for i := range 11 {
		want = append(want, "m"+strconv.Itoa(i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("b received %v, want %v", got, want)
	}
	if s := b.Stats(); s.Gaps != 0 || s.GapMessages != 0 {
		t.Errorf("b reported %d gaps (%d messages), want none; stats %+v", s.Gaps, s.GapMessages, s)
	}
	if s := a.Stats(); s.Republished < 5 {
		t.Errorf("a republished %d messages, want >= 5 (those the new primary lacked)", s.Republished)
	}
}
