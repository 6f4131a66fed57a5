package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
)

// warmUp makes sure, before a test starts, that every node of a cluster receives
// what every other node publishes on every partition. On pub/sub a node hears
// nothing published before its broker has its subscriptions, which a Cluster
// does not wait for (it knows its peers from the direct plane): the first
// broadcasts of a test could be lost, as they would in production.
type warmUp struct {
	mu    sync.Mutex
	buses map[string]*warmBus // by node id
}

func newWarmUp() *warmUp { return &warmUp{buses: make(map[string]*warmBus)} }

// wrap returns newBus with every bus watched.
func (w *warmUp) wrap(newBus func(id string) bus.Bus) func(id string) bus.Bus {
	return func(id string) bus.Bus {
		b := &warmBus{Bus: newBus(id), seen: make(map[warmKey]bool)}
		w.mu.Lock()
		w.buses[id] = b
		w.mu.Unlock()
		return b
	}
}

// warmBus records which origins it received a Publish from, per partition.
type warmBus struct {
	bus.Bus
	mu   sync.Mutex
	seen map[warmKey]bool
}

type warmKey struct {
	origin    string
	partition int
}

func (b *warmBus) Receive(h bus.Handler) {
	b.Bus.Receive(func(m bus.Message) {
		if m.Seq != 0 {
			b.mu.Lock()
			b.seen[warmKey{m.Origin, m.Partition}] = true
			b.mu.Unlock()
		}
		h(m)
	})
}

func (b *warmBus) heard(origin string, partition int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.seen[warmKey{origin, partition}]
}

// partitioned is what warmUp needs of a bus (bus.Reliable has it).
type partitioned interface {
	Partitions() int
	PartitionOf(key string) int
}

// wait publishes, from every node of cs, a broadcast to a namespace no node
// serves on every partition, every 100 ms, until every node has received one
// from every other on every partition.
func (w *warmUp) wait(t testing.TB, cs []*Cluster) {
	t.Helper()
	w.mu.Lock()
	buses := make([]*warmBus, len(cs))
	for i, c := range cs {
		buses[i] = w.buses[c.NodeID()]
	}
	w.mu.Unlock()
	pb, ok := buses[0].Bus.(partitioned)
	if !ok {
		t.Fatalf("warm up: bus %T has no partitions", buses[0].Bus)
	}
	// One namespace per partition.
	nsps := make([]string, pb.Partitions())
	found := 0
	for i := 0; found < len(nsps); i++ {
		nsp := fmt.Sprintf("/durasock-warm-up-%d", i)
		if p := pb.PartitionOf(partitionKey(nsp)); nsps[p] == "" {
			nsps[p] = nsp
			found++
		}
	}
	frames := make([][]byte, len(nsps))
	for p, nsp := range nsps {
		pkt, err := parser.EventPacket(nsp, "warm-up")
		if err != nil {
			t.Fatal(err)
		}
		if frames[p], err = encodeBroadcast(nsp, pkt, adapter.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	last := time.Time{}
	testwait.For(t, waitTimeout, "every node to receive a Publish of every other on every partition", func() bool {
		ready := true
		for _, b := range buses {
			for _, o := range buses {
				for p := range nsps {
					if o != b && !b.heard(o.NodeID(), p) {
						ready = false
					}
				}
			}
		}
		if ready || time.Since(last) < 100*time.Millisecond {
			return ready
		}
		last = time.Now()
		for _, b := range buses {
			for p, nsp := range nsps {
				if err := b.Publish(ctx, partitionKey(nsp), frames[p]); err != nil {
					t.Fatalf("warm up: Publish: %v", err)
				}
			}
		}
		return false
	})
}
