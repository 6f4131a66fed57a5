package nemesis

import (
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
)

func scheduleOf(seed int64) [][]Step {
	r := &Run{cfg: Config{Nodes: 3}, rng: rand.New(rand.NewPCG(uint64(seed), 0x6e656d65))}
	return r.Schedule(AllOps, 50, time.Second, 5*time.Second)
}

func TestScheduleIsReproducible(t *testing.T) {
	a, b := scheduleOf(7), scheduleOf(7)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 7 gave two schedules:\n%v\n%v", a, b)
	}
	if reflect.DeepEqual(a, scheduleOf(8)) {
		t.Fatal("seeds 7 and 8 gave the same schedule")
	}
}

func TestScheduleCombinesWithoutConflicts(t *testing.T) {
	pairs := 0
	ops := map[string]bool{}
	for _, round := range scheduleOf(3) {
		if len(round) == 2 {
			pairs++
			if conflicts(round[:1], round[1]) {
				t.Errorf("conflicting steps in one round: %v", round)
			}
		}
		for _, s := range round {
			ops[s.Op] = true
			if s.Hold < time.Second || s.Hold > 5*time.Second || s.Slot < 0 || s.Slot > 2 {
				t.Errorf("step out of bounds: %v", s)
			}
		}
	}
	if pairs == 0 {
		t.Error("no round combines two faults")
	}
	for _, op := range AllOps {
		if !ops[op] {
			t.Errorf("50 rounds never drew %s", op)
		}
	}
}

func TestScheduleOfOpsThatNeverCombine(t *testing.T) {
	r := &Run{cfg: Config{Nodes: 3}, rng: rand.New(rand.NewPCG(1, 0x6e656d65))}
	for _, round := range r.Schedule([]string{OpRedisKill, OpRedisWipe}, 30, time.Second, 2*time.Second) {
		if len(round) != 1 {
			t.Fatalf("two Redis operations in one round: %v", round)
		}
	}
}

func TestScheduleDrawsEveryOperationBeforeRepeating(t *testing.T) {
	r := &Run{cfg: Config{Nodes: 3}, rng: rand.New(rand.NewPCG(5, 0x6e656d65))}
	seen := map[string]int{}
	steps := 0
	for _, round := range r.Schedule(SafeOps, 6, time.Second, 2*time.Second) {
		for _, s := range round {
			seen[s.Op]++
			steps++
		}
	}
	if steps < len(SafeOps) {
		for op, n := range seen {
			if n > 1 {
				t.Errorf("%s drawn %d times in %d steps, before every operation came once", op, n, steps)
			}
		}
	}
}

func TestStreamPartitionIsTheBuses(t *testing.T) {
	hub := bus.NewMemoryHubConfig(bus.MemoryHubConfig{Partitions: redisbus.DefaultStreamPartitions})
	b, err := bus.New(hub.Transport(), &bus.Config{NodeID: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	for _, ns := range []string{"/", "/a", "/b", "/c", "/d", "/chat"} {
		if got, want := streamPartition(ns), b.PartitionOf(ns); got != want {
			t.Errorf("streamPartition(%q) = %d, the bus says %d", ns, got, want)
		}
	}
}

// TestInboxPartitionIsTheBuses proves that the partition a fault on a node's
// inbox targets is the one that node's bus reads, and that its stream is the
// inbox's.
func TestInboxPartitionIsTheBuses(t *testing.T) {
	hub := bus.NewMemoryHubConfig(bus.MemoryHubConfig{Partitions: redisbus.DefaultStreamPartitions, Inboxes: redisbus.DefaultInboxes})
	b, err := bus.New(hub.Transport(), &bus.Config{NodeID: "n0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	for _, id := range []string{"n0", "n1", "n2", "n0.1", "n2.3"} {
		p := inboxPartition(id)
		if want := b.InboxOf(id); p != want {
			t.Errorf("inboxPartition(%q) = %d, the bus says %d", id, p, want)
		}
		if got, want := partitionKey(p), redisbus.InboxKey(streamPrefix, p-redisbus.DefaultStreamPartitions); got != want {
			t.Errorf("partitionKey(%d) = %q, want %q", p, got, want)
		}
	}
	if got, want := partitionKey(3), redisbus.StreamKey(streamPrefix, 3); got != want {
		t.Errorf("partitionKey(3) = %q, want %q", got, want)
	}
}
