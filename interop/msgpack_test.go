package interop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/parser"
	"github.com/durasock/durasock/socketio"
)

var clusterPrefix atomic.Uint64

// msgpackNode is one socketio server of the msgpack test, on its own cluster
// adapter, with the handlers js/msgpack.mjs expects.
type msgpackNode struct {
	srv *socketio.Server
	url string

	mu      sync.Mutex
	reasons map[string]string // socket id -> disconnect reason
	errs    []error
}

func (n *msgpackNode) fail(err error) {
	n.mu.Lock()
	n.errs = append(n.errs, err)
	n.mu.Unlock()
}

func startMsgpackNode(t *testing.T, redisURL, prefix, id string, p parser.Parser) *msgpackNode {
	t.Helper()
	log := slog.New(slog.NewTextHandler(&testWriter{t: t, prefix: id}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	b, err := redisbus.Open(context.Background(), redisURL, &redisbus.Options{
		Prefix: prefix,
		Bus:    bus.Config{NodeID: id, Logger: log},
	})
	if err != nil {
		t.Fatalf("redisbus.Open: %v", err)
	}
	c, err := cluster.New(b, &cluster.Options{Logger: log})
	if err != nil {
		t.Fatalf("cluster.New: %v", err)
	}
	n := &msgpackNode{reasons: make(map[string]string)}
	n.srv = socketio.NewServer(&socketio.Options{
		Parser:   p,
		Adapter:  c.Adapter,
		Recovery: &socketio.RecoveryOptions{MaxDisconnectionDuration: time.Minute},
		Options:  engineio.Options{Logger: log},
	})
	handlers := func(s *socketio.Socket) {
		ctx := context.Background()
		s.OnDisconnect(func(reason string) {
			n.mu.Lock()
			n.reasons[s.ID()] = reason
			n.mu.Unlock()
		})
		ack := func(e *socketio.Event, args ...any) {
			if err := e.Ack(args...); err != nil && !errors.Is(err, socketio.ErrDisconnected) {
				n.fail(fmt.Errorf("ack of %s: %w", e.Name, err))
			}
		}
		s.On("whoami", func(e *socketio.Event) { ack(e, s.Namespace().Name(), s.ID()) })
		s.On("echo", func(e *socketio.Event) { ack(e, e.Values()...) })
		s.On("measure", func(e *socketio.Event) {
			var m struct {
				Data []byte `json:"data"`
			}
			if err := e.Bind(&m); err != nil {
				n.fail(fmt.Errorf("measure: %w", err))
				return
			}
			sum := 0
			for _, x := range m.Data {
				sum += int(x)
			}
			ack(e, len(m.Data), sum)
		})
		s.On("join", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				n.fail(err)
				return
			}
			s.Join(room)
			ack(e, "ok")
		})
		s.On("relay", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				n.fail(err)
				return
			}
			if err := s.Namespace().To(room).Emit(ctx, "relayed", e.Values()[1:]...); err != nil {
				n.fail(err)
			}
			ack(e, "ok")
		})
		s.On("relay-seq", func(e *socketio.Event) {
			var room string
			var seq int
			if err := e.Bind(&room, &seq); err != nil {
				n.fail(err)
				return
			}
			if err := s.Namespace().To(room).Emit(ctx, "seq", seq); err != nil {
				n.fail(err)
			}
			ack(e, "ok")
		})
		s.On("gather", func(e *socketio.Event) {
			var room string
			if err := e.Bind(&room); err != nil {
				n.fail(err)
				return
			}
			replies, err := s.Namespace().To(room).Timeout(10*time.Second).EmitWithAck(ctx, "ping-all", 41)
			if err != nil {
				n.fail(fmt.Errorf("gather: %w", err))
			}
			var ids []string
			for _, r := range replies {
				var id string
				var next int
				var raw []byte
				// The third argument is binary, and stays binary.
				if err := r.Args.Bind(&id, &next, &raw); err != nil || next != 42 || len(raw) == 0 {
					n.fail(fmt.Errorf("gather: reply %q %d bytes: %v", r.Args.JSON, len(raw), err))
					continue
				}
				ids = append(ids, id)
			}
			ack(e, len(replies), ids)
		})
	}
	n.srv.OnConnection(handlers)
	n.srv.Of("/chat").OnConnection(handlers)
	hs := httptest.NewServer(n.srv)
	n.url = hs.URL
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.srv.Shutdown(ctx); err != nil {
			t.Errorf("%s: Shutdown: %v", id, err)
		}
		hs.Close()
		if err := c.Close(ctx); err != nil {
			t.Errorf("%s: cluster close: %v", id, err)
		}
		if err := b.Close(ctx); err != nil {
			t.Errorf("%s: bus close: %v", id, err)
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, err := range n.errs {
			t.Errorf("%s: %v", id, err)
		}
	})
	return n
}

// testWriter sends log lines to t.Log.
type testWriter struct {
	t      *testing.T
	prefix string
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s: %s", w.prefix, strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// TestMsgpackClientCluster runs js/msgpack.mjs (socket.io-client 4.8 with
// socket.io-msgpack-parser 3.0) against three servers on one Redis: A and B
// speak msgpack, C JSON. See the script for what it checks.
func TestMsgpackClientCluster(t *testing.T) {
	node := requireNode(t)
	redis := redistest.Standalone(t)
	prefix := fmt.Sprintf("durasock-interop-msgpack-%d", clusterPrefix.Add(1))
	a := startMsgpackNode(t, redis.URL(), prefix, "A", parser.Msgpack)
	b := startMsgpackNode(t, redis.URL(), prefix, "B", parser.Msgpack)
	c := startMsgpackNode(t, redis.URL(), prefix, "C", parser.JSON)

	ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
	defer cancel()
	cmd := command(ctx, a.url, node, "js/msgpack.mjs")
	cmd.Env = append(cmd.Env, "URL_A="+a.url, "URL_B="+b.url, "URL_C="+c.url)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "PASS msgpack") {
		t.Fatalf("msgpack.mjs failed: %v\n%s", err, out.String())
	}
	// Bad msgpack and bad JSON close their connections with the same reason.
	var bad []string
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(line, "BAD "); ok {
			if err := json.Unmarshal([]byte(rest), &bad); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(bad) != 2 {
		t.Fatalf("no BAD line in:\n%s", out.String())
	}
	reason := func(n *msgpackNode, id string) string {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n.mu.Lock()
			r := n.reasons[id]
			n.mu.Unlock()
			if r != "" || time.Now().After(deadline) {
				return r
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if got := reason(a, bad[0]); got != socketio.ReasonParseError {
		t.Errorf("bad msgpack: reason %q, want %q", got, socketio.ReasonParseError)
	}
	if got := reason(c, bad[1]); got != socketio.ReasonParseError {
		t.Errorf("bad JSON: reason %q, want %q", got, socketio.ReasonParseError)
	}
	t.Logf("%s", lastLine(out.String()))
}

// TestClientMsgpack runs the binary, ack and room scenarios of the JSON client
// tests with socket.io-msgpack-parser against a msgpack server.
func TestClientMsgpack(t *testing.T) {
	node := requireNode(t)
	url := newContract(&socketio.Options{Parser: parser.Msgpack}).start(t)
	for _, script := range []string{"binary", "acks", "rooms", "auth"} {
		for _, transport := range []string{"polling", "websocket"} {
			if script == "auth" && transport == "polling" {
				continue // auth.mjs takes no transport
			}
			t.Run(script+"/"+transport, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), scenarioTimeout)
				defer cancel()
				cmd := command(ctx, url, node, "js/"+script+".mjs", transport)
				cmd.Env = append(cmd.Env, "SIO_PARSER=msgpack")
				var out syncBuffer
				cmd.Stdout, cmd.Stderr = &out, &out
				if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "PASS ") {
					t.Fatalf("%s.mjs %s with msgpack failed: %v\n%s", script, transport, err, out.String())
				}
				t.Logf("%s", lastLine(out.String()))
			})
		}
	}
}
