package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// copyDir copies the files of a running disk outbox: what the kernel holds for
// them is exactly what survives the process being killed.
func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// payloadsInOrder checks that msgs of origin carry payloads origin/first..last
// exactly once each, in order, and returns how many there were.
func payloadsInOrder(t *testing.T, msgs []Message, origin string, first, last int) {
	t.Helper()
	next := first
	for _, m := range msgs {
		if m.Origin != origin {
			continue
		}
		want := string(payload(origin, next))
		if string(m.Payload) != want {
			t.Fatalf("message %d of %s: payload %q, want %q (lost, duplicated or reordered)", next-first, origin, m.Payload, want)
		}
		next++
	}
	if next != last+1 {
		t.Fatalf("%s: %d messages, want %d", origin, next-first, last-first+1)
	}
}

func closeBus(t *testing.T, b *Reliable, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// TestDiskOutboxSurvivesKill: a node killed with accepted messages that the
// broker does not hold yet publishes them when it starts again on its
// directory; the other nodes get everything it accepted, in order, once.
func TestDiskOutboxSurvivesKill(t *testing.T) {
	hub := NewMemoryHub()
	fast := BackoffConfig{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}
	rcv := newSink()
	b := newBus(t, hub, Config{NodeID: "b", Backoff: fast})
	b.Receive(rcv.handle)

	dir := filepath.Join(t.TempDir(), "outbox")
	cfg := Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Backoff: fast, Logger: quietLogger()}
	a1, err := New(hub.Transport(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, a1, Connected, 10*time.Second)
	ctx := context.Background()
	for i := 1; i <= 50; i++ {
		if err := a1.Publish(ctx, "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a1.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	hub.setDown(true)
	for i := 51; i <= 100; i++ {
		if err := a1.Publish(ctx, "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	killed := copyDir(t, dir) // the process dies here
	closeBus(t, a1, 50*time.Millisecond)
	hub.setDown(false)

	cfg.Outbox.Dir, cfg.NodeID = killed, "" // the id comes from the directory
	a2 := newBus(t, hub, cfg)
	if a2.NodeID() != "a" {
		t.Fatalf("restarted node id %q, want the directory's %q", a2.NodeID(), "a")
	}
	if got := a2.Stats().DiskLoaded; got != 50 {
		t.Fatalf("loaded %d messages from disk, want the 50 Redis did not take", got)
	}
	a2.Receive(func(Message) {})
	if err := a2.Publish(ctx, "k", payload("a", 101)); err != nil {
		t.Fatal(err)
	}
	msgs := rcv.wait(t, 101, 30*time.Second)
	payloadsInOrder(t, msgs, "a", 1, 101)
	if s := b.Stats(); s.Gaps != 0 || s.GapMessages != 0 {
		t.Fatalf("receiver reported gaps: %+v", s)
	}
	// The restarted node takes its earlier run's messages for its own, not for
	// another process using its id.
	if err := a2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := len(rcv.all()); got != 101 {
		t.Fatalf("receiver has %d messages, want 101", got)
	}
}

// A stopped node keeps on disk what it could not publish, instead of dropping
// it, and publishes it at its next start.
func TestDiskOutboxKeepsAtClose(t *testing.T) {
	hub := NewMemoryHub()
	fast := BackoffConfig{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}
	rcv := newSink()
	b := newBus(t, hub, Config{NodeID: "b", Backoff: fast})
	b.Receive(rcv.handle)
	dir := t.TempDir()
	cfg := Config{Outbox: OutboxConfig{Dir: dir, Fsync: FsyncAlways}, NodeID: "a", Backoff: fast, Logger: quietLogger()}
	hub.setDown(true)
	a1, err := New(hub.Transport(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if err := a1.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	closeBus(t, a1, 50*time.Millisecond) // nil: nothing was dropped
	if s := a1.Stats(); s.DroppedClosed != 0 {
		t.Fatalf("Close dropped %d with a disk outbox", s.DroppedClosed)
	}
	hub.setDown(false)
	a2 := newBus(t, hub, cfg)
	a2.Receive(func(Message) {})
	payloadsInOrder(t, rcv.wait(t, 20, 30*time.Second), "a", 1, 20)

	// Once published, nothing is left for a third start.
	if err := a2.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	closeBus(t, a2, 5*time.Second)
	a3 := newBus(t, hub, cfg)
	if got := a3.Stats().DiskLoaded; got != 0 {
		t.Fatalf("third start loaded %d messages, want 0", got)
	}
}

// A record cut in the middle by a crash ends the log; what precedes it is kept.
func TestDiskOutboxTornRecord(t *testing.T) {
	hub := NewMemoryHub()
	hub.setDown(true)
	dir := t.TempDir()
	cfg := Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()}
	a1, err := New(hub.Transport(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if err := a1.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	closeBus(t, a1, 10*time.Millisecond)
	segs, err := filepath.Glob(filepath.Join(dir, "g*.log"))
	if err != nil || len(segs) != 1 {
		t.Fatalf("segments %v %v", segs, err)
	}
	f, err := os.OpenFile(segs[0], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{0, 0, 1, 0, 1, 2, 3}); err != nil { // a torn record
		t.Fatal(err)
	}
	f.Close()
	a2, err := New(hub.Transport(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := a2.Stats().DiskLoaded; got != 5 {
		t.Fatalf("loaded %d, want 5", got)
	}
	closeBus(t, a2, 10*time.Millisecond)
}

// One directory, one process; one directory, one node id.
func TestDiskOutboxRefusesSharing(t *testing.T) {
	hub := NewMemoryHub()
	dir := t.TempDir()
	a := newBus(t, hub, Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a"})
	_, err := New(hub.Transport(), &Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
	if !errors.Is(err, ErrDisk) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second process on one directory: err = %v", err)
	}
	closeBus(t, a, 5*time.Second)
	_, err = New(hub.Transport(), &Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "other", Logger: quietLogger()})
	if !errors.Is(err, ErrDisk) || !strings.Contains(err.Error(), `belongs to node "a"`) {
		t.Fatalf("another node id on the directory: err = %v", err)
	}
	if _, err := ParseFsyncPolicy("sometimes"); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("ParseFsyncPolicy: %v", err)
	}
}

// Messages that waited on disk longer than the max age are dropped at the next
// start like any other: counted and reported.
func TestDiskOutboxMaxAgeAtLoad(t *testing.T) {
	hub := NewMemoryHub()
	hub.setDown(true)
	dir := t.TempDir()
	var dropped atomic.Int64
	// The first process has no max age, so that a slow machine cannot make it
	// drop the messages itself before it stops; the second one has 50 ms.
	cfg := Config{Outbox: OutboxConfig{Dir: dir, MaxAge: -1}, NodeID: "a", Logger: quietLogger()}
	a1, err := New(hub.Transport(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := a1.Publish(context.Background(), "k", payload("a", i)); err != nil {
			t.Fatal(err)
		}
	}
	closeBus(t, a1, 10*time.Millisecond)
	time.Sleep(60 * time.Millisecond) // older than the max age, on disk
	hub.setDown(false)
	cfg.Outbox.MaxAge = 50 * time.Millisecond
	cfg.OnDrop = func(d Drop) { dropped.Add(int64(d.Count)) }
	a2 := newBus(t, hub, cfg)
	// The counter moves first, the hook runs right after.
	testwait.For(t, 10*time.Second, "the max-age drop", func() bool { return a2.Stats().DroppedMaxAge == 3 && dropped.Load() == 3 })
	if n := a2.Status().OutboxLen; n != 0 {
		t.Fatalf("outbox %d", n)
	}
	if got := dropped.Load(); got != 3 {
		t.Fatalf("OnDrop saw %d, want 3", got)
	}
}

// FuzzDiskRecords: whatever a segment holds, reading it never panics and keeps
// only whole records whose checksums match.
func FuzzDiskRecords(f *testing.F) {
	d := &diskLog{}
	rec := func(data []byte) []byte {
		d.buf = d.buf[:0]
		d.buf = binary.BigEndian.AppendUint32(d.buf, uint32(len(data)))
		d.buf = binary.BigEndian.AppendUint32(d.buf, crc32.Checksum(data, crcTable))
		return append(d.buf, data...)
	}
	f.Add([]byte{})
	f.Add(rec([]byte("hello")))
	f.Add(append(rec([]byte("a")), rec([]byte("bc"))...))
	f.Add(append(rec([]byte("a")), 0, 0, 0, 9, 1, 2))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		for _, data := range diskRecords(b) {
			total += diskRecordHead + len(data)
		}
		if total > len(b) {
			t.Fatalf("records cover %d bytes of %d", total, len(b))
		}
	})
}

// TestDiskOutboxPartitionLayout: the disk outbox records the shared and the
// inbox partitions of the transport it was written with (a directory without
// inboxes, as written before them, has only shared ones). A start with
// another number of shared partitions is refused, also when the total is the
// same (its inbox records would go out on shared partitions); another number
// of inboxes is refused while it holds a record for an inbox, and accepted
// without one: the records go out, in order, to their shared partitions.
func TestDiskOutboxPartitionLayout(t *testing.T) {
	fast := BackoffConfig{Base: 10 * time.Millisecond, Cap: 50 * time.Millisecond}
	// write leaves in a new directory 5 messages of node "a", accepted over
	// a hub of shared+inboxes partitions that is down: on key "k", and when
	// toInbox to node "t"'s inbox.
	write := func(t *testing.T, shared, inboxes int, toInbox bool) string {
		t.Helper()
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		hub.setDown(true)
		dir := t.TempDir()
		a, err := New(hub.Transport(), &Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 5; i++ {
			if toInbox {
				err = a.PublishTo(context.Background(), "t", payload("a", i))
			} else {
				err = a.Publish(context.Background(), "k", payload("a", i))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		closeBus(t, a, 10*time.Millisecond)
		return dir
	}
	// start starts node "a" on dir over a hub of shared+inboxes partitions
	// read by node "t": the error of New, or nil once "t" got the 5 loaded
	// messages in order.
	start := func(t *testing.T, dir string, shared, inboxes int) error {
		t.Helper()
		hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: shared, Inboxes: inboxes})
		rcv := newSink()
		newBus(t, hub, Config{NodeID: "t", Backoff: fast}).Receive(rcv.handle)
		a, err := New(hub.Transport(), &Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Backoff: fast, Logger: quietLogger()})
		if err != nil {
			return err
		}
		defer closeBus(t, a, 5*time.Second)
		if got := a.Stats().DiskLoaded; got != 5 {
			t.Fatalf("loaded %d, want 5", got)
		}
		msgs := rcv.wait(t, 5, 30*time.Second)
		payloadsInOrder(t, msgs, "a", 1, 5)
		for _, m := range msgs {
			if m.Partition != partitionOf("k", shared) {
				t.Fatalf("loaded message on partition %d, want the shared partition %d", m.Partition, partitionOf("k", shared))
			}
		}
		return nil
	}
	refused := func(t *testing.T, err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrDisk) || !strings.Contains(err.Error(), want) {
			t.Fatalf("New = %v, want a disk error saying %q", err, want)
		}
	}
	t.Run("inboxes turned on, shared records", func(t *testing.T) {
		dir := write(t, 2, 0, false)
		meta, err := os.ReadFile(filepath.Join(dir, "meta.json"))
		if err != nil || strings.Contains(string(meta), "inboxes") {
			t.Fatalf("meta.json without inboxes: %s, %v", meta, err)
		}
		if err := start(t, dir, 2, 8); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("inboxes changed, shared records", func(t *testing.T) {
		if err := start(t, write(t, 2, 8, false), 2, 16); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("inboxes changed, inbox records", func(t *testing.T) {
		dir := write(t, 2, 8, true)
		_, err := New(NewMemoryHubConfig(MemoryHubConfig{Partitions: 2, Inboxes: 16}).Transport(),
			&Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
		refused(t, err, "written with 8 inboxes and holds 5 messages for inbox partitions, the transport has 16 inboxes")
		_, err = New(NewMemoryHubConfig(MemoryHubConfig{Partitions: 2}).Transport(),
			&Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
		refused(t, err, "written with 8 inboxes and holds 5 messages for inbox partitions, the transport has 0 inboxes")
	})
	t.Run("same total, another split", func(t *testing.T) {
		dir := write(t, 2, 8, true)
		_, err := New(NewMemoryHubConfig(MemoryHubConfig{Partitions: 4, Inboxes: 6}).Transport(),
			&Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
		refused(t, err, "written with 2 shared partitions (and 8 inboxes), the transport has 4 (and 6 inboxes)")
	})
	t.Run("shared changed", func(t *testing.T) {
		dir := write(t, 2, 0, false)
		_, err := New(NewMemoryHubConfig(MemoryHubConfig{Partitions: 3, Inboxes: 8}).Transport(),
			&Config{Outbox: OutboxConfig{Dir: dir}, NodeID: "a", Logger: quietLogger()})
		refused(t, err, "written with 2 shared partitions (and 0 inboxes), the transport has 3 (and 8 inboxes)")
	})
}
