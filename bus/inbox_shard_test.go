package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// shardTransport is a MemoryHub transport that plays one Redis Cluster
// shard per partition: its subscription fails when the shard of a partition
// it reads fails over (the blocking XREAD on that shard's connection
// errors), and, when guarded, its next write to a partition whose shard
// failed over is refused with ErrPrimaryChanged without being written (the
// connection pinned to the old primary answers MOVED).
type shardTransport struct {
	*memoryTransport
	guarded bool
	mu      sync.Mutex
	cancel  context.CancelFunc
	moved   map[int]bool
	refused int
}

func newShardTransport(hub *MemoryHub, guarded bool) *shardTransport {
	return &shardTransport{memoryTransport: hub.Transport().(*memoryTransport), guarded: guarded, moved: make(map[int]bool)}
}

func (s *shardTransport) Subscribe(ctx context.Context, id string, deliver func(Frame)) error {
	sctx, cancel := context.WithCancel(ctx)
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	err := s.memoryTransport.Subscribe(sctx, id, deliver)
	if ctx.Err() == nil && sctx.Err() != nil {
		return errors.New("shard failed over")
	}
	return err
}

func (s *shardTransport) Publish(ctx context.Context, frames []Frame) error {
	s.mu.Lock()
	for _, f := range frames {
		if s.moved[f.Partition] {
			clear(s.moved)
			s.refused++
			s.mu.Unlock()
			return fmt.Errorf("%w: the slot of partition %d moved", ErrPrimaryChanged, f.Partition)
		}
	}
	s.mu.Unlock()
	return s.memoryTransport.Publish(ctx, frames)
}

// failoverShard loses the entries of partition p only (a replica promoted
// without them), breaks the subscriptions of the transports that read p and
// makes the guarded ones refuse their next write to p.
func failoverShard(hub *MemoryHub, p int, ts ...*shardTransport) {
	hub.mu.Lock()
	l := &hub.logs[p]
	l.first = l.end()
	l.entries = nil
	var hit []*shardTransport
	for _, t := range ts {
		if slices.Contains(t.readsLocked(), p) {
			hit = append(hit, t)
		}
	}
	hub.broadcastLocked()
	hub.mu.Unlock()
	for _, t := range ts {
		t.mu.Lock()
		t.moved[p] = t.guarded
		if slices.Contains(hit, t) && t.cancel != nil {
			t.cancel()
		}
		t.mu.Unlock()
	}
}

// TestInboxShardFailoverWriteOnly: the shard of another node's inbox fails
// over and loses the last 9 of 10 messages a node wrote there; the writer
// reads nothing on that shard and writes nothing more there, so none of its
// connections breaks. Its announcement there every round while it retains
// messages of that inbox meets the transport's guard of the primary: the
// 9 messages go out again and the target gets all 10, once, in order, with
// no gap. Without such a guard (the write lands on the new primary) the
// same announcement makes the target report the 9 as a tail gap. Control:
// the same on a shared partition, whose failover breaks the writer's own
// subscription.
func TestInboxShardFailoverWriteOnly(t *testing.T) {
	for _, guarded := range []bool{true, false} {
		for _, inbox := range []bool{true, false} {
			t.Run(fmt.Sprintf("guarded=%v/inbox=%v", guarded, inbox), func(t *testing.T) {
				testInboxShardFailover(t, guarded, inbox)
			})
		}
	}
}

func testInboxShardFailover(t *testing.T, guarded, inbox bool) {
	synctestRun(t, func(t *testing.T) {
		const shared, inboxes = 2, 8
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		ids := inboxIDs(t, shared, inboxes, 2)
		var gaps gapLog
		ta, tr := newShardTransport(hub, guarded), newShardTransport(hub, guarded)
		a := newBusOn(t, ta, Config{NodeID: ids[0]}) // retention on (default)
		a.Receive(func(Message) {})
		r := newBusOn(t, tr, Config{NodeID: ids[1], OnGap: gaps.add})
		sr := newSink()
		block, first := make(chan struct{}), make(chan struct{})
		r.Receive(func(m Message) {
			if string(m.Payload) == string(payload(ids[0], 1)) {
				close(first)
				<-block // r is behind while the shard fails over
			}
			sr.handle(m)
		})
		time.Sleep(2 * time.Second)
		synctestWait()
		sendOn(t, a, inbox, ids[1], ids[0], 1, 1)
		<-first
		sendOn(t, a, inbox, ids[1], ids[0], 2, 10)
		time.Sleep(2 * time.Second)
		synctestWait()
		if st := a.Status(); st.OutboxLen != 0 {
			t.Fatalf("a's outbox holds %d", st.OutboxLen)
		}
		p := a.PartitionOf("k")
		if inbox {
			p = a.InboxOf(ids[1])
		}
		failoverShard(hub, p, ta, tr)
		close(block)
		time.Sleep(time.Minute)
		synctestWait()
		var missing uint64
		for _, g := range gaps.all() {
			missing += g.Missing
		}
		msgs := sr.all()
		if guarded || !inbox {
			// The 10 retained messages went out again (the shard holds none of
			// them): all 10 arrive, once, and nothing is missing.
			checkStreams(t, msgs, map[string]int{ids[0]: 10})
			if missing != 0 || a.Stats().Republished != 10 {
				t.Fatalf("reported %d missing (gaps %+v), sender %+v", missing, gaps.all(), a.Stats())
			}
			return
		}
		if len(msgs) != 1 || missing != 9 {
			t.Fatalf("delivered %d of 10, reported %d missing (gaps %+v), want 1 and 9", len(msgs), missing, gaps.all())
		}
	})
}

// sendOn publishes payload(origin, from..to) from b: to node's inbox when
// inbox, else on the shared partition of key "k".
func sendOn(t *testing.T, b *Reliable, inbox bool, node, origin string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		var err error
		if inbox {
			err = b.PublishTo(t.Context(), node, payload(origin, i))
		} else {
			err = b.Publish(t.Context(), "k", payload(origin, i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
