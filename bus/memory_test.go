package bus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// collect runs Subscribe on t in a goroutine and sends every frame to the returned
// channel. stop ends the subscription and returns Subscribe's error.
func collect(t *testing.T, tr Transport, node string) (frames <-chan Frame, stop func() error) {
	t.Helper()
	ch := make(chan Frame, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tr.Subscribe(ctx, node, func(f Frame) { ch <- f })
	}()
	var stopped bool
	var err error
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return ch, stop
}

func recvFrames(t *testing.T, ch <-chan Frame, n int) []Frame {
	t.Helper()
	var out []Frame
	deadline := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case f := <-ch:
			out = append(out, f)
		case <-deadline:
			t.Fatalf("received %d frames, want %d", len(out), n)
		}
	}
	return out
}

func expectNoFrame(t *testing.T, ch <-chan Frame) {
	t.Helper()
	select {
	case f := <-ch:
		t.Fatalf("unexpected frame %q", f.Data)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestMemoryHubOrderAndResume(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 2})
	pub, sub := hub.Transport(), hub.Transport()
	defer pub.Close()
	defer sub.Close()
	ctx := context.Background()
	if got := sub.Partitions(); got != 2 {
		t.Fatalf("Partitions = %d, want 2", got)
	}
	// Published before the first Subscribe: still delivered.
	if err := pub.Publish(ctx, []Frame{{Partition: 0, Data: []byte("a0")}, {Partition: 1, Data: []byte("b0")}}); err != nil {
		t.Fatal(err)
	}
	ch, stop := collect(t, sub, "sub")
	got := recvFrames(t, ch, 2)
	if stop() == nil {
		t.Fatal("Subscribe returned nil after cancel, want ctx error")
	}
	// Published while not subscribed: delivered by the next Subscribe, in order.
	for i := 1; i <= 300; i++ {
		if err := pub.Publish(ctx, []Frame{{Partition: i % 2, Data: fmt.Appendf(nil, "%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	ch, _ = collect(t, sub, "sub")
	got = append(got, recvFrames(t, ch, 300)...)
	last := map[int]int{0: 0, 1: 0}
	for _, f := range got[2:] {
		var n int
		fmt.Sscan(string(f.Data), &n)
		if n <= last[f.Partition] || n%2 != f.Partition {
			t.Fatalf("frame %d on partition %d after %d", n, f.Partition, last[f.Partition])
		}
		last[f.Partition] = n
	}
	expectNoFrame(t, ch)
	if err := pub.Publish(ctx, []Frame{{Partition: 2, Data: nil}}); err == nil {
		t.Fatal("Publish to partition 2 of 2 succeeded")
	}
}

func TestMemoryHubFaults(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1})
	pub, sub := hub.Transport(), hub.Transport()
	defer pub.Close()
	defer sub.Close()
	ctx := context.Background()

	subErr := make(chan error, 1)
	go func() { subErr <- sub.Subscribe(ctx, "sub", func(Frame) {}) }()
	if err := waitSubs(hub, 1); err != nil {
		t.Fatal(err)
	}
	hub.setDown(true)
	select {
	case err := <-subErr:
		if !errors.Is(err, errHubDown) {
			t.Fatalf("Subscribe while down = %v, want errHubDown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return when the hub went down")
	}
	if err := sub.Subscribe(ctx, "sub", func(Frame) {}); !errors.Is(err, errHubDown) {
		t.Fatalf("Subscribe on a down hub = %v, want errHubDown", err)
	}
	if err := pub.Publish(ctx, []Frame{{Data: []byte("x")}}); !errors.Is(err, errHubDown) {
		t.Fatalf("Publish while down = %v", err)
	}
	if err := pub.Send(ctx, "", []byte("x")); !errors.Is(err, errHubDown) {
		t.Fatalf("Send while down = %v", err)
	}
	if err := pub.Ping(ctx); !errors.Is(err, errHubDown) {
		t.Fatalf("Ping while down = %v", err)
	}
	hub.setDown(false)
	if err := pub.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	// failNextWrites: the frame is stored although Publish fails.
	hub.failNextWrites(1)
	if err := pub.Publish(ctx, []Frame{{Data: []byte("1")}}); err == nil {
		t.Fatal("Publish after failNextWrites succeeded")
	}
	// lose: stored frames vanish; later ones arrive.
	if hub.kept(0) != 1 {
		t.Fatalf("Len = %d, want 1", hub.kept(0))
	}
	hub.lose()
	if err := pub.Publish(ctx, []Frame{{Data: []byte("2")}}); err != nil {
		t.Fatal(err)
	}
	ch, _ := collect(t, sub, "sub")
	if f := recvFrames(t, ch, 1)[0]; string(f.Data) != "2" {
		t.Fatalf("got %q after lose, want 2", f.Data)
	}

	// Direct frames: to one node, or to all.
	ch2, _ := collect(t, pub, "pub")
	if err := waitSubs(hub, 2); err != nil {
		t.Fatal(err)
	}
	if err := pub.Send(ctx, "sub", []byte("d1")); err != nil {
		t.Fatal(err)
	}
	if f := recvFrames(t, ch, 1)[0]; string(f.Data) != "d1" || f.Partition != -1 {
		t.Fatalf("direct frame = %+v", f)
	}
	if err := sub.Send(ctx, "", []byte("d2")); err != nil {
		t.Fatal(err)
	}
	recvFrames(t, ch, 1)
	// pub's own subscription also sees the reliable plane ("2"), then "d2".
	if f := recvFrames(t, ch2, 2)[1]; string(f.Data) != "d2" || f.Partition != -1 {
		t.Fatalf("broadcast direct frame = %+v", f)
	}

	// breakSubscriptions: silent, no error, nothing delivered.
	hub.breakSubscriptions()
	if err := pub.Publish(ctx, []Frame{{Data: []byte("3")}}); err != nil {
		t.Fatal(err)
	}
	expectNoFrame(t, ch)
	ch, _ = collect(t, sub, "sub")
	if f := recvFrames(t, ch, 1)[0]; string(f.Data) != "3" {
		t.Fatalf("after rebuild got %q, want 3", f.Data)
	}

	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
}

func TestMemoryHubTrim(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 1, MaxLen: 8})
	pub := hub.Transport()
	sub := hub.Transport()
	defer pub.Close()
	defer sub.Close()
	for i := range 100 {
		if err := pub.Publish(context.Background(), []Frame{{Data: fmt.Appendf(nil, "%d", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := hub.kept(0); n < 8 || n > 10 {
		t.Fatalf("Len = %d, want about 8", n)
	}
	ch, _ := collect(t, sub, "sub")
	got := recvFrames(t, ch, hub.kept(0))
	if string(got[len(got)-1].Data) != "99" {
		t.Fatalf("last frame %q, want 99", got[len(got)-1].Data)
	}
}

// waitSubs waits until n Subscribe calls are active on hub.
func waitSubs(hub *MemoryHub, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		hub.mu.Lock()
		got := len(hub.subs)
		changed := hub.changed
		hub.mu.Unlock()
		if got >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d subscriptions, want %d", got, n)
		}
		select {
		case <-changed:
		case <-time.After(time.Millisecond):
		}
	}
}

// TestMemoryHubDirectQueueBound: a subscription that does not take its direct
// frames keeps memoryDirectQueue of them; the hub counts the ones it loses.
func TestMemoryHubDirectQueueBound(t *testing.T) {
	hub := NewMemoryHub()
	a, b := hub.Transport(), hub.Transport()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	first, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	var once sync.Once
	go func() {
		done <- a.Subscribe(ctx, "a", func(Frame) {
			once.Do(func() { close(first) })
			<-release // the subscriber stops taking frames
		})
	}()
	// The first frame reaches the subscriber, which stops in deliver.
	testwait.For(t, 10*time.Second, "the subscription", func() bool {
		if err := b.Send(ctx, "a", []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case <-first:
			return true
		default:
			return false
		}
	})
	for range memoryDirectQueue + 3 {
		if err := b.Send(ctx, "a", []byte("y")); err != nil {
			t.Fatal(err)
		}
	}
	if n := hub.droppedDirect(); n < 3 {
		t.Errorf("droppedDirect = %d, want at least 3", n)
	}
	close(release)
	cancel()
	<-done
}
