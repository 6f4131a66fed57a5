package redisbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
)

// waitLong bounds every wait of these tests for a condition that should hold
// within milliseconds: generous, so a loaded machine does not fail a test.
const waitLong = 20 * time.Second

// collector records delivered frames and wakes waiters on each one.
type collector struct {
	mu     sync.Mutex
	frames []bus.Frame
	notify chan struct{}
}

func newCollector() *collector { return &collector{notify: make(chan struct{})} }

func (c *collector) deliver(f bus.Frame) {
	c.mu.Lock()
	c.frames = append(c.frames, bus.Frame{Partition: f.Partition, Data: bytes.Clone(f.Data)})
	close(c.notify)
	c.notify = make(chan struct{})
	c.mu.Unlock()
}

// await waits until cond holds for the frames so far, at most d.
func (c *collector) await(d time.Duration, cond func([]bus.Frame) bool) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		c.mu.Lock()
		ok, ch := cond(c.frames), c.notify
		c.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		}
	}
}

// waitFor waits until cond holds, failing the test after waitLong.
func (c *collector) waitFor(t testing.TB, what string, cond func([]bus.Frame) bool) {
	t.Helper()
	if !c.await(waitLong, cond) {
		t.Fatalf("timed out after %v waiting for %s (%d frames received)", waitLong, what, len(c.snapshot()))
	}
}

func (c *collector) snapshot() []bus.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]bus.Frame(nil), c.frames...)
}

// subscription is a Subscribe call running in a goroutine owned by the test.
type subscription struct {
	*collector
	cancel context.CancelFunc
	done   chan error
}

func startSubscribe(t testing.TB, tr bus.Transport, nodeID string) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{collector: newCollector(), cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- tr.Subscribe(ctx, nodeID, s.deliver) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// startResubscribe is startSubscribe that calls Subscribe again after an
// error, as the bus does, until stopped; the errors are logged.
func startResubscribe(t testing.TB, tr bus.Transport, nodeID string) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscription{collector: newCollector(), cancel: cancel, done: make(chan error, 1)}
	go func() {
		retry := time.NewTicker(100 * time.Millisecond)
		defer retry.Stop()
		for {
			err := tr.Subscribe(ctx, nodeID, s.deliver)
			if ctx.Err() != nil {
				s.done <- err
				return
			}
			t.Logf("Subscribe: %v (calling it again)", err)
			select {
			case <-retry.C:
			case <-ctx.Done():
				s.done <- ctx.Err()
				return
			}
		}
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop cancels the subscription and returns its error (nil when it had already
// returned and its error was taken by waitEnded).
func (s *subscription) stop(t testing.TB) error {
	t.Helper()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if !ok {
			return nil
		}
		close(s.done)
		return err
	case <-time.After(waitLong):
		t.Fatalf("Subscribe did not return within %v of its ctx being cancelled", waitLong)
		return nil
	}
}

// waitEnded waits for Subscribe to return on its own and returns its error.
func (s *subscription) waitEnded(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case err := <-s.done:
		close(s.done)
		return err
	case <-time.After(within):
		t.Fatalf("Subscribe still running %v after its connection broke", within)
		return nil
	}
}

var syncSeq struct {
	sync.Mutex
	n int
}

// syncSubscribed publishes marker frames on every partition and a direct marker
// to node until sub has received one of each: after it, the subscription is
// live on every channel, and a frame published later must arrive.
func syncSubscribed(t testing.TB, pub bus.Transport, node string, sub *subscription) {
	t.Helper()
	syncSeq.Lock()
	syncSeq.n++
	tag := fmt.Sprintf("sync-%d-", syncSeq.n)
	syncSeq.Unlock()
	parts := pub.Partitions()
	seen := func(fs []bus.Frame) bool {
		got := map[int]bool{}
		for _, f := range fs {
			if bytes.HasPrefix(f.Data, []byte(tag)) {
				got[f.Partition] = true
			}
		}
		return len(got) == parts+1
	}
	deadline := time.Now().Add(waitLong)
	for round := 0; ; round++ {
		frames := make([]bus.Frame, parts)
		for p := range frames {
			frames[p] = bus.Frame{Partition: p, Data: []byte(tag + strconv.Itoa(round))}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		perr := pub.Publish(ctx, frames)
		serr := pub.Send(ctx, node, []byte(tag+"direct"))
		cancel()
		if sub.await(200*time.Millisecond, seen) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("subscription not live after %v (last publish error %v, send error %v)", waitLong, perr, serr)
		}
	}
}

// dataFrames drops sync markers.
func dataFrames(fs []bus.Frame) []bus.Frame {
	var out []bus.Frame
	for _, f := range fs {
		if !bytes.HasPrefix(f.Data, []byte("sync-")) {
			out = append(out, f)
		}
	}
	return out
}

// numbered are frames "m<i>" spread over the partitions.
func numbered(from, to, parts int) []bus.Frame {
	var fs []bus.Frame
	for i := from; i < to; i++ {
		fs = append(fs, bus.Frame{Partition: i % parts, Data: []byte("m" + strconv.Itoa(i))})
	}
	return fs
}

// checkNumbered checks that fs holds exactly the numbered frames [from, to), each
// once, in order within each partition.
func checkNumbered(t testing.TB, fs []bus.Frame, from, to, parts int) {
	t.Helper()
	last := map[int]int{}
	seen := map[int]int{}
	for _, f := range dataFrames(fs) {
		s, ok := strings.CutPrefix(string(f.Data), "m")
		if !ok {
			continue
		}
		i, err := strconv.Atoi(s)
		if err != nil {
			t.Errorf("unexpected frame %q", f.Data)
			continue
		}
		if i < from || i >= to {
			continue
		}
		seen[i]++
		if f.Partition != i%parts {
			t.Errorf("frame %d on partition %d, want %d", i, f.Partition, i%parts)
		}
		if prev, ok := last[f.Partition]; ok && i <= prev {
			t.Errorf("partition %d: frame %d after %d", f.Partition, i, prev)
		}
		last[f.Partition] = i
	}
	var lost, dup int
	for i := from; i < to; i++ {
		switch seen[i] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	if lost != 0 || dup != 0 {
		t.Errorf("frames [%d,%d): %d lost, %d duplicated", from, to, lost, dup)
	}
}

// frameNumber returns i of a frame "m<i>".
func frameNumber(f bus.Frame) (int, bool) {
	s, ok := strings.CutPrefix(string(f.Data), "m")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

func countNumbered(from, to int) func([]bus.Frame) bool {
	return func(fs []bus.Frame) bool {
		n := 0
		for _, f := range fs {
			if i, ok := frameNumber(f); ok && i >= from && i < to {
				n++
			}
		}
		return n >= to-from
	}
}

func publish(t testing.TB, tr bus.Transport, frames []bus.Frame) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Publish(ctx, frames); err != nil {
		t.Fatalf("Publish: %v", err)
	}
}

func closeTransport(t testing.TB, tr bus.Transport) {
	t.Helper()
	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// factory makes a transport of the deployment under test.
type factory func(t testing.TB, o Options) bus.Transport

// testTransport is the conformance suite every transport and topology passes.
func testTransport(t *testing.T, kind Kind, newT factory) {
	opts := Options{Kind: kind, Partitions: 4, BlockTimeout: 500 * time.Millisecond}

	t.Run("RoundTrip", func(t *testing.T) {
		a, b := newT(t, opts), newT(t, opts)
		subB := startSubscribe(t, b, "b")
		subA := startSubscribe(t, a, "a")
		syncSubscribed(t, a, "b", subB)
		syncSubscribed(t, a, "a", subA)

		const n = 500
		for i := 0; i < n; i += 50 {
			publish(t, a, numbered(i, i+50, opts.Partitions))
		}
		subB.waitFor(t, "all frames at b", countNumbered(0, n))
		subA.waitFor(t, "own frames at a", countNumbered(0, n))
		checkNumbered(t, subB.snapshot(), 0, n, opts.Partitions)
		checkNumbered(t, subA.snapshot(), 0, n, opts.Partitions)
	})

	t.Run("BinarySafe", func(t *testing.T) {
		a := newT(t, opts)
		sub := startSubscribe(t, a, "a")
		syncSubscribed(t, a, "a", sub)
		big := bytes.Repeat([]byte{0, 1, '\r', '\n', 0xff, '$', '*'}, 20000)
		want := [][]byte{{}, {0}, []byte("\r\n*1\r\n$3\r\nfoo\r\n"), {0xc3, 0x28, 0xff, 0xfe}, big}
		var frames []bus.Frame
		for i, d := range want {
			frames = append(frames, bus.Frame{Partition: i % opts.Partitions, Data: d})
		}
		publish(t, a, frames)
		if err := a.Send(context.Background(), "a", big); err != nil {
			t.Fatalf("Send: %v", err)
		}
		isWanted := func(f bus.Frame) bool { return !bytes.HasPrefix(f.Data, []byte("sync-")) }
		sub.waitFor(t, "binary frames", func(fs []bus.Frame) bool {
			n := 0
			for _, f := range fs {
				if isWanted(f) {
					n++
				}
			}
			return n >= len(want)+1
		})
		var got []bus.Frame
		for _, f := range sub.snapshot() {
			if isWanted(f) {
				got = append(got, f)
			}
		}
		byPart := map[int][][]byte{}
		var direct [][]byte
		for _, f := range got {
			if f.Partition == -1 {
				direct = append(direct, f.Data)
			} else {
				byPart[f.Partition] = append(byPart[f.Partition], f.Data)
			}
		}
		for i, d := range want {
			p := i % opts.Partitions
			idx := i / opts.Partitions
			if idx >= len(byPart[p]) || !bytes.Equal(byPart[p][idx], d) {
				t.Errorf("frame %d (%d bytes) not received intact on partition %d", i, len(d), p)
			}
		}
		if len(direct) != 1 || !bytes.Equal(direct[0], big) {
			t.Errorf("direct frame: got %d frames", len(direct))
		}
	})

	t.Run("Direct", func(t *testing.T) {
		a, b, c := newT(t, opts), newT(t, opts), newT(t, opts)
		subB := startSubscribe(t, b, "b")
		subC := startSubscribe(t, c, "c")
		syncSubscribed(t, a, "b", subB)
		syncSubscribed(t, a, "c", subC)
		ctx := context.Background()
		if err := a.Send(ctx, "b", []byte("to-b")); err != nil {
			t.Fatalf("Send to b: %v", err)
		}
		if err := a.Send(ctx, "", []byte("to-all")); err != nil {
			t.Fatalf("Send to all: %v", err)
		}
		if err := a.Send(ctx, "nobody", []byte("to-nobody")); err != nil {
			t.Fatalf("Send to a node nobody is: %v", err)
		}
		direct := func(fs []bus.Frame) []string {
			var out []string
			for _, f := range dataFrames(fs) {
				if f.Partition != -1 {
					t.Errorf("direct frame %q on partition %d", f.Data, f.Partition)
				}
				out = append(out, string(f.Data))
			}
			return out
		}
		subB.waitFor(t, "two direct frames at b", func(fs []bus.Frame) bool { return len(dataFrames(fs)) >= 2 })
		subC.waitFor(t, "one direct frame at c", func(fs []bus.Frame) bool { return len(dataFrames(fs)) >= 1 })
		// A frame sent after those, to b only: when it has arrived, c would
		// have seen anything else meant for it.
		if err := a.Send(ctx, "", []byte("fence")); err != nil {
			t.Fatal(err)
		}
		subC.waitFor(t, "fence at c", func(fs []bus.Frame) bool { return len(dataFrames(fs)) >= 2 })
		subB.waitFor(t, "fence at b", func(fs []bus.Frame) bool { return len(dataFrames(fs)) >= 3 })
		// A node's own channel and the all channel are in different slots:
		// no order between them.
		gotB := direct(subB.snapshot())
		slices.Sort(gotB)
		if got, want := strings.Join(gotB, ","), "fence,to-all,to-b"; got != want {
			t.Errorf("b got %q, want %q", got, want)
		}
		if got, want := strings.Join(direct(subC.snapshot()), ","), "to-all,fence"; got != want {
			t.Errorf("c got %q, want %q", got, want)
		}
	})

	t.Run("DirectCompat", func(t *testing.T) {
		testDirectCompat(t, func(t testing.TB) bus.Transport { return newT(t, opts) })
	})

	t.Run("Errors", func(t *testing.T) {
		a := newT(t, opts)
		ctx := context.Background()
		if err := a.Publish(ctx, nil); err != nil {
			t.Errorf("empty Publish: %v", err)
		}
		for _, p := range []int{-1, opts.Partitions} {
			if err := a.Publish(ctx, []bus.Frame{{Partition: p}}); !errors.Is(err, ErrBadPartition) {
				t.Errorf("Publish on partition %d: %v, want ErrBadPartition", p, err)
			}
		}
		if got := a.Partitions(); got != opts.Partitions {
			t.Errorf("Partitions() = %d, want %d", got, opts.Partitions)
		}
		if err := a.Ping(ctx); err != nil {
			t.Errorf("Ping: %v", err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := a.Publish(cctx, numbered(0, 1, opts.Partitions)); !errors.Is(err, context.Canceled) {
			t.Errorf("Publish with a cancelled ctx: %v", err)
		}
		sub := startSubscribe(t, a, "a")
		syncSubscribed(t, a, "a", sub)
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		if err := sub.waitEnded(t, waitLong); err == nil {
			t.Error("Subscribe returned nil after Close")
		}
		for name, err := range map[string]error{
			"Publish":   a.Publish(ctx, numbered(0, 1, opts.Partitions)),
			"Send":      a.Send(ctx, "", []byte("x")),
			"Ping":      a.Ping(ctx),
			"Subscribe": a.Subscribe(ctx, "a", func(bus.Frame) {}),
		} {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v, want ErrClosed", name, err)
			}
		}
	})
}
