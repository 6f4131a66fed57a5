package redisbus

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// directCount counts the direct frames holding data.
func directCount(data []byte) func([]bus.Frame) int {
	return func(fs []bus.Frame) int {
		n := 0
		for _, f := range fs {
			if f.Partition < 0 && bytes.Equal(f.Data, data) {
				n++
			}
		}
		return n
	}
}

// TestDirectPlaneEarlierVersions: a node's direct channel has its own hash
// tag now ({P:node:<id>}); nodes of earlier versions listen to and publish on
// {P}:node:<id>. Both directions work, and a frame between two current nodes
// arrives once.
func TestDirectPlaneEarlierVersions(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Prefix = "direct-compat"
	tr := newTransport(t, srv.URL(), o)
	sub := startSubscribe(t, tr, "n")
	syncSubscribed(t, tr, "n", sub)
	ctx := context.Background()

	// From a node of an earlier version.
	old := []byte("from an earlier version")
	eventually(t, "a frame on the earlier channel", func(ctx context.Context) error {
		if _, err := srv.Do(ctx, "PUBLISH", "{direct-compat}:node:n", string(old)); err != nil {
			return err
		}
		if !sub.await(200*time.Millisecond, func(fs []bus.Frame) bool { return directCount(old)(fs) > 0 }) {
			return context.DeadlineExceeded
		}
		return nil
	})

	// Between current nodes: once, on the node's own channel.
	cur := []byte("between current nodes")
	other := newTransport(t, srv.URL(), o)
	if err := other.Send(ctx, "n", cur); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "the frame of a current node", func(fs []bus.Frame) bool { return directCount(cur)(fs) == 1 })
	if err := other.Send(ctx, "", []byte("fence")); err != nil {
		t.Fatal(err)
	}
	sub.waitFor(t, "a frame sent after it", func(fs []bus.Frame) bool { return directCount([]byte("fence"))(fs) == 1 })
	if n := directCount(cur)(sub.snapshot()); n != 1 {
		t.Errorf("frame between current nodes arrived %d times, want once", n)
	}

	// To a node of an earlier version, which listens only to {P}:node:<id>.
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan string, 16)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- c.Receive(sctx, c.B().Subscribe().Channel("{direct-compat}:node:old").Build(), func(m rueidis.PubSubMessage) {
			got <- m.Message
		})
	}()
	defer func() { cancel(); <-done }()
	eventually(t, "a frame to a node of an earlier version", func(ctx context.Context) error {
		if err := tr.Send(ctx, "old", []byte("to an earlier version")); err != nil {
			return err
		}
		select {
		case m := <-got:
			if m != "to an earlier version" {
				t.Fatalf("earlier node got %q", m)
			}
			return nil
		case <-time.After(200 * time.Millisecond):
			return context.DeadlineExceeded
		}
	})
}
