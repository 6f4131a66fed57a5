package bus_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// recorder records what a receiver got, in order.
type recorder struct {
	mu   sync.Mutex
	msgs []bus.Message
}

func (rc *recorder) add(m bus.Message) {
	rc.mu.Lock()
	rc.msgs = append(rc.msgs, m)
	rc.mu.Unlock()
}

func (rc *recorder) len() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.msgs)
}

// check returns what is wrong with the payloads "<origin>/<i>" received from
// origin: each of 1..n exactly once, in order ("" when nothing).
func (rc *recorder) check(origin string, n int) string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	next, dup, reordered := 1, 0, 0
	seen := make(map[int]bool)
	for _, m := range rc.msgs {
		i, err := strconv.Atoi(strings.TrimPrefix(string(m.Payload), origin+"/"))
		if m.Origin != origin || err != nil {
			return fmt.Sprintf("unexpected message %s %q", m.Origin, m.Payload)
		}
		switch {
		case seen[i]:
			dup++
		case i != next:
			reordered++
		}
		seen[i] = true
		next = i + 1
	}
	if len(seen) != n || dup > 0 || reordered > 0 {
		return fmt.Sprintf("%d of %d received, %d duplicated, %d out of order", len(seen), n, dup, reordered)
	}
	return ""
}

// TestRedisLostAcknowledgedWritesRepublished: Redis persists by RDB only.
// Node a publishes N messages, Redis saves, a publishes M more (acknowledged),
// and Redis is SIGKILLed and restarted on the same directory: the stream holds
// only the first N. One receiver was behind (its handler held at the first
// message, so it had not read the M), another had read everything (its reader
// position is past the restarted stream's end: it resets and reads the stream
// again). a publishes K more after the restart. Every receiver must get the
// N+M+K messages once each, in order, with no gap reported: a publishes the
// messages Redis acknowledged last again when its connection breaks. With
// retention disabled (the behaviour before it existed) the behind receiver
// reports the M as a gap, which the test checks too, so that it proves the loss
// is real.
func TestRedisLostAcknowledgedWritesRepublished(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		retain bus.RetainConfig
	}{{"retained", bus.RetainConfig{}}, {"retention disabled", bus.RetainConfig{Window: -1}}} {
		t.Run(tc.name, func(t *testing.T) {
			testLostAcknowledgedWrites(t, tc.retain)
		})
	}
}

func testLostAcknowledgedWrites(t *testing.T, retain bus.RetainConfig) {
	const n, m, k = 40, 25, 15
	srv := redistest.Standalone(t, redistest.WithoutPersistence())
	open := func(id string, cfg bus.Config) *bus.Reliable { return openRedisBus(t, srv.URL(), id, cfg) }
	a := open("a", bus.Config{Retain: retain})
	a.Receive(func(bus.Message) {})
	behind, current := open("behind", bus.Config{}), open("current", bus.Config{})
	var gotBehind, gotCurrent recorder
	first, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	behind.Receive(func(msg bus.Message) {
		gotBehind.add(msg)
		once.Do(func() {
			close(first)
			<-release
		})
	})
	current.Receive(gotCurrent.add)
	for _, b := range []*bus.Reliable{a, behind, current} {
		waitConnected(t, b)
	}
	ctx := t.Context()
	publish := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if err := a.Publish(ctx, "k", fmt.Appendf(nil, "a/%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		testwait.For(t, 30*time.Second, "a's outbox to empty", func() bool { return a.Stats().Published == uint64(to) })
	}
	publish(1, n)
	<-first
	if _, err := srv.Do(ctx, "SAVE"); err != nil {
		t.Fatal(err)
	}
	publish(n+1, n+m)
	testwait.For(t, 30*time.Second, "current to read everything", func() bool { return gotCurrent.len() == n+m })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := srv.Do(ctx, "XLEN", redisbus.StreamKey(redisbus.DefaultPrefix, a.PartitionOf("k"))); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("entries (messages and probes) of the partition after the restart: %v", got)
	}
	close(release)
	// a learns of the break from its own subscription and pings; publish only
	// once it has, like a node whose traffic goes on after the outage.
	testwait.For(t, 30*time.Second, "a to see the outage", func() bool { return a.Stats().Reconnects > 0 })
	publish(n+m+1, n+m+k)
	total := n + m + k
	if retain.Window < 0 {
		testwait.For(t, 30*time.Second, "behind to report the lost messages", func() bool { return behind.Stats().GapMessages >= m })
		if s := behind.Stats(); s.GapMessages != m {
			t.Fatalf("without retention: %d messages reported lost, want %d (the loss the test sets up)", s.GapMessages, m)
		}
		return
	}
	testwait.For(t, 30*time.Second, "behind to receive everything", func() bool { return gotBehind.len() >= total })
	testwait.For(t, 30*time.Second, "current to receive everything", func() bool { return gotCurrent.len() >= total })
	// A few more probe rounds: a tail gap would show now.
	probes := a.Stats().ProbesSent
	testwait.For(t, 30*time.Second, "two more probe rounds", func() bool { return a.Stats().ProbesSent >= probes+2 })
	for name, rc := range map[string]*recorder{"behind": &gotBehind, "current": &gotCurrent} {
		if bad := rc.check("a", total); bad != "" {
			t.Errorf("%s: %s", name, bad)
		}
	}
	for _, b := range []*bus.Reliable{behind, current} {
		if s := b.Stats(); s.Gaps != 0 || s.GapMessages != 0 {
			t.Errorf("%s reported %d gaps (%d messages)", b.NodeID(), s.Gaps, s.GapMessages)
		}
	}
	// The stream holds the first n twice (from the snapshot, and again):
	// reading the history yields each message once, in order.
	var hist recorder
	var nth string // the position of message n, the last the snapshot kept
	if err := current.ReadHistory(ctx, "k", "", func(e bus.HistoryEntry) bool {
		hist.add(bus.Message{Origin: e.Origin, Seq: e.Seq, Payload: e.Payload})
		if string(e.Payload) == fmt.Sprintf("a/%d", n) {
			nth = e.ID
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if bad := hist.check("a", total); bad != "" {
		t.Errorf("history: %s", bad)
	}
	// A reader that had everything through message n (a client's recovery
	// offset) and reads on from there: the copies of 1..n come first in what
	// it reads, their originals are behind its position: it gets n+1.. once.
	var from []string
	if err := current.ReadHistory(ctx, "k", nth, func(e bus.HistoryEntry) bool {
		from = append(from, string(e.Payload))
		return true
	}); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := n + 1; i <= total; i++ {
		want = append(want, fmt.Sprintf("a/%d", i))
	}
	if fmt.Sprint(from) != fmt.Sprint(want) {
		t.Errorf("history after message %d (%s): got %v, want %v", n, nth, from, want)
	}
	s := a.Stats()
	if s.Republished < m {
		t.Errorf("a republished %d messages, want at least the %d Redis lost", s.Republished, m)
	}
	t.Logf("a: republished %d in %d episodes; behind: %d duplicates skipped; current: %d duplicates skipped",
		s.Republished, s.Republishes, behind.Stats().Duplicates, current.Stats().Duplicates)
}
