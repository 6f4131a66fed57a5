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
)

// inboxOpts are faultOpts with shared partitions and inboxes.
func inboxOpts(shared, inboxes int) Options {
	o := faultOpts(Streams)
	o.Partitions, o.Inboxes = shared, inboxes
	return o
}

// framesOn are frames "m<i>", i in [from, to), on each partition of parts:
// for each i, one frame per partition.
func framesOn(parts []int, from, to int) []bus.Frame {
	var fs []bus.Frame
	for i := from; i < to; i++ {
		for _, p := range parts {
			fs = append(fs, bus.Frame{Partition: p, Data: []byte("m" + strconv.Itoa(i))})
		}
	}
	return fs
}

// perPartition groups the numbers of frames "m<i>" by partition, in the
// order delivered.
func perPartition(fs []bus.Frame) map[int][]int {
	out := map[int][]int{}
	for _, f := range fs {
		if i, ok := frameNumber(f); ok {
			out[f.Partition] = append(out[f.Partition], i)
		}
	}
	return out
}

// countOn returns a condition: every partition of parts has at least n
// numbered frames.
func countOn(parts []int, n int) func([]bus.Frame) bool {
	return func(fs []bus.Frame) bool {
		got := perPartition(fs)
		for _, p := range parts {
			if len(got[p]) < n {
				return false
			}
		}
		return true
	}
}

// checkExactly checks that fs holds, on each partition of parts, exactly the
// frames m0..m<n-1> in order, and no numbered frame on any other partition.
func checkExactly(t *testing.T, who string, fs []bus.Frame, parts []int, n int) {
	t.Helper()
	for p, got := range perPartition(fs) {
		if !slices.Contains(parts, p) {
			t.Errorf("%s: %d frames delivered from partition %d, which it does not read", who, len(got), p)
			continue
		}
		lost, dup, reordered := 0, 0, 0
		seen := map[int]int{}
		for k, i := range got {
			seen[i]++
			if k > 0 && i < got[k-1] {
				reordered++
			}
		}
		for i := range n {
			switch seen[i] {
			case 0:
				lost++
			case 1:
			default:
				dup += seen[i] - 1
			}
		}
		if lost != 0 || dup != 0 || reordered != 0 || len(got) != n {
			t.Errorf("%s: partition %d: %d frames, %d lost, %d duplicated, %d reordered (want m0..m%d once each, in order)", who, p, len(got), lost, dup, reordered, n-1)
		}
	}
}

func markStart(t *testing.T, tr bus.Transport) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streamsOf(t, tr).MarkStart(ctx); err != nil {
		t.Fatalf("MarkStart: %v", err)
	}
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

func TestInboxOptions(t *testing.T) {
	o := inboxOpts(8, 256)
	o.URL = "redis://127.0.0.1:1"
	tr, err := NewTransport(&o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTransport(t, tr)
	s := streamsOf(t, tr)
	if tr.Partitions() != 264 || s.Inboxes() != 256 {
		t.Errorf("Partitions() %d, Inboxes() %d; want 264, 256", tr.Partitions(), s.Inboxes())
	}
	for p := range tr.Partitions() {
		want := StreamKey(DefaultPrefix, p)
		if p >= 8 {
			want = InboxKey(DefaultPrefix, p-8)
		}
		if s.keys[p] != want {
			t.Errorf("partition %d: key %q, want %q", p, s.keys[p], want)
		}
		if redistest.KeySlot(s.waitKeys[p]) != redistest.KeySlot(s.keys[p]) {
			t.Errorf("partition %d: replication key %q not in the slot of %q", p, s.waitKeys[p], s.keys[p])
		}
		if s.keyPart[s.keys[p]] != p {
			t.Errorf("key %q maps to partition %d, want %d", s.keys[p], s.keyPart[s.keys[p]], p)
		}
	}
	if got := InboxKey("durasock", 17); got != "{durasock:in:17}:stream" {
		t.Errorf("InboxKey = %q", got)
	}
	slots := map[int]bool{}
	for b := range 256 {
		slots[redistest.KeySlot(InboxKey("durasock", b))] = true
	}
	if len(slots) != 256 {
		t.Errorf("256 inboxes in %d slots, want one slot each", len(slots))
	}

	// The URL parameter replaces Options.Inboxes, within the same bounds.
	o = Options{URL: "redis://127.0.0.1:1?inboxes=16", Partitions: 4, Inboxes: 2}
	tr2, err := NewTransport(&o)
	if err != nil {
		t.Fatal(err)
	}
	defer closeTransport(t, tr2)
	if tr2.Partitions() != 20 || streamsOf(t, tr2).Inboxes() != 16 {
		t.Errorf("inboxes=16 with 4 partitions: Partitions() %d, Inboxes() %d; want 20, 16", tr2.Partitions(), streamsOf(t, tr2).Inboxes())
	}
	for _, bad := range []Options{
		{URL: "redis://127.0.0.1:1?inboxes=1024", Partitions: 1},
		{URL: "redis://127.0.0.1:1?inboxes=1", Kind: PubSub},
	} {
		if _, err := NewTransport(&bad); !errors.Is(err, ErrBadOptions) {
			t.Errorf("NewTransport(%+v): %v, want ErrBadOptions", bad, err)
		}
	}
	if _, err := NewTransport(&Options{URL: "redis://127.0.0.1:1", Kind: PubSub, Inboxes: 4}); err == nil || !errors.Is(err, ErrBadOptions) {
		t.Errorf("pub/sub with inboxes: %v, want ErrBadOptions", err)
	} else if want := "Inboxes 4 with the pub/sub transport (inbox partitions need Kind Streams)"; !strings.Contains(err.Error(), want) {
		t.Errorf("pub/sub with inboxes: %q does not say %q", err, want)
	}

	// ReadPartitions keeps the partitions that exist, sorted, once.
	s.ReadPartitions([]int{263, 3, -1, 3, 264, 0})
	if got := s.readParts(); !slices.Equal(got, []int{0, 3, 263}) {
		t.Errorf("readParts after ReadPartitions = %v, want [0 3 263]", got)
	}
	s.ReadPartitions([]int{-1})
	if got := s.readParts(); len(got) != 0 {
		t.Errorf("readParts after ReadPartitions([-1]) = %v, want none", got)
	}
	s.ReadPartitions(nil)
	if got := s.readParts(); len(got) != 264 {
		t.Errorf("readParts after ReadPartitions(nil): %d partitions, want 264", len(got))
	}
}

// TestReadPartitionsDeliverOnlyThose publishes on every partition and checks
// that a transport with ReadPartitions delivers exactly the frames of its
// partitions (shared ones and its inbox), and none of another inbox, while a
// transport without it delivers everything.
func TestReadPartitionsDeliverOnlyThose(t *testing.T) {
	srv := redistest.Standalone(t)
	const shared, inboxes, n = 2, 6, 50
	o := inboxOpts(shared, inboxes)
	pub := newTransport(t, srv.URL(), o)
	a, b, all := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)
	aParts, bParts := []int{0, 1, shared + 3}, []int{0, 1, shared + 5}
	streamsOf(t, a).ReadPartitions(aParts)
	streamsOf(t, b).ReadPartitions(bParts)
	for _, tr := range []bus.Transport{a, b, all} {
		markStart(t, tr)
	}
	subA, subB, subAll := startSubscribe(t, a, "a"), startSubscribe(t, b, "b"), startSubscribe(t, all, "all")

	every := seq(0, shared+inboxes)
	for i := 0; i < n; i += 10 {
		publish(t, pub, framesOn(every, i, i+10))
	}
	subA.waitFor(t, "a's partitions", countOn(aParts, n))
	subB.waitFor(t, "b's partitions", countOn(bParts, n))
	subAll.waitFor(t, "every partition", countOn(every, n))
	// One more frame on each reader's inbox, published after every other
	// frame: the single XREAD of a reader that named another partition
	// would have returned that partition's frames before this one.
	publish(t, pub, []bus.Frame{{Partition: shared + 3, Data: []byte("tail")}, {Partition: shared + 5, Data: []byte("tail")}})
	tail := func(p int) func([]bus.Frame) bool {
		return func(fs []bus.Frame) bool {
			return slices.ContainsFunc(fs, func(f bus.Frame) bool { return f.Partition == p && string(f.Data) == "tail" })
		}
	}
	subA.waitFor(t, "a's tail frame", tail(shared+3))
	subB.waitFor(t, "b's tail frame", tail(shared+5))
	checkExactly(t, "a", subA.snapshot(), aParts, n)
	checkExactly(t, "b", subB.snapshot(), bParts, n)
	checkExactly(t, "without ReadPartitions", subAll.snapshot(), every, n)
	if got := len(perPartition(subA.snapshot())[shared+5]); got != 0 {
		t.Errorf("a got %d frames of b's inbox, want 0", got)
	}
	for p := range every {
		if pos := streamsOf(t, a).Position(p); (pos == "") == slices.Contains(aParts, p) {
			t.Errorf("a: Position(%d) = %q (reads it: %v)", p, pos, slices.Contains(aParts, p))
		}
	}
}

// TestReadPartitionsCommands counts, on a private Redis, what a transport
// with 264 partitions asks: MarkStart sends one script per partition read
// (INFO commandstats), and the reader names no other key (INFO stats
// keyspace_misses: only the streams read exist, and every read of a missing
// key is a miss).
func TestReadPartitionsCommands(t *testing.T) {
	srv := redistest.Standalone(t)
	const shared, inboxes, n = 8, 256, 30
	o := inboxOpts(shared, inboxes)
	own := shared + 7
	pub := newTransport(t, srv.URL(), o)
	// The only stream that exists: the one of the inbox read.
	publish(t, pub, []bus.Frame{{Partition: own, Data: []byte("first")}})
	evals := func() int64 { return infoField(t, srv, "commandstats", "cmdstat_eval", "calls") }
	misses := func() int64 { return infoField(t, srv, "stats", "keyspace_misses", "") }

	for _, tc := range []struct {
		name      string
		parts     []int
		scripts   int64
		minMisses int64
	}{
		{"own-inbox", []int{own}, 1, 0},
		{"shared-and-inbox", append(seq(0, shared), own), shared + 1, shared},
		// Last: its reader keeps reading every missing stream.
		{"every-partition", nil, shared + inboxes, shared + inboxes - 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTransport(t, srv.URL(), o)
			if tc.parts != nil {
				streamsOf(t, tr).ReadPartitions(tc.parts)
			}
			m0, e0 := misses(), evals()
			markStart(t, tr)
			if got := evals() - e0; got != tc.scripts {
				t.Errorf("MarkStart ran %d scripts, want %d (one per partition read)", got, tc.scripts)
			}
			e1 := evals()
			markStart(t, tr)
			if got := evals() - e1; got != 0 {
				t.Errorf("a second MarkStart ran %d scripts, want 0", got)
			}
			sub := startSubscribe(t, tr, "n-"+tc.name)
			for i := 0; i < n; i += 10 {
				publish(t, pub, framesOn([]int{own}, i, i+10))
			}
			sub.waitFor(t, "the inbox's frames", countOn([]int{own}, n))
			checkExactly(t, tc.name, sub.snapshot(), []int{own}, n)
			if err := sub.stop(t); err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("Subscribe: %v", err)
			}
			got := misses() - m0
			if tc.minMisses == 0 && got != 0 {
				t.Errorf("%d reads of a missing key, want 0: the reader named a partition it does not read", got)
			}
			if got < tc.minMisses {
				t.Errorf("%d reads of a missing key, want at least %d", got, tc.minMisses)
			}
		})
	}
}

// TestInboxCluster checks inboxes on a Redis Cluster: their streams land on
// several shards (each on the primary of its slot), a transport reads only
// the partitions given (one reader each), and WAIT works on inbox partitions.
func TestInboxCluster(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	ctx := context.Background()
	const shared, inboxes, n = 2, 12, 20
	o := inboxOpts(shared, inboxes)
	o.Prefix = "inbox"
	pub := newTransport(t, cs.URL(), o)
	a, all := newTransport(t, cs.URL(), o), newTransport(t, cs.URL(), o)
	aParts := []int{0, 1, shared + 4}
	streamsOf(t, a).ReadPartitions(aParts)
	markStart(t, a)
	markStart(t, all)
	subA, subAll := startSubscribe(t, a, "a"), startSubscribe(t, all, "all")

	every := seq(0, shared+inboxes)
	for i := 0; i < n; i += 5 {
		publish(t, pub, framesOn(every, i, i+5))
	}
	subAll.waitFor(t, "every partition", countOn(every, n))
	subA.waitFor(t, "a's partitions", countOn(aParts, n))
	checkExactly(t, "without ReadPartitions", subAll.snapshot(), every, n)
	checkExactly(t, "a", subA.snapshot(), aParts, n)

	// Each inbox stream is on the primary of its slot, and they are spread.
	primaries, err := cs.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for b := range inboxes {
		want[primaries[primaryIndex(t, cs, primaries, InboxKey(o.Prefix, b))].Addr()]++
	}
	holding := 0
	for _, srv := range primaries {
		keys, err := srv.Do(ctx, "KEYS", "{"+o.Prefix+":in:*}:stream")
		if err != nil {
			t.Fatal(err)
		}
		got := len(keys.([]any))
		if got != want[srv.Addr()] {
			t.Errorf("primary %s holds %d inbox streams, want %d", srv.Addr(), got, want[srv.Addr()])
		}
		if got > 0 {
			holding++
		}
	}
	if holding < 2 {
		t.Errorf("%d inboxes on %d of %d primaries, want several", inboxes, holding, len(primaries))
	}

	// WAIT on inbox partitions: each batch's commands go per slot, with the
	// replication key in the slot of its stream.
	ow := o
	ow.WaitReplicas = 1
	ow.WaitTimeout = 5 * time.Second
	pw := newTransport(t, cs.URL(), ow)
	inboxParts := seq(shared, shared+inboxes)
	eventually(t, "Publish with WAIT on every inbox", func(ctx context.Context) error {
		return pw.Publish(ctx, framesOn(inboxParts, 1000, 1001))
	})
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := streamsOf(t, pw).AwaitReplicas(wctx, inboxParts); err != nil {
		t.Errorf("AwaitReplicas on inbox partitions: %v", err)
	}
}

// TestInboxAcrossRestart publishes on a shared partition, the reader's inbox
// and another inbox, across a Redis restart (AOF): the reader gets every frame
// of its partitions once, in order, and none of the other inbox; history reads
// and the survivor scan work on an inbox it does not read.
func TestInboxAcrossRestart(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithAOF())
	const shared, inboxes, n = 2, 4, 30
	o := inboxOpts(shared, inboxes)
	own, other := shared+1, shared+2
	parts := []int{0, own} // written to and read
	written := []int{0, own, other}
	pub, subT := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)
	streamsOf(t, subT).ReadPartitions([]int{0, 1, own})
	markStart(t, subT)
	sub := startResubscribe(t, subT, "s")

	publish(t, pub, framesOn(written, 0, 10))
	sub.waitFor(t, "frames before the restart", countOn(parts, 10))
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Publish after the restart", func(ctx context.Context) error {
		return pub.Publish(ctx, framesOn(written, 10, 20))
	})
	eventually(t, "Publish again", func(ctx context.Context) error {
		return pub.Publish(ctx, framesOn(written, 20, n))
	})
	sub.waitFor(t, "every frame", countOn(parts, n))
	checkExactly(t, "reader", sub.snapshot(), parts, n)

	// History and survivor scan on the inbox the reader does not read.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var hist []bus.Frame
	if err := streamsOf(t, subT).ReadHistory(ctx, other, "", func(f bus.Frame) bool {
		hist = append(hist, f)
		return true
	}); err != nil {
		t.Fatalf("ReadHistory of another inbox: %v", err)
	}
	checkExactly(t, "history of another inbox", hist, []int{other}, n)
	last := []byte(fmt.Sprintf("m%d", n-1))
	// Like the bus, ask again while a connection the restart broke fails.
	found := -1
	eventually(t, "FindSurvivor on an inbox", func(ctx context.Context) error {
		var err error
		found, err = streamsOf(t, pub).FindSurvivor(ctx, other, 100, func(data []byte) int {
			if string(data) == string(last) {
				return 0
			}
			return -1
		})
		return err
	})
	if found != 0 {
		t.Errorf("FindSurvivor on an inbox: %d, want 0 (the last frame written)", found)
	}
}
