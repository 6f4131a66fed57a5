package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/bus"
)

// testBus is a minimal bus.Bus over a bus.Transport, without outbox or replay, used
// until the reliable core is available.
type testBus struct {
	id     string
	tr     bus.Transport
	seq    atomic.Uint64
	cancel context.CancelFunc
	ctx    context.Context
	wg     sync.WaitGroup
	once   sync.Once
	mu     sync.Mutex
	state  bus.State
	change chan struct{}
}

func newTestBus(id string, tr bus.Transport) *testBus {
	ctx, cancel := context.WithCancel(context.Background())
	return &testBus{id: id, tr: tr, ctx: ctx, cancel: cancel, state: bus.Connected, change: make(chan struct{})}
}

func (b *testBus) NodeID() string { return b.id }

func (b *testBus) envelope(seq uint64, payload []byte) []byte {
	out := make([]byte, 0, 1+len(b.id)+8+len(payload))
	out = append(out, byte(len(b.id)))
	out = append(out, b.id...)
	out = binary.BigEndian.AppendUint64(out, seq)
	return append(out, payload...)
}

func (b *testBus) Publish(ctx context.Context, key string, payload []byte) error {
	h := fnv.New32a()
	h.Write([]byte(key))
	p := int(h.Sum32() % uint32(b.tr.Partitions()))
	return b.tr.Publish(ctx, []bus.Frame{{Partition: p, Data: b.envelope(b.seq.Add(1), payload)}})
}

func (b *testBus) Send(ctx context.Context, to string, payload []byte) error {
	if err := b.tr.Send(ctx, to, b.envelope(0, payload)); err != nil {
		if errors.Is(err, bus.ErrHubDown) {
			return errors.Join(bus.ErrNotConnected, err)
		}
		return err
	}
	return nil
}

func (b *testBus) setState(s bus.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != s {
		b.state = s
		close(b.change)
		b.change = make(chan struct{})
	}
}

func (b *testBus) Receive(h bus.Handler) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for b.ctx.Err() == nil {
			err := b.tr.Subscribe(b.ctx, b.id, func(f bus.Frame) {
				b.setState(bus.Connected)
				d := f.Data
				if len(d) < 1 || len(d) < 1+int(d[0])+8 {
					return
				}
				origin := string(d[1 : 1+d[0]])
				if origin == b.id {
					return
				}
				seq := binary.BigEndian.Uint64(d[1+d[0]:])
				h(bus.Message{Origin: origin, Seq: seq, Partition: f.Partition, Payload: d[1+int(d[0])+8:]})
			})
			if err != nil && b.ctx.Err() == nil {
				b.setState(bus.Reconnecting)
			}
			t := time.NewTimer(5 * time.Millisecond)
			select {
			case <-b.ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}()
}

func (b *testBus) Status() bus.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bus.Status{State: b.state, StateName: b.state.String()}
}

func (b *testBus) StateChanged() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.change
}

func (b *testBus) Close(context.Context) error {
	b.once.Do(func() {
		b.cancel()
		b.wg.Wait()
		b.setState(bus.Closed)
	})
	return nil
}
