package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// failFast bounds a call that must fail because Redis is unreachable: far above
// the dial and write timeouts these tests set, far below a hang.
const failFast = 10 * time.Second

// faultOpts are short timeouts so broken connections are noticed quickly.
func faultOpts(kind Kind) Options {
	return Options{
		Kind:         kind,
		Partitions:   4,
		BlockTimeout: 300 * time.Millisecond,
		DialTimeout:  time.Second,
		WriteTimeout: time.Second,
	}
}

// newTransport makes a transport for url, closed when the test ends.
func newTransport(t testing.TB, url string, o Options) bus.Transport {
	t.Helper()
	o.URL = url
	tr, err := NewTransport(&o)
	if err != nil {
		t.Fatalf("NewTransport: %v", err)
	}
	t.Cleanup(func() { closeTransport(t, tr) })
	return tr
}

// expectUnavailable runs every call of tr and checks each fails with
// ErrUnavailable within failFast.
func expectUnavailable(t *testing.T, tr bus.Transport) {
	t.Helper()
	calls := map[string]func(ctx context.Context) error{
		"Publish":   func(ctx context.Context) error { return tr.Publish(ctx, numbered(0, 3, tr.Partitions())) },
		"Send":      func(ctx context.Context) error { return tr.Send(ctx, "", []byte("x")) },
		"Ping":      func(ctx context.Context) error { return tr.Ping(ctx) },
		"Subscribe": func(ctx context.Context) error { return tr.Subscribe(ctx, "n", func(bus.Frame) {}) },
	}
	for name, call := range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 2*failFast)
		start := time.Now()
		err := call(ctx)
		took := time.Since(start)
		cancel()
		if !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s while Redis is down: %v, want ErrUnavailable", name, err)
		}
		if took > failFast {
			t.Errorf("%s took %v to fail", name, took)
		}
	}
}

// eventually retries op until it succeeds, at most waitLong.
func eventually(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	deadline := time.NewTimer(waitLong)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := op(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("%s: still failing after %v: %v", what, waitLong, err)
		}
	}
}

func TestRedisDownAtStart(t *testing.T) {
	t.Parallel()
	for _, kind := range []Kind{Streams, PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			srv := redistest.Standalone(t)
			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
			tr := newTransport(t, srv.URL(), faultOpts(kind))
			expectUnavailable(t, tr)

			ctx := context.Background()
			if err := srv.Start(ctx); err != nil {
				t.Fatal(err)
			}
			eventually(t, "Ping after Redis started", tr.Ping)
			sub := startSubscribe(t, tr, "n")
			syncSubscribed(t, tr, "n", sub)
			publish(t, tr, numbered(0, 20, tr.Partitions()))
			sub.waitFor(t, "frames", countNumbered(0, 20))
			checkNumbered(t, sub.snapshot(), 0, 20, tr.Partitions())
		})
	}
}

func TestRedisKilledAndRestarted(t *testing.T) {
	t.Parallel()
	for _, kind := range []Kind{Streams, PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			srv := redistest.Standalone(t, redistest.WithAOF())
			o := faultOpts(kind)
			pub, subT := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)
			sub := startSubscribe(t, subT, "s")
			syncSubscribed(t, pub, "s", sub)
			publish(t, pub, numbered(0, 10, o.Partitions))
			sub.waitFor(t, "first frames", countNumbered(0, 10))

			if err := srv.Kill(); err != nil {
				t.Fatal(err)
			}
			if err := sub.waitEnded(t, failFast); err == nil {
				t.Error("Subscribe returned nil when Redis died")
			}
			expectUnavailable(t, pub)

			if err := srv.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			eventually(t, "Publish after restart", func(ctx context.Context) error {
				return pub.Publish(ctx, numbered(10, 20, o.Partitions))
			})
			sub2 := startSubscribe(t, subT, "s")
			syncSubscribed(t, pub, "s", sub2)
			// Another of the client's connections may still be one the
			// restart broke: its first command fails, unwritten.
			eventually(t, "Publish after resubscribing", func(ctx context.Context) error {
				return pub.Publish(ctx, numbered(20, 30, o.Partitions))
			})
			sub2.waitFor(t, "frames after restart", countNumbered(20, 30))
			if kind == Streams {
				// The AOF kept 10..19, written before the new subscription.
				sub2.waitFor(t, "frames published before resubscribing", countNumbered(10, 20))
				checkNumbered(t, append(sub.snapshot(), sub2.snapshot()...), 0, 30, o.Partitions)
			} else {
				checkNumbered(t, sub2.snapshot(), 20, 30, o.Partitions)
			}
		})
	}
}

// TestStreamsResumeAfterCut cuts the subscriber's connection, publishes while it
// is down, and checks that the next Subscribe delivers exactly what it missed.
func TestStreamsResumeAfterCut(t *testing.T) {
	srv := redistest.Standalone(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	o := faultOpts(Streams)
	pub := newTransport(t, srv.URL(), o)
	o.ReadCount = 16 // the backlog takes several reads
	subT := newTransport(t, "redis://"+proxy.Addr(), o)

	sub := startSubscribe(t, subT, "s")
	syncSubscribed(t, pub, "s", sub)
	publish(t, pub, numbered(0, 100, o.Partitions))
	sub.waitFor(t, "frames before the cut", countNumbered(0, 100))

	proxy.Cut()
	if err := sub.waitEnded(t, failFast); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Subscribe after the cut: %v, want ErrUnavailable", err)
	}
	for i := 100; i < 300; i += 20 {
		publish(t, pub, numbered(i, i+20, o.Partitions))
	}
	// Still cut: a new Subscribe fails at once.
	ctx, cancel := context.WithTimeout(context.Background(), 2*failFast)
	err := subT.Subscribe(ctx, "s", func(bus.Frame) { t.Error("frame delivered while cut") })
	cancel()
	if err == nil {
		t.Error("Subscribe through a cut link returned nil")
	}

	proxy.Restore()
	sub2 := startSubscribe(t, subT, "s")
	sub2.waitFor(t, "frames published while cut", countNumbered(100, 300))
	publish(t, pub, numbered(300, 310, o.Partitions))
	sub2.waitFor(t, "frames after the cut", countNumbered(300, 310))
	checkNumbered(t, sub2.snapshot(), 100, 310, o.Partitions)
	checkNumbered(t, append(sub.snapshot(), sub2.snapshot()...), 0, 310, o.Partitions)
}

// TestBlackhole checks that a connection that stops answering without closing
// fails Subscribe and every call within bounded time instead of hanging.
func TestBlackhole(t *testing.T) {
	t.Parallel()
	for _, kind := range []Kind{Streams, PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			srv := redistest.Standalone(t)
			proxy := redistest.NewProxy(t, srv.Addr())
			o := faultOpts(kind)
			tr := newTransport(t, "redis://"+proxy.Addr(), o)
			sub := startSubscribe(t, tr, "s")
			syncSubscribed(t, tr, "s", sub)

			proxy.Blackhole()
			if err := sub.waitEnded(t, failFast); err == nil {
				t.Error("Subscribe returned nil on a dead link")
			}
			for name, call := range map[string]func(ctx context.Context) error{
				"Publish": func(ctx context.Context) error { return tr.Publish(ctx, numbered(0, 4, o.Partitions)) },
				"Send":    func(ctx context.Context) error { return tr.Send(ctx, "", []byte("x")) },
				"Ping":    tr.Ping,
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				start := time.Now()
				err := call(ctx)
				took := time.Since(start)
				cancel()
				if err == nil {
					t.Errorf("%s through a blackhole succeeded", name)
				}
				if took > failFast {
					t.Errorf("%s took %v through a blackhole", name, took)
				}
			}

			proxy.Restore()
			eventually(t, "Ping after the link healed", tr.Ping)
			sub2 := startSubscribe(t, tr, "s")
			syncSubscribed(t, tr, "s", sub2)
			publish(t, tr, numbered(1000, 1010, o.Partitions))
			sub2.waitFor(t, "frames after the blackhole", countNumbered(1000, 1010))
		})
	}
}

// TestPubSubLosesWhileDown documents the PubSub transport: frames published
// while its subscription is down are not delivered later.
func TestPubSubLosesWhileDown(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(PubSub)
	tr := newTransport(t, srv.URL(), o)
	sub := startSubscribe(t, tr, "s")
	syncSubscribed(t, tr, "s", sub)
	if err := sub.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe after cancel: %v, want context.Canceled", err)
	}
	publish(t, tr, numbered(0, 10, o.Partitions))
	sub2 := startSubscribe(t, tr, "s")
	syncSubscribed(t, tr, "s", sub2)
	publish(t, tr, numbered(10, 20, o.Partitions))
	sub2.waitFor(t, "frames after resubscribing", countNumbered(10, 20))
	for _, f := range sub2.snapshot() {
		if i, ok := frameNumber(f); ok && i < 10 {
			t.Errorf("frame %q published while unsubscribed was delivered", f.Data)
		}
	}
}

func TestWaitReplicas(t *testing.T) {
	t.Parallel()
	primary := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.WaitReplicas = 1
	o.WaitTimeout = 200 * time.Millisecond
	tr := newTransport(t, primary.URL(), o)

	ctx := context.Background()
	err := tr.Publish(ctx, numbered(0, 8, o.Partitions))
	if !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Publish with WaitReplicas=1 and no replica: %v, want ErrNotReplicated", err)
	}

	replica := redistest.Standalone(t)
	if _, err := primary.Do(ctx, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatal(err)
	}
	host, port := "127.0.0.1", strconv.Itoa(primary.Port())
	if _, err := replica.Do(ctx, "REPLICAOF", host, port); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	eventually(t, "replica in sync", func(ctx context.Context) error {
		info, err := primary.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if info["connected_slaves"] != "1" {
			return errors.New("connected_slaves=" + info["connected_slaves"])
		}
		return nil
	})
	eventually(t, "Publish with one replica acknowledging", func(ctx context.Context) error {
		return tr.Publish(ctx, numbered(8, 16, o.Partitions))
	})
	// What WAIT confirmed is on the replica.
	n, err := replica.Do(ctx, "XLEN", StreamKey(DefaultPrefix, 0))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := n.(int64); got < 2 {
		t.Errorf("replica stream holds %v entries, want at least 2", n)
	}
}

// TestClientKill checks that a subscription Redis disconnects (CLIENT KILL)
// ends Subscribe with an error, and that the streams transport resumes.
func TestClientKill(t *testing.T) {
	t.Parallel()
	for _, kind := range bothKinds {
		t.Run(kind.String(), func(t *testing.T) {
			srv := redistest.Standalone(t)
			o := faultOpts(kind)
			pub, subT := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)
			sub := startSubscribe(t, subT, "s")
			syncSubscribed(t, pub, "s", sub)
			ctx := context.Background()
			// Pub/sub connections for both kinds; for streams also the others
			// (the blocked XREAD and the shared one).
			if _, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", "pubsub"); err != nil {
				t.Fatal(err)
			}
			if kind == Streams {
				if _, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"); err != nil {
					t.Fatal(err)
				}
			}
			if err := sub.waitEnded(t, failFast); err == nil {
				t.Error("Subscribe returned nil after CLIENT KILL")
			}
			eventually(t, "Publish after CLIENT KILL", func(ctx context.Context) error {
				return pub.Publish(ctx, numbered(0, 20, o.Partitions))
			})
			sub2 := startSubscribe(t, subT, "s")
			if kind == Streams {
				sub2.waitFor(t, "frames published between kill and resubscribe", countNumbered(0, 20))
				checkNumbered(t, sub2.snapshot(), 0, 20, o.Partitions)
			} else {
				syncSubscribed(t, pub, "s", sub2)
			}
		})
	}
}

// TestOutputBufferLimit has Redis drop a subscriber that does not keep up
// (client-output-buffer-limit pubsub): Subscribe must end with an error once its
// deliver returns, not go on silently missing messages.
func TestOutputBufferLimit(t *testing.T) {
	srv := redistest.Standalone(t, redistest.WithConfig("client-output-buffer-limit pubsub 256kb 128kb 1"))
	o := faultOpts(PubSub)
	pub, subT := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)

	release := make(chan struct{})
	var blocked atomicBool
	col := newCollector()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- subT.Subscribe(ctx, "s", func(f bus.Frame) {
			col.deliver(f)
			if string(f.Data) == "block" && blocked.setOnce() {
				<-release
			}
		})
	}()
	sub := &subscription{collector: col, cancel: cancel, done: done}
	syncSubscribed(t, pub, "s", sub)
	publish(t, pub, []bus.Frame{{Partition: 0, Data: []byte("block")}})
	col.waitFor(t, "the blocking frame", func(fs []bus.Frame) bool {
		for _, f := range fs {
			if string(f.Data) == "block" {
				return true
			}
		}
		return false
	})
	big := make([]byte, 64<<10)
	for i := 0; i < 512; i++ { // 32 MiB: more than the socket buffers and the limit
		publish(t, pub, []bus.Frame{{Partition: 0, Data: big}})
	}
	eventually(t, "Redis dropping the slow subscriber", func(ctx context.Context) error {
		list, err := srv.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub")
		if err != nil {
			return err
		}
		if s, _ := list.(string); strings.TrimSpace(s) != "" {
			return fmt.Errorf("still subscribed: %s", s)
		}
		return nil
	})
	close(release)
	if err := sub.waitEnded(t, failFast); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe of a client Redis dropped: %v, want a connection error", err)
	}
}

type atomicBool struct{ v atomic.Bool }

func (b *atomicBool) setOnce() bool { return b.v.CompareAndSwap(false, true) }
