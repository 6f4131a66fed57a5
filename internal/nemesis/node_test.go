package nemesis

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/socketio"
)

// gatedAwaiter is a routingAwaiter whose AwaitRouting reports each call and
// returns what the test sends it.
type gatedAwaiter struct {
	called chan string
	answer chan error
}

func (a *gatedAwaiter) AwaitRouting(ctx context.Context, nsp string) error {
	a.called <- nsp
	select {
	case err := <-a.answer:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestJoinAckWaitsForRouting proves that with routing the node program acks a
// join only after AwaitRouting returned for the socket's namespace, and that a
// join AwaitRouting fails is answered as not routed (the session not ready).
func TestJoinAckWaitsForRouting(t *testing.T) {
	aw := &gatedAwaiter{called: make(chan string, 1), answer: make(chan error)}
	srv := socketio.NewServer(nil)
	nsp := srv.Of("/a")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nsp.OnConnection(func(s *socketio.Socket) { serveSocket(nsp, s, aw, log, &reporter{w: io.Discard}, nil) })
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, hs.URL+"/socket.io/", &sioclient.Options{Namespace: "/a", AckTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	type answer struct {
		res string
		err error
	}
	joinAsync := func() chan answer {
		ch := make(chan answer, 1)
		go func() {
			res, err := join(ctx, c, []any{"r1", "r2"})
			ch <- answer{res, err}
		}()
		return ch
	}
	waitCalled := func() {
		t.Helper()
		select {
		case ns := <-aw.called:
			if ns != "/a" {
				t.Errorf("AwaitRouting of %q, want /a", ns)
			}
		case <-ctx.Done():
			t.Fatal("the join never waited for routing")
		}
	}
	got := func(ch chan answer) answer {
		t.Helper()
		select {
		case a := <-ch:
			return a
		case <-ctx.Done():
			t.Fatal("no answer to the join")
			return answer{}
		}
	}

	done := joinAsync()
	waitCalled()
	// The handler is inside AwaitRouting: nothing may have been acked.
	select {
	case a := <-done:
		t.Fatalf("join answered %q (%v) before the cluster routed it", a.res, a.err)
	default:
	}
	aw.answer <- nil
	if a := got(done); a.err != nil || a.res != "ok" {
		t.Fatalf("join answered %q, %v after routing; want ok", a.res, a.err)
	}

	done = joinAsync()
	waitCalled()
	aw.answer <- errors.New("n1 has not applied it")
	if a := got(done); a.err != nil || !strings.HasPrefix(a.res, notRoutedPrefix) {
		t.Fatalf("join answered %q, %v when routing failed; want %q...", a.res, a.err, notRoutedPrefix)
	}
}
