package redisbus

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// infoField returns the integer field name of INFO section of srv, from
// lines "name:value" (commandstats: "cmdstat_xread:calls=3,...", field
// "calls" of that line when name ends with ":calls").
func infoField(t *testing.T, srv *redistest.Server, section, line, field string) int64 {
	t.Helper()
	v, err := srv.Do(context.Background(), "INFO", section)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(v.(string), "\r\n") {
		rest, ok := strings.CutPrefix(l, line+":")
		if !ok {
			continue
		}
		if field == "" {
			n, _ := strconv.ParseInt(rest, 10, 64)
			return n
		}
		for _, kv := range strings.Split(rest, ",") {
			if val, ok := strings.CutPrefix(kv, field+"="); ok {
				n, _ := strconv.ParseInt(val, 10, 64)
				return n
			}
		}
	}
	return 0
}

// heldDelivery is a deliver func that holds the first frame until released,
// and records every frame.
type heldDelivery struct {
	mu      sync.Mutex
	frames  []bus.Frame
	held    chan struct{} // closed when the first frame is being held
	release chan struct{}
}

func newHeldDelivery() *heldDelivery {
	return &heldDelivery{held: make(chan struct{}), release: make(chan struct{})}
}

func (h *heldDelivery) deliver(f bus.Frame) {
	h.mu.Lock()
	h.frames = append(h.frames, f)
	first := len(h.frames) == 1
	h.mu.Unlock()
	if first {
		close(h.held)
		<-h.release
	}
}

func (h *heldDelivery) data() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, f := range h.frames {
		if strings.HasPrefix(string(f.Data), "m") {
			out = append(out, string(f.Data))
		}
	}
	return out
}

// checkInOrder fails unless got is m<from>..m<to-1>, each once, in order.
func checkInOrder(t *testing.T, got []string, from, to int) {
	t.Helper()
	if len(got) != to-from {
		t.Fatalf("delivered %d frames, want %d: %v", len(got), to-from, got)
	}
	for i, d := range got {
		if want := "m" + strconv.Itoa(from+i); d != want {
			t.Fatalf("frame %d is %q, want %q (lost, duplicated or reordered): %v", i, d, want, got)
		}
	}
}

// TestReadAheadWhileDelivering: with a backlog, the reader sends its next
// XREAD while it is still delivering the entries of a full one (COUNT
// readAheadMin), and holds no more than those two reads; every entry is
// delivered once, in order.
func TestReadAheadWhileDelivering(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Prefix, o.Partitions, o.ReadCount, o.ReadBytes = "ahead", 1, readAheadMin, -1
	pub := newTransport(t, srv.URL(), o)
	tr := newTransport(t, srv.URL(), o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := tr.(bus.StartMarker).MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 5 * readAheadMin
	publish(t, pub, numbered(0, n, 1))
	before := infoField(t, srv, "commandstats", "cmdstat_xread", "calls")

	h := newHeldDelivery()
	done := make(chan error, 1)
	go func() { done <- tr.Subscribe(ctx, "r", h.deliver) }()
	<-h.held
	// The first read (readAheadMin entries) is being delivered: the second is sent and
	// answered meanwhile, and nothing more.
	testwait.For(t, waitLong, "the read-ahead XREAD", func() bool {
		return infoField(t, srv, "commandstats", "cmdstat_xread", "calls") >= before+2
	})
	if got := infoField(t, srv, "commandstats", "cmdstat_xread", "calls"); got != before+2 {
		t.Fatalf("%d XREADs while the first read is delivered, want 2", got-before)
	}
	close(h.release)
	testwait.For(t, waitLong, "the backlog", func() bool { return len(h.data()) >= n })
	checkInOrder(t, h.data(), 0, n)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Subscribe returned %v", err)
	}
}

// TestReadAheadFailureResumes: the read sent ahead fails (its connection is
// killed while it blocks) during the delivery of the previous read; the
// reader delivers that read in full, fails, and the next Subscribe resumes
// after the last entry delivered: nothing lost, duplicated or reordered.
func TestReadAheadFailureResumes(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Prefix, o.Partitions, o.ReadCount, o.ReadBytes = "aheadfail", 1, readAheadMin, -1
	o.BlockTimeout = 5 * time.Second // the read ahead blocks until killed
	pub := newTransport(t, srv.URL(), o)
	tr := newTransport(t, srv.URL(), o)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := tr.(bus.StartMarker).MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, numbered(0, readAheadMin, 1)) // exactly one full read

	h := newHeldDelivery()
	done := make(chan error, 1)
	go func() { done <- tr.Subscribe(ctx, "r", h.deliver) }()
	<-h.held
	testwait.For(t, waitLong, "the read ahead to block", func() bool {
		return infoField(t, srv, "clients", "blocked_clients", "") >= 1
	})
	killBlockedReads(t, srv)
	close(h.release)
	select {
	case err := <-done:
		if err == nil || ctx.Err() != nil {
			t.Fatalf("Subscribe returned %v, want the failed read", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Subscribe did not return after its read ahead failed")
	}
	checkInOrder(t, h.data(), 0, readAheadMin)

	publish(t, pub, numbered(readAheadMin, readAheadMin+12, 1))
	h2 := newHeldDelivery()
	close(h2.release)
	go func() { done <- tr.Subscribe(ctx, "r", h2.deliver) }()
	testwait.For(t, waitLong, "the rest", func() bool { return len(h2.data()) >= 12 })
	checkInOrder(t, h2.data(), readAheadMin, readAheadMin+12)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Subscribe returned %v", err)
	}
}

// killBlockedReads closes the connections of srv's clients blocked in XREAD.
func killBlockedReads(t *testing.T, srv *redistest.Server) {
	t.Helper()
	v, err := srv.Do(context.Background(), "CLIENT", "LIST")
	if err != nil {
		t.Fatal(err)
	}
	killed := 0
	for _, l := range strings.Split(v.(string), "\n") {
		f := strings.Fields(l)
		id, blocked, xread := "", false, false
		for _, kv := range f {
			switch {
			case strings.HasPrefix(kv, "id="):
				id = strings.TrimPrefix(kv, "id=")
			case strings.HasPrefix(kv, "flags="):
				blocked = strings.Contains(strings.TrimPrefix(kv, "flags="), "b")
			case kv == "cmd=xread":
				xread = true
			}
		}
		if id == "" || !blocked || !xread {
			continue
		}
		if _, err := srv.Do(context.Background(), "CLIENT", "KILL", "ID", id); err != nil {
			t.Fatal(err)
		}
		killed++
	}
	if killed != 1 {
		t.Fatalf("killed %d blocked XREADs, want 1: %s", killed, v)
	}
}
