package bus_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

const redisShared, redisInboxes = 2, 8

// openRedisInboxBus opens a bus with node id id over a streams transport of
// redisShared partitions and redisInboxes inboxes on the Redis at url.
func openRedisInboxBus(t *testing.T, url, id string, cfg bus.Config) *bus.Reliable {
	t.Helper()
	return openRedisBusWith(t, &redisbus.Options{URL: url, Partitions: redisShared, Inboxes: redisInboxes}, id, cfg)
}

// redisInboxIDs returns n node ids whose inboxes are distinct.
func redisInboxIDs(n int) []string {
	used := map[int]bool{}
	var ids []string
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("n%d", i)
		if p := bus.InboxOf(id, redisShared, redisInboxes); !used[p] {
			used[p] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// inboxRecorder is a Handler keeping the payloads per origin, in order.
type inboxRecorder struct {
	mu   sync.Mutex
	got  map[string][]string
	part map[string]map[int]bool
}

func newInboxRecorder() *inboxRecorder {
	return &inboxRecorder{got: map[string][]string{}, part: map[string]map[int]bool{}}
}

func (r *inboxRecorder) handle(m bus.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[m.Origin] = append(r.got[m.Origin], string(m.Payload))
	if r.part[m.Origin] == nil {
		r.part[m.Origin] = map[int]bool{}
	}
	r.part[m.Origin][m.Partition] = true
}

func (r *inboxRecorder) count(origin string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got[origin])
}

// check fails unless r holds exactly "<origin>/1".."<origin>/n" in order for
// each origin of want, and nothing of other origins.
func (r *inboxRecorder) check(t *testing.T, who string, want map[string]int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for origin, got := range r.got {
		if _, ok := want[origin]; !ok {
			t.Fatalf("%s received %d messages of %s, want none", who, len(got), origin)
		}
	}
	for origin, n := range want {
		got := r.got[origin]
		if len(got) != n {
			t.Fatalf("%s received %d messages of %s, want %d", who, len(got), origin, n)
		}
		for i, p := range got {
			if p != fmt.Sprintf("%s/%d", origin, i+1) {
				t.Fatalf("%s: message %d of %s is %q", who, i+1, origin, p)
			}
		}
	}
}

func publishToRange(t *testing.T, b *bus.Reliable, to string, from, n int) {
	t.Helper()
	for i := from; i <= n; i++ {
		if err := b.PublishTo(t.Context(), to, fmt.Appendf(nil, "%s/%d", b.NodeID(), i)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRedisInboxRouting: on real Redis streams with inboxes, PublishTo
// reaches only its target, once and in order, Publish reaches every other
// node; a Redis restart without persistence loses what the targets had not
// all read, and the senders publish it again from their retained window: no
// message is lost or applied twice, no gap is reported.
func TestRedisInboxRouting(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithoutPersistence())
	ids := redisInboxIDs(3)
	var buses []*bus.Reliable
	var recs []*inboxRecorder
	for _, id := range ids {
		b := openRedisInboxBus(t, srv.URL(), id, bus.Config{})
		rec := newInboxRecorder()
		b.Receive(rec.handle)
		buses, recs = append(buses, b), append(recs, rec)
	}
	for _, b := range buses {
		waitConnected(t, b)
		if !b.Routing() || b.Partitions() != redisShared+redisInboxes {
			t.Fatalf("%s: routing %v, partitions %d", b.NodeID(), b.Routing(), b.Partitions())
		}
	}
	a, b, c := buses[0], buses[1], buses[2]
	const n = 50
	publishToRange(t, a, ids[1], 1, n)
	publishToRange(t, c, ids[0], 1, n)
	for i := 1; i <= n; i++ {
		if err := b.Publish(t.Context(), "k", fmt.Appendf(nil, "%s/%d", ids[1], i)); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, "first messages", func() bool {
		return recs[1].count(ids[0]) == n && recs[0].count(ids[2]) == n && recs[0].count(ids[1]) == n && recs[2].count(ids[1]) == n
	})
	poll(t, "outboxes empty", func() bool {
		return a.Stats().Published == n && b.Stats().Published == n && c.Stats().Published == n
	})
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	publishToRange(t, a, ids[1], n+1, 2*n)
	publishToRange(t, c, ids[0], n+1, 2*n)
	poll(t, "messages after the restart", func() bool {
		return recs[1].count(ids[0]) >= 2*n && recs[0].count(ids[2]) >= 2*n
	})
	time.Sleep(3 * time.Second) // probe rounds: no late gap or copy
	recs[0].check(t, ids[0], map[string]int{ids[2]: 2 * n, ids[1]: n})
	recs[1].check(t, ids[1], map[string]int{ids[0]: 2 * n})
	recs[2].check(t, ids[2], map[string]int{ids[1]: n})
	// The restart lost everything: each sender published its n again, and
	// each receiver skipped the copies of what it had.
	for i, bb := range buses {
		if s := bb.Stats(); s.Gaps != 0 || s.NodesGoneSilent != 0 || s.Republished != n || s.Duplicates != uint64([]int{2 * n, n, n}[i]) {
			t.Fatalf("%s stats %+v", bb.NodeID(), s)
		}
	}
	if p := recs[1].part[ids[0]]; len(p) != 1 || !p[b.InboxOf(ids[1])] {
		t.Fatalf("b got a's messages on partitions %v, want only its inbox %d", p, b.InboxOf(ids[1]))
	}
}

// TestRedisInboxLostTailReported: a real Redis without persistence is
// restarted, with retention off, while the target has not read a node's last
// nine messages to its inbox; the sender publishes nothing more. Its inbox
// announcement after the reconnect makes the target report exactly those
// nine as a tail gap of its inbox.
func TestRedisInboxLostTailReported(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithoutPersistence())
	ids := redisInboxIDs(2)
	var mu sync.Mutex
	var gaps []bus.Gap
	a := openRedisInboxBus(t, srv.URL(), ids[0], bus.Config{Retain: bus.RetainConfig{Window: -1}})
	a.Receive(func(bus.Message) {})
	r := openRedisInboxBus(t, srv.URL(), ids[1], bus.Config{OnGap: func(g bus.Gap) {
		mu.Lock()
		gaps = append(gaps, g)
		mu.Unlock()
	}})
	first, block := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.Receive(func(bus.Message) {
		once.Do(func() {
			close(first)
			<-block
		})
	})
	waitConnected(t, a)
	waitConnected(t, r)
	publishToRange(t, a, ids[1], 1, 1)
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("r did not receive the first message")
	}
	publishToRange(t, a, ids[1], 2, 10)
	poll(t, "a's outbox to empty", func() bool { return a.Stats().Published == 10 })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(block)
	poll(t, "the tail gap", func() bool { return r.Stats().GapMessages >= 9 })
	time.Sleep(3 * time.Second) // more probe rounds: nothing is reported twice
	s := r.Stats()
	if s.Gaps != 1 || s.TailGaps != 1 || s.GapMessages != 9 || s.Received != 1 {
		t.Fatalf("receiver stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gaps) != 1 || gaps[0] != (bus.Gap{Origin: ids[0], Partition: r.InboxOf(ids[1]), After: 1, Next: 11, Missing: 9, Tail: true}) {
		t.Fatalf("OnGap got %+v", gaps)
	}
}

// TestRedisInboxFirstMessagesLostReported: a real Redis without persistence
// is restarted, with retention off, before the target read any of the ten
// messages a node ever sent to its inbox (it was busy with another node's
// message). The sender's announcement after the reconnect carries the time
// of its first message there; the target, reading its inbox since before it
// (MarkStart), takes 0 as the baseline and reports exactly those ten as a
// tail gap, instead of starting the stream at 10.
func TestRedisInboxFirstMessagesLostReported(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithoutPersistence())
	ids := redisInboxIDs(3)
	var mu sync.Mutex
	var gaps []bus.Gap
	r := openRedisInboxBus(t, srv.URL(), ids[1], bus.Config{OnGap: func(g bus.Gap) {
		mu.Lock()
		gaps = append(gaps, g)
		mu.Unlock()
	}})
	first, block := make(chan struct{}), make(chan struct{})
	var once sync.Once
	r.Receive(func(bus.Message) {
		once.Do(func() {
			close(first)
			<-block
		})
	})
	a := openRedisInboxBus(t, srv.URL(), ids[0], bus.Config{Retain: bus.RetainConfig{Window: -1}})
	a.Receive(func(bus.Message) {})
	c := openRedisInboxBus(t, srv.URL(), ids[2], bus.Config{Retain: bus.RetainConfig{Window: -1}})
	waitConnected(t, r)
	waitConnected(t, a)
	waitConnected(t, c)
	publishToRange(t, c, ids[1], 1, 1)
	select {
	case <-first:
	case <-time.After(30 * time.Second):
		t.Fatal("r did not receive c's message")
	}
	// The baseline rule asks for reading since a second (the clock margin)
	// before the sender's first message; r reads since its MarkStart, before
	// c's message.
	time.Sleep(1500 * time.Millisecond)
	publishToRange(t, a, ids[1], 1, 10)
	poll(t, "a's outbox to empty", func() bool { return a.Stats().Published == 10 })
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	close(block)
	poll(t, "the gap", func() bool { return r.Stats().GapMessages >= 10 })
	time.Sleep(3 * time.Second) // more probe rounds: nothing is reported twice
	s := r.Stats()
	if s.Gaps != 1 || s.TailGaps != 1 || s.GapMessages != 10 || s.Received != 1 {
		t.Fatalf("receiver stats %+v", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(gaps) != 1 || gaps[0] != (bus.Gap{Origin: ids[0], Partition: r.InboxOf(ids[1]), After: 0, Next: 11, Missing: 10, Tail: true}) {
		t.Fatalf("OnGap got %+v", gaps)
	}
}
