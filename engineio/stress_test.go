package engineio

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestBroadcastOrder sends the same Message values to many WebSocket sessions
// from several goroutines and checks that every client gets every message of
// each sender in order, and that the shared data is never modified.
func TestBroadcastOrder(t *testing.T) {
	const clients, senders, perSender = 20, 4, 50
	rec := newRecorder(false)
	srv := NewServer(rec, &Options{SendQueueSize: senders * perSender * 2})
	ts := serve(t, srv, rec)
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		conns[i] = dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
		readWS(t, conns[i])
	}
	rec.waitFor(t, "sessions", func(r *recorder) bool { return len(r.opened) == clients })
	rec.mu.Lock()
	sessions := append([]*Session(nil), rec.opened...)
	rec.mu.Unlock()

	msgs := make([][]Message, senders)
	for s := range msgs {
		for i := range perSender {
			msgs[s] = append(msgs[s], Message{Data: []byte(fmt.Sprintf("%d:%d", s, i))})
		}
	}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for _, m := range msgs[s] {
				for _, sess := range sessions {
					if err := sess.Send(m); err != nil {
						t.Errorf("Send: %v", err)
						return
					}
				}
			}
		})
	}
	for _, c := range conns {
		wg.Go(func() {
			next := make([]int, senders)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			for range senders * perSender {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Errorf("read: %v", err)
					return
				}
				var s, i int
				if _, err := fmt.Sscanf(string(b), "4%d:%d", &s, &i); err != nil || s >= senders || next[s] != i {
					t.Errorf("got %q, want 4%d:%d", b, s, next[s])
					return
				}
				next[s]++
			}
		})
	}
	wg.Wait()
	for s := range msgs {
		for i, m := range msgs[s] {
			if string(m.Data) != strconv.Itoa(s)+":"+strconv.Itoa(i) {
				t.Fatalf("message data modified: %q", m.Data)
			}
		}
	}
}

// TestShutdownUnresponsiveWebSocket checks that Shutdown returns at its deadline
// and cuts a hijacked connection whose client never answers the close frame.
func TestShutdownUnresponsiveWebSocket(t *testing.T) {
	rec := newRecorder(false)
	srv := NewServer(rec, nil)
	ts := serve(t, srv, rec)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	readWS(t, c)
	// The client does not read any more, so it never answers the close frame.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("client saw %v, want the close frame 1001", err)
	}
	srv.mu.Lock()
	n := len(srv.conns)
	srv.mu.Unlock()
	if n != 0 {
		t.Errorf("%d connections left", n)
	}
}
