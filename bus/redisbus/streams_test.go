package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

func TestStreamMaxLen(t *testing.T) {
	srv := redistest.Standalone(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		maxLen   int64
		min, max int64
	}{
		// Approximate trimming removes whole nodes of the stream
		// (stream-node-max-entries, 100 by default): at least maxLen stay.
		{"trimmed", 100, 100, 300},
		{"untrimmed", -1, 1000, 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := faultOpts(Streams)
			o.Prefix, o.Partitions, o.StreamMaxLen = "maxlen-"+tt.name, 1, tt.maxLen
			tr := newTransport(t, srv.URL(), o)
			for i := 0; i < 1000; i += 100 {
				publish(t, tr, numbered(i, i+100, 1))
			}
			v, err := srv.Do(ctx, "XLEN", StreamKey(o.Prefix, 0))
			if err != nil {
				t.Fatal(err)
			}
			n, ok := v.(int64)
			if !ok || n < tt.min || n > tt.max {
				t.Errorf("XLEN = %v, want %d..%d", v, tt.min, tt.max)
			}
		})
	}
}

// TestForeignEntry checks that an entry without the frame field (written by
// something else) is delivered empty, for the bus to count as undecodable,
// and does not stop the reader.
func TestForeignEntry(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Partitions = 1
	tr := newTransport(t, srv.URL(), o)
	sub := startSubscribe(t, tr, "s")
	syncSubscribed(t, tr, "s", sub)
	if _, err := srv.Do(context.Background(), "XADD", StreamKey(DefaultPrefix, 0), "*", "other", "x"); err != nil {
		t.Fatal(err)
	}
	publish(t, tr, numbered(0, 1, 1))
	sub.waitFor(t, "frame after the foreign entry", countNumbered(0, 1))
	fs := dataFrames(sub.snapshot())
	if len(fs) != 2 || fs[0].Data != nil || fs[0].Partition != 0 || string(fs[1].Data) != "m0" {
		t.Errorf("frames = %+v, want an empty frame then m0", fs)
	}
}

// TestStreamsMarkStart: frames published after MarkStart and before the first
// Subscribe are delivered by it; a later MarkStart keeps the start. The
// pub/sub transport, without history, has no start to fix.
func TestStreamsMarkStart(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Prefix = "markstart"
	pub := newTransport(t, srv.URL(), o)
	publish(t, pub, numbered(0, 4, o.Partitions)) // before MarkStart: not delivered
	tr := newTransport(t, srv.URL(), o)
	m, ok := tr.(bus.StartMarker)
	if !ok {
		t.Fatal("the streams transport does not implement bus.StartMarker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := m.MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, numbered(4, 10, o.Partitions))
	if err := m.MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	sub := startSubscribe(t, tr, "s")
	sub.waitFor(t, "frames published between MarkStart and Subscribe", countNumbered(4, 10))
	publish(t, pub, numbered(10, 12, o.Partitions))
	sub.waitFor(t, "frames published after Subscribe", countNumbered(4, 12))
	checkNumbered(t, dataFrames(sub.snapshot()), 4, 12, o.Partitions)
	for _, f := range dataFrames(sub.snapshot()) {
		if i, ok := frameNumber(f); !ok || i < 4 {
			t.Errorf("frame %q delivered; want only those published after MarkStart", f.Data)
		}
	}

	ps := newTransport(t, srv.URL(), faultOpts(PubSub))
	if _, ok := ps.(bus.StartMarker); ok {
		t.Error("the pub/sub transport implements bus.StartMarker")
	}
}

// streamsOf returns the streams transport behind tr.
func streamsOf(t *testing.T, tr bus.Transport) *streams {
	t.Helper()
	s, ok := tr.(*streams)
	if !ok {
		t.Fatalf("transport %T is not the streams transport", tr)
	}
	return s
}

// orderCounter is a deliver func for long runs: it counts the numbered frames
// and the ones out of order, without keeping them.
type orderCounter struct {
	mu        sync.Mutex
	n, last   int
	reordered int
	notify    chan struct{}
}

func newOrderCounter() *orderCounter { return &orderCounter{last: -1, notify: make(chan struct{}, 1)} }

func (c *orderCounter) deliver(f bus.Frame) {
	i, ok := frameNumber(f)
	if !ok {
		return
	}
	c.mu.Lock()
	c.n++
	if i != c.last+1 {
		c.reordered++
	}
	c.last = i
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

func (c *orderCounter) count() (n, reordered int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n, c.reordered
}

// waitCount waits until n frames arrived (and a little longer for extra ones).
func (c *orderCounter) waitCount(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(waitLong)
	defer deadline.Stop()
	for {
		if got, _ := c.count(); got >= n {
			return
		}
		select {
		case <-c.notify:
		case <-deadline.C:
			got, _ := c.count()
			t.Fatalf("received %d of %d frames after %v", got, n, waitLong)
		}
	}
}

// TestStreamsHistoryOutlivesBacklog: with the default options, a reader that
// was away while 110 000 entries went to one partition (more than the old
// 100 000-entry MAXLEN, less than one outbox replay of a few nodes) reads
// every one of them: history is trimmed by time, not by a count shared by all
// nodes.
func TestStreamsHistoryOutlivesBacklog(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	o := Options{Partitions: 1, Prefix: "history"}
	pub := newTransport(t, srv.URL(), o)
	tr := newTransport(t, srv.URL(), o)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := tr.(bus.StartMarker).MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	const n, batch = 110_000, 2000
	for i := 0; i < n; i += batch {
		publish(t, pub, numbered(i, i+batch, 1))
	}
	c := newOrderCounter()
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Subscribe(sctx, "r", c.deliver) }()
	defer func() {
		stop()
		<-done
	}()
	c.waitCount(t, n)
	if got, reordered := c.count(); got != n || reordered != 0 {
		t.Errorf("received %d of %d frames, %d out of order", got, n, reordered)
	}
	if st := streamsOf(t, tr).st; st.behindTrim.Load() != 0 || st.capTrimmed.Load() != 0 {
		t.Errorf("behind-trim %d, cap-trimmed %d; want 0", st.behindTrim.Load(), st.capTrimmed.Load())
	}
}

// TestStreamRetention: entries older than StreamRetention (by the server's
// clock, read from the ids XADD returns) are trimmed by later XADDs.
func TestStreamRetention(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithConfig("stream-node-max-entries 10"))
	o := faultOpts(Streams)
	o.Prefix, o.Partitions, o.StreamMaxLen, o.StreamRetention = "retention", 1, -1, 300*time.Millisecond
	tr := newTransport(t, srv.URL(), o)
	publish(t, tr, numbered(0, 50, 1))
	key := StreamKey(o.Prefix, 0)
	i := 50
	eventually(t, "the first 50 entries trimmed", func(ctx context.Context) error {
		publish(t, tr, numbered(i, i+1, 1))
		i++
		v, err := srv.Do(ctx, "XRANGE", key, "-", "+", "COUNT", "1")
		if err != nil {
			return err
		}
		if first := firstNumber(v); first < 50 {
			return fmt.Errorf("first entry m%d", first)
		}
		return nil
	})
	n, err := srv.Do(context.Background(), "XLEN", key)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := n.(int64); got >= int64(i) || got == 0 {
		t.Errorf("XLEN = %v of %d written, want fewer than written and more than 0", n, i)
	}
	if c := streamsOf(t, tr).st.capTrimmed.Load(); c != 0 {
		t.Errorf("cap-trimmed %d with the cap off", c)
	}
}

// TestReaderBehindTrim: a reader whose next entries were trimmed (here by the
// length cap) before it read them counts it once on resume, and reads on
// from the first entry still there.
func TestReaderBehindTrim(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithConfig("stream-node-max-entries 10"))
	o := faultOpts(Streams)
	o.Prefix, o.Partitions, o.StreamMaxLen, o.StreamRetention = "behind", 1, 100, -1
	pub := newTransport(t, srv.URL(), o)
	tr := newTransport(t, srv.URL(), o)
	sub := startSubscribe(t, tr, "s")
	syncSubscribed(t, pub, "s", sub)
	publish(t, pub, numbered(0, 10, 1))
	sub.waitFor(t, "first frames", countNumbered(0, 10))
	if err := sub.stop(t); !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe: %v", err)
	}
	for i := 10; i < 1010; i += 100 {
		publish(t, pub, numbered(i, i+100, 1))
	}
	sub2 := startSubscribe(t, tr, "s")
	sub2.waitFor(t, "the last frame", countNumbered(1009, 1010))
	got := len(dataFrames(sub2.snapshot()))
	if got < 100 || got > 200 {
		t.Errorf("read %d frames after the trim, want the ~100 kept", got)
	}
	checkNumbered(t, sub2.snapshot(), 1010-got, 1010, 1)
	st := streamsOf(t, tr).st
	if st.behindTrim.Load() != 1 || st.trimmedUnread.Load() != uint64(1000-got) {
		t.Errorf("behind-trim reports %d, entries %d; want 1 and %d", st.behindTrim.Load(), st.trimmedUnread.Load(), 1000-got)
	}
	st.mu.Lock()
	length := st.length[0]
	st.mu.Unlock()
	if length < 100 || length > 200 {
		t.Errorf("stream length seen by the reader %d, want the ~100 kept", length)
	}
	if c := streamsOf(t, pub).st.capTrimmed.Load(); c < 800 {
		t.Errorf("cap-trimmed %d, want at least 800", c)
	}
}

// TestReadByteBudget: a backlog of entries whose sum is above Redis' client
// output buffer limit is read in reads within ReadBytes, so Redis never drops
// the reader.
func TestReadByteBudget(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithConfig("client-output-buffer-limit normal 512kb 0 0"))
	o := faultOpts(Streams)
	o.Prefix, o.Partitions, o.ReadBytes = "budget", 2, 64<<10
	pub := newTransport(t, srv.URL(), o)
	tr := newTransport(t, srv.URL(), o)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := tr.(bus.StartMarker).MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 16<<10)
	var frames []bus.Frame
	for i := range 100 { // 1.6 MB: three times the limit
		frames = append(frames, bus.Frame{Partition: i % 2, Data: []byte("m" + strconv.Itoa(i) + ":" + big)})
	}
	publish(t, pub, frames)
	sub := startResubscribe(t, tr, "s")
	padded := func(fs []bus.Frame) int {
		n := 0
		for _, f := range fs {
			if strings.HasPrefix(string(f.Data), "m") {
				n++
			}
		}
		return n
	}
	sub.waitFor(t, "the backlog", func(fs []bus.Frame) bool { return padded(fs) >= 100 })
	if n := padded(sub.snapshot()); n != 100 {
		t.Errorf("received %d frames, want 100", n)
	}
	st := streamsOf(t, tr).st
	if st.readFailures.Load() != 0 || st.skipped.Load() != 0 {
		t.Errorf("read failures %d, skipped %d; want 0", st.readFailures.Load(), st.skipped.Load())
	}
}

// firstNumber returns i of the frame "m<i>" in an XRANGE reply of one entry,
// -1 when there is none.
func firstNumber(v any) int {
	entries, _ := v.([]any)
	if len(entries) == 0 {
		return -1
	}
	pair, _ := entries[0].([]any)
	if len(pair) != 2 {
		return -1
	}
	fvs, _ := pair[1].([]any)
	if len(fvs) != 2 {
		return -1
	}
	data, _ := fvs[1].(string)
	i, ok := frameNumber(bus.Frame{Data: []byte(data)})
	if !ok {
		return -1
	}
	return i
}

// FuzzIDMillis: the time part of any XADD reply parses or is refused, and a
// valid id gives back its milliseconds.
func FuzzIDMillis(f *testing.F) {
	for _, s := range []string{"1700000000000-0", "0-0", "18446744073709551615-1", "-", "1-", "-1", "x-1", "1-x", "", "9223372036854775808-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		ms, ok := idMillis(id)
		if !ok {
			return
		}
		if ms < 0 {
			t.Fatalf("idMillis(%q) = %d", id, ms)
		}
		if want := strconv.FormatInt(ms, 10); !strings.HasPrefix(id, want) && !strings.HasPrefix(strings.TrimLeft(id, "+0"), strings.TrimLeft(want, "0")) {
			t.Fatalf("idMillis(%q) = %d", id, ms)
		}
	})
}
