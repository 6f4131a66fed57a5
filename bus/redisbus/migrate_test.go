package redisbus

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// otherPrimary returns a primary of cs that does not serve slot.
func otherPrimary(t *testing.T, ctx context.Context, cs *redistest.ClusterSet, slot int) *redistest.Server {
	t.Helper()
	owner, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	prims, err := cs.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range prims {
		if p != owner {
			return p
		}
	}
	t.Fatalf("no primary besides %s", owner.Addr())
	return nil
}

// streamOn returns the frames of key on s, read after ASKING (s may be
// importing the key's slot).
func streamOn(t *testing.T, ctx context.Context, s *redistest.Server, key string) []string {
	t.Helper()
	v, err := s.DoAll(ctx, []string{"ASKING"}, []string{"XRANGE", key, "-", "+"})
	if err != nil {
		t.Fatalf("XRANGE %s on %s: %v", key, s.Addr(), err)
	}
	var out []string
	for _, e := range v[1].([]any) {
		fv := e.([]any)[1].([]any)
		out = append(out, fv[1].(string))
	}
	return out
}

// checkFrameOrder checks that frames holds "m<i>" for every i of want, once
// each, in the order of want.
func checkFrameOrder(t *testing.T, what string, frames []string, want []int) {
	t.Helper()
	var got []int
	for _, f := range frames {
		if i, ok := frameNumber(bus.Frame{Data: []byte(f)}); ok {
			got = append(got, i)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d frames %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s: frames %v, want %v", what, got, want)
		}
	}
}

// partitionOf returns the numbers i in [from, to) with i%parts == p.
func partitionOf(from, to, parts, p int) []int {
	var out []int
	for i := from; i < to; i++ {
		if i%parts == p {
			out = append(out, i)
		}
	}
	return out
}

// TestClusterHalfDoneMigrationPublishes: the slot of partition 0 is being
// migrated and its keys already moved, but the migration never finishes
// (CLUSTER SETSLOT NODE never sent, as when redis-cli --cluster reshard is
// interrupted). The source answers ASK for the stream key; Publish follows it
// (ASKING, XADD on the target, in order), with and without WaitReplicas,
// instead of refusing every batch until the migration is fixed. Readers
// (XREAD) and history reads (XRANGE) keep working: rueidis follows ASK for
// them.
func TestClusterHalfDoneMigrationPublishes(t *testing.T) {
	t.Parallel()
	const parts = 4
	cs, ctx, opts := migrationCluster(t, "askmig", parts, 2*time.Minute)
	tr := newTransport(t, cs.URL(), opts)
	trw := newTransport(t, cs.URL(), waitingForOne(opts))
	sub := startSubscribe(t, newTransport(t, cs.URL(), opts), "reader")
	syncSubscribed(t, tr, "reader", sub)
	publish(t, tr, numbered(0, 40, parts))
	sub.waitFor(t, "frames before the migration", countNumbered(0, 40))

	key := StreamKey(opts.Prefix, 0)
	slot := redistest.KeySlot(key)
	to := otherPrimary(t, ctx, cs, slot)
	m, err := cs.StartMigration(ctx, slot, to)
	if err != nil {
		t.Fatal(err)
	}
	// Before the key moves, the source still takes the writes.
	publish(t, tr, numbered(40, 80, parts))
	for {
		n, err := m.MoveKeys(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if _, err := m.From().Do(ctx, "XLEN", key); err == nil || !strings.HasPrefix(err.Error(), "ASK ") {
		t.Fatalf("XLEN on the source after the keys moved: %v, want ASK", err)
	}
	// Several batches, each with ten XADDs of partition 0 that all get ASK.
	for from := 80; from < 200; from += 40 {
		if err := tr.Publish(ctx, numbered(from, from+40, parts)); err != nil {
			t.Fatalf("Publish during the migration: %v", err)
		}
	}
	if err := trw.Publish(ctx, numbered(200, 240, parts)); err != nil {
		t.Fatalf("Publish with WaitReplicas 1 during the migration: %v", err)
	}
	if err := trw.(bus.ReplicaWaiter).AwaitReplicas(ctx, []int{0, 1, 2, 3}); err != nil {
		t.Fatalf("AwaitReplicas during the migration: %v", err)
	}
	checkFrameOrder(t, "stream on the target", streamOn(t, ctx, m.To(), key), partitionOf(0, 240, parts, 0))

	sub.waitFor(t, "every frame through XREAD", countNumbered(0, 240))
	checkNumbered(t, sub.snapshot(), 0, 240, parts)
	var hist []string
	err = tr.(bus.HistoryReader).ReadHistory(ctx, 0, "", func(f bus.Frame) bool {
		hist = append(hist, string(f.Data))
		return true
	})
	if err != nil {
		t.Fatalf("ReadHistory during the migration: %v", err)
	}
	checkFrameOrder(t, "history", hist, partitionOf(0, 240, parts, 0))
}

// TestClusterReshardingRepins: the slot of partition 0 moves, with its keys,
// to another primary (a resharding: its primary did not fail). The next
// Publish meets MOVED from a node that is still a primary: nothing it
// acknowledged can be lost, so the batch goes to the new owner at once and
// Publish returns no ErrPrimaryChanged (which would make the bus republish its
// whole retained window), with WaitReplicas 0 and 1.
func TestClusterReshardingRepins(t *testing.T) {
	t.Parallel()
	const parts = 4
	cs, ctx, opts := migrationCluster(t, "reshard", parts, 2*time.Minute)
	tr := newTransport(t, cs.URL(), opts)
	trw := newTransport(t, cs.URL(), waitingForOne(opts))
	publish(t, tr, numbered(0, 40, parts))
	publish(t, trw, numbered(40, 80, parts))
	key := StreamKey(opts.Prefix, 0)
	slot := redistest.KeySlot(key)
	to := otherPrimary(t, ctx, cs, slot)
	if err := cs.MigrateSlot(ctx, slot, to); err != nil {
		t.Fatal(err)
	}
	if err := tr.Publish(ctx, numbered(80, 120, parts)); err != nil {
		t.Fatalf("Publish after the resharding: %v", err)
	}
	if err := trw.Publish(ctx, numbered(120, 160, parts)); err != nil {
		t.Fatalf("Publish with WaitReplicas 1 after the resharding: %v", err)
	}
	if err := trw.(bus.ReplicaWaiter).AwaitReplicas(ctx, []int{0, 1, 2, 3}); err != nil {
		t.Fatalf("AwaitReplicas after the resharding: %v", err)
	}
	checkFrameOrder(t, "stream on the new owner", streamOn(t, ctx, to, key), partitionOf(0, 160, parts, 0))
}

// counterValue returns the value of counter name in reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var v float64
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
			return v
		}
	}
	return 0
}

// TestClusterSlotMigrationUnderLoad: a node publishes continuously, a few
// thousand events a second, all on partition 0, while that partition's slot
// migrates to another primary the way redis-cli --cluster reshard does it
// (IMPORTING/MIGRATING, MIGRATE of the keys a few at a time, then SETSLOT
// NODE on every primary). The receiver gets every event once and in order;
// publishing is never held by the migration (with the keys moved and the
// migration not finished, what was accepted gets published, via ASK); and the
// bus writes nothing again (the redirections are followed by the transport,
// not reported as a primary change).
func TestClusterSlotMigrationUnderLoad(t *testing.T) {
	t.Parallel()
	cs, ctx, o := migrationCluster(t, "loadmig", 1, 3*time.Minute)
	reg := prometheus.NewRegistry()
	o.Bus.Registerer = reg
	a := openBus(t, cs.URL(), o, "a")
	o.Bus.Registerer = nil
	b := openBus(t, cs.URL(), o, "b")
	in := newInbox()
	b.Receive(in.handle)
	a.Receive(func(bus.Message) {})
	busWarmUp(t, a, in)

	key := StreamKey(o.Prefix, 0)
	slot := redistest.KeySlot(key)
	from, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	// Other keys in the slot, so the migration takes several MIGRATE steps
	// with the stream key among them.
	for i := range 20 {
		if _, err := from.Do(ctx, "SET", "{"+o.Prefix+":0}:fill:"+strconv.Itoa(i), "x"); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	published := make(chan int, 1)
	var pubErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		i := 0
		defer func() { published <- i }()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for range 30 { // ~3000 events/s
				if err := a.Publish(context.Background(), "k", []byte("e"+strconv.Itoa(i))); err != nil {
					pubErr = err
					return
				}
				i++
			}
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	flowing := func(what string) {
		t.Helper()
		// Events accepted from now on get published, and the receiver gets
		// them: the migration holds nothing.
		acc := a.Stats().Accepted + 100
		testwait.For(t, time.Minute, what, func() bool { return a.Stats().Published >= acc })
		if !in.await(time.Minute, countEvents(int(acc)-1)) {
			t.Fatalf("%s: received %d events, want %d (a %+v)", what, len(in.snapshot()), acc-1, a.Status())
		}
	}
	flowing("events before the migration")

	to := otherPrimary(t, ctx, cs, slot)
	m, err := cs.StartMigration(ctx, slot, to)
	if err != nil {
		t.Fatal(err)
	}
	steps := 0
	for {
		n, err := m.MoveKeys(ctx, 4)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		steps++
		flowing("events during the migration, step " + strconv.Itoa(steps))
	}
	if _, err := m.From().Do(ctx, "XLEN", key); err == nil || !strings.HasPrefix(err.Error(), "ASK ") {
		t.Fatalf("XLEN on the source with the keys moved: %v, want ASK", err)
	}
	flowing("events with the keys moved, the migration not finished")
	asked := counterValue(t, reg, "durasock_redisbus_cluster_ask_followed_total")
	if asked == 0 {
		t.Errorf("no ASK followed while the keys were on the target")
	}
	if err := m.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	flowing("events after the migration")
	close(stop)
	wg.Wait()
	n := <-published
	if pubErr != nil {
		t.Fatalf("Publish: %v", pubErr)
	}
	if !in.await(time.Minute, countEvents(n)) {
		t.Fatalf("received %d of %d events (a %+v)", len(in.snapshot()), n, a.Status())
	}
	checkEvents(t, in.snapshot(), "a", n)
	st := a.Stats()
	t.Logf("%d events, %d MIGRATE steps; ASK followed for %v commands, MOVED for %v; publisher %+v", n, steps,
		asked, counterValue(t, reg, "durasock_redisbus_cluster_moved_followed_total"), st)
	if st.PrimaryChanges != 0 || st.Republished != 0 {
		t.Errorf("primary changes %d, republished %d: want 0 (the slot moved with its data)", st.PrimaryChanges, st.Republished)
	}
	if errors.Is(pubErr, bus.ErrPrimaryChanged) {
		t.Errorf("publish error %v", pubErr)
	}
}

// TestClusterMigrationAfterUnconfirmedWrites: with WaitReplicas 1, a write
// replicas have not confirmed (NoWait) went to the slot's source. Once its
// key moved, the next batch of that partition is still refused with
// ErrPrimaryChanged (the transport cannot check, on the node it is pinned
// to, that the unconfirmed write is where the batch would go, so the bus
// writes it again first); the batch after it, with nothing unconfirmed left,
// follows ASK. Once the migration is finished, the batch goes to the new
// owner, refused once if the client still sends it to the old one.
func TestClusterMigrationAfterUnconfirmedWrites(t *testing.T) {
	t.Parallel()
	cs, ctx, opts := migrationCluster(t, "unconfmig", 1, 2*time.Minute)
	opts.WaitReplicas, opts.WaitTimeout = 1, 10*time.Second
	tr := newTransport(t, cs.URL(), opts)
	unconfirmed := func(i int) []bus.Frame {
		return []bus.Frame{{Partition: 0, NoWait: true, Data: []byte("m" + strconv.Itoa(i))}}
	}
	publish(t, tr, unconfirmed(0))
	key := StreamKey(opts.Prefix, 0)
	slot := redistest.KeySlot(key)
	m, err := cs.StartMigration(ctx, slot, otherPrimary(t, ctx, cs, slot))
	if err != nil {
		t.Fatal(err)
	}
	for {
		n, err := m.MoveKeys(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	if err := tr.Publish(ctx, numbered(1, 2, 1)); !errors.Is(err, ErrPrimaryChanged) {
		t.Fatalf("Publish after an unconfirmed write, its key migrated: %v, want ErrPrimaryChanged", err)
	}
	if err := tr.Publish(ctx, numbered(1, 2, 1)); err != nil {
		t.Fatalf("Publish again: %v", err)
	}
	publish(t, tr, unconfirmed(2))
	if err := m.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	// The unconfirmed write went to the new owner (ASK): a client that
	// learned the new slot map meanwhile (a refresh of its own) sends the
	// batch there with no MOVED at all, which is as right as the refusal.
	if err := tr.Publish(ctx, numbered(3, 4, 1)); err != nil && !errors.Is(err, ErrPrimaryChanged) {
		t.Fatalf("Publish after an unconfirmed write, its slot resharded: %v, want nil or ErrPrimaryChanged", err)
	} else if err != nil {
		if err := tr.Publish(ctx, numbered(3, 4, 1)); err != nil {
			t.Fatalf("Publish again: %v", err)
		}
	}
	checkFrameOrder(t, "stream on the new owner", streamOn(t, ctx, m.To(), key), []int{0, 1, 2, 3})
}

// TestClusterReadAskSingleXREAD: a reader's read that holds only the blocking
// XREAD (no position check: every position 0-0) of a key absent from a slot
// being migrated gets ASK from the source. The XREAD goes alone, so the
// client follows ASK (ASKING then XREAD on the target) and returns the
// target's answer: nothing within the block time. Sent as a one-command
// pipeline, rueidis v1.0.79 panicked sorting the replies of [ASKING, XREAD].
func TestClusterReadAskSingleXREAD(t *testing.T) {
	t.Parallel()
	cs, ctx, opts := migrationCluster(t, "askread", 1, time.Minute)
	s := newTransport(t, cs.URL(), opts).(*streams)
	c, err := s.client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	key := StreamKey(opts.Prefix, 0)
	slot := redistest.KeySlot(key)
	m, err := cs.StartMigration(ctx, slot, otherPrimary(t, ctx, cs, slot))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.From().Do(ctx, "XLEN", key); err == nil || !strings.HasPrefix(err.Error(), "ASK ") {
		t.Fatalf("XLEN on the source of the migration, key absent: %v, want ASK", err)
	}
	xread := func() rueidis.Completed {
		return c.B().Xread().Count(10).Block(200).Streams().Key(key).Id("0-0").Build()
	}
	res := doRead(ctx, c, rueidis.Commands{xread()})
	if len(res) != 1 || !rueidis.IsRedisNil(res[0].Error()) {
		t.Fatalf("XREAD of an absent key being migrated: %d results %v, want one nil (block time out)", len(res), res)
	}
	// Once the target holds the key, the read returns its entries.
	if _, err := m.To().DoAll(ctx, []string{"ASKING"}, []string{"XADD", key, "*", frameField, "m0"}); err != nil {
		t.Fatal(err)
	}
	res = doRead(ctx, c, rueidis.Commands{xread()})
	got, err := res[0].AsXRead()
	if err != nil || len(got[key]) != 1 || got[key][0].FieldValues[frameField] != "m0" {
		t.Fatalf("XREAD of a key on the target of the migration: %v %v, want the entry m0", got, err)
	}
}

// TestClusterAskWholeBatchOnTarget: with WaitReplicas 1, during a migration
// of the slot of partition 0 whose stream key is not on the source, every
// command of a batch gets ASK and goes to the target. The batch is the
// target's alone: a NoWait write is recorded with the target's replication
// id, and the source's own WAIT counts for nothing (its replica is stopped
// and the connection wrote there before, so that WAIT falls short): Publish
// with WAIT and AwaitReplicas confirm against the target.
func TestClusterAskWholeBatchOnTarget(t *testing.T) {
	t.Parallel()
	cs, ctx, opts := migrationCluster(t, "askwhole", 16, 2*time.Minute)
	opts.WaitReplicas, opts.WaitTimeout = 1, 2*time.Second
	s := newTransport(t, cs.URL(), opts).(*streams)
	key := StreamKey(opts.Prefix, 0)
	slot := redistest.KeySlot(key)
	from, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	// Another partition served by the source.
	other := -1
	for p := 1; p < opts.Partitions && other < 0; p++ {
		if o, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(StreamKey(opts.Prefix, p))); err == nil && o == from && redistest.KeySlot(StreamKey(opts.Prefix, p)) != slot {
			other = p
		}
	}
	if other < 0 {
		t.Fatalf("no partition of %d besides 0 on %s", opts.Partitions, from.Addr())
	}
	m, err := cs.StartMigration(ctx, slot, otherPrimary(t, ctx, cs, slot))
	if err != nil {
		t.Fatal(err)
	}
	reps, err := cs.ReplicasOf(ctx, from)
	if err != nil || len(reps) == 0 {
		t.Fatalf("replicas of the source %s: %v %v", from.Addr(), reps, err)
	}
	for _, r := range reps {
		if err := r.Suspend(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.Resume() })
	}
	// A write on the source that its replica cannot acknowledge.
	publish(t, s, []bus.Frame{{Partition: other, NoWait: true, Data: []byte("m0")}})
	info, err := m.To().Info(ctx, "replication")
	if err != nil {
		t.Fatal(err)
	}
	target := info["master_replid"]

	publish(t, s, []bus.Frame{{Partition: 0, NoWait: true, Data: []byte("m0")}})
	s.mu.Lock()
	pd := s.pend[0]
	s.mu.Unlock()
	if pd.replid != target || pd.mixed || pd.lastID == "" {
		t.Fatalf("pending write after a batch all sent to the target: replid %q mixed %v id %q, want the target's %q", pd.replid, pd.mixed, pd.lastID, target)
	}
	if err := s.AwaitReplicas(ctx, []int{0}); err != nil {
		t.Fatalf("AwaitReplicas with the batch and the marker on the target: %v", err)
	}
	if err := s.Publish(ctx, numbered(1, 2, 1)); err != nil {
		t.Fatalf("Publish with WAIT, the batch on the target: %v", err)
	}
	checkFrameOrder(t, "stream on the target", streamOn(t, ctx, m.To(), key), []int{0, 1})
}

// TestClusterRedirectToNodeLackingWrites: the node a redirection names must
// hold the last entry this node wrote to the stream; otherwise the slot did
// not move with its data, and Publish returns ErrPrimaryChanged (the bus
// writes again what the new owner lacks) instead of writing the batch there
// silently. MOVED: the old owner's keys of the slot were deleted and the
// slot given to another primary (as a primary does that loses a slot to a
// higher config epoch, or an operator's SETSLOT NODE on a half-done
// migration): the old owner is still a primary holding no key of the slot.
// ASK: the stream key moved to the target of a migration and was lost there.
// After the error the next batch is written (the bus republishes first).
func TestClusterRedirectToNodeLackingWrites(t *testing.T) {
	t.Parallel()
	cs, ctx, opts := migrationCluster(t, "lostmig", 2, 2*time.Minute)
	tr := newTransport(t, cs.URL(), opts)
	trw := newTransport(t, cs.URL(), waitingForOne(opts))
	frames := func(p, i int) []bus.Frame { return []bus.Frame{{Partition: p, Data: []byte("m" + strconv.Itoa(i))}} }

	for _, tc := range []struct {
		name string
		p    int
		tr   bus.Transport
		ask  bool
	}{{"moved", 0, tr, false}, {"ask", 1, trw, true}} {
		key := StreamKey(opts.Prefix, tc.p)
		slot := redistest.KeySlot(key)
		publish(t, tc.tr, frames(tc.p, 0))
		m, err := cs.StartMigration(ctx, slot, otherPrimary(t, ctx, cs, slot))
		if err != nil {
			t.Fatal(err)
		}
		if tc.ask {
			if n, err := m.MoveKeys(ctx, 10); err != nil || n != 1 {
				t.Fatalf("%s: MoveKeys: %d %v", tc.name, n, err)
			}
			if _, err := m.To().DoAll(ctx, []string{"ASKING"}, []string{"DEL", key}); err != nil {
				t.Fatal(err)
			}
		} else {
			if _, err := m.From().Do(ctx, "DEL", key); err != nil {
				t.Fatal(err)
			}
			if err := m.Finish(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := tc.tr.Publish(ctx, frames(tc.p, 1)); !errors.Is(err, ErrPrimaryChanged) || !errors.Is(err, bus.ErrPrimaryChanged) {
			t.Fatalf("%s: Publish to a node lacking the last entry written: %v, want ErrPrimaryChanged", tc.name, err)
		}
		if got := streamOn(t, ctx, m.To(), key); len(got) != 0 {
			t.Fatalf("%s: the refused batch was written: %v", tc.name, got)
		}
		publish(t, tc.tr, frames(tc.p, 0)) // what the bus writes again
		publish(t, tc.tr, frames(tc.p, 1))
		checkFrameOrder(t, tc.name+": stream on the new node", streamOn(t, ctx, m.To(), key), []int{0, 1})
	}
}

// migrationCluster starts a Redis Cluster for a migration test and returns
// it, a context that ends within the given time (or with the test), and
// streams options with the test's own prefix and partition count.
func migrationCluster(t *testing.T, prefix string, parts int, within time.Duration) (*redistest.ClusterSet, context.Context, Options) {
	t.Helper()
	cs := redistest.Cluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	o := faultOpts(Streams)
	o.Prefix, o.Partitions = prefix, parts
	return cs, ctx, o
}

// waitingForOne returns o waiting for one replica (10 s at most) after each
// batch.
func waitingForOne(o Options) Options {
	o.WaitReplicas, o.WaitTimeout = 1, 10*time.Second
	return o
}
