package engineio

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// Reader modes of the idle tests: "parked" uses the poller, "goroutine" is the
// portable path where every session keeps a reader goroutine.
var readerModes = []string{"parked", "goroutine"}

var errPollerOff = errors.New("engineio: poller off for this test")

// newModeServer returns a served echo server in the given reader mode.
func newModeServer(t *testing.T, mode string, opts *Options) *testServer {
	t.Helper()
	rec := newRecorder(true)
	srv := NewServer(rec, opts)
	if mode == "goroutine" {
		srv.pollErr = errPollerOff
	}
	return serve(t, srv, rec)
}

// connCounts returns how many hijacked connections the server tracks and how
// many of them are parked.
func connCounts(srv *Server) (tracked, parked int) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for _, c := range srv.conns {
		if c.reader.Load() == readerParked {
			parked++
		}
	}
	return len(srv.conns), parked
}

// waitConns waits until the server tracks n connections of which parked are
// parked.
func waitConns(t *testing.T, srv *Server, n, parked int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		gotN, gotParked := connCounts(srv)
		if gotN == n && gotParked == parked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections: %d tracked, %d parked; want %d and %d", gotN, gotParked, n, parked)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantParked is how many of n idle connections are parked in mode.
func wantParked(mode string, n int) int {
	if mode == "parked" {
		return n
	}
	return 0
}

func dialMany(t *testing.T, ts *testServer, n int) []*websocket.Conn {
	t.Helper()
	conns, _ := dialManySIDs(t, ts, n)
	return conns
}

// dialManySIDs is dialMany that also returns each connection's sid (OnOpen
// may run in another order than the clients get their open packets).
func dialManySIDs(t *testing.T, ts *testServer, n int) ([]*websocket.Conn, []string) {
	t.Helper()
	conns := make([]*websocket.Conn, n)
	sids := make([]string, n)
	for i := range conns {
		conns[i] = dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
		_, open := readWS(t, conns[i])
		sids[i] = parseOpen(t, open).SID
	}
	return conns, sids
}

// TestIdleThenActive opens many connections, lets them go idle, then has all
// of them send at once, twice, and checks every echo and that the connections
// are parked again in between.
func TestIdleThenActive(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			const clients, perClient = 100, 5
			ts := newModeServer(t, mode, nil)
			conns := dialMany(t, ts, clients)
			waitConns(t, ts.eio, clients, wantParked(mode, clients))
			for round := range 2 {
				var wg sync.WaitGroup
				for i, c := range conns {
					wg.Go(func() {
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
						defer cancel()
						for j := range perClient {
							msg := fmt.Sprintf("4r%d c%d m%d", round, i, j)
							if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
								t.Errorf("write: %v", err)
								return
							}
						}
						for j := range perClient {
							want := fmt.Sprintf("4r%d c%d m%d", round, i, j)
							if _, b, err := c.Read(ctx); err != nil || string(b) != want {
								t.Errorf("read %q, %v; want %q", b, err, want)
								return
							}
						}
					})
				}
				wg.Wait()
				waitConns(t, ts.eio, clients, wantParked(mode, clients))
			}
			ts.rec.mu.Lock()
			got := len(ts.rec.messages)
			ts.rec.mu.Unlock()
			if got != 2*clients*perClient {
				t.Errorf("server got %d messages, want %d", got, 2*clients*perClient)
			}
		})
	}
}

// TestIdlePeerClose closes idle connections from the client side, with and
// without a close frame, and checks that the sessions end and the connections
// are released.
func TestIdlePeerClose(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			ts := newModeServer(t, mode, nil)
			conns, sids := dialManySIDs(t, ts, 3)
			waitConns(t, ts.eio, 3, wantParked(mode, 3))

			if err := conns[0].CloseNow(); err != nil { // TCP close, no close frame
				t.Fatal(err)
			}
			if err := conns[1].Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Fatalf("close handshake: %v", err)
			}
			for _, sid := range sids[:2] {
				ts.rec.waitFor(t, "OnClose", func(r *recorder) bool { _, ok := r.closed[sid]; return ok })
				if reason, _ := ts.rec.closeReason(sid); reason != ReasonTransportClose {
					t.Errorf("reason = %q, want %q", reason, ReasonTransportClose)
				}
			}
			waitConns(t, ts.eio, 1, wantParked(mode, 1))
			// The survivor still works.
			writeWS(t, conns[2], websocket.MessageText, "4still here")
			if _, got := readWS(t, conns[2]); got != "4still here" {
				t.Errorf("echo = %q", got)
			}
		})
	}
}

// TestIdleShutdown shuts the server down while its connections are parked:
// every client gets the close frame 1001, Shutdown returns in time, and no
// goroutine (the poller's included) is left.
func TestIdleShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			const clients = 20
			rec := newRecorder(false)
			srv := NewServer(rec, nil)
			if mode == "goroutine" {
				srv.pollErr = errPollerOff
			}
			hs := newHTTPTestServer(srv)
			defer hs.Close()
			ts := &testServer{Server: hs, eio: srv, rec: rec}
			conns := make([]*websocket.Conn, clients)
			for i := range conns {
				c, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(ts.URL, "http")+"/?EIO=4&transport=websocket", nil)
				if err != nil {
					t.Fatal(err)
				}
				defer c.CloseNow()
				readWS(t, c)
				conns[i] = c
			}
			waitConns(t, srv, clients, wantParked(mode, clients))
			errs := make(chan error, clients)
			for _, c := range conns {
				go func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					_, _, err := c.Read(ctx)
					errs <- err
				}()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			for range clients {
				if err := <-errs; websocket.CloseStatus(err) != websocket.StatusGoingAway {
					t.Errorf("client saw %v, want the close frame 1001", err)
				}
			}
			if n, _ := connCounts(srv); n != 0 {
				t.Errorf("%d connections left", n)
			}
			srv.mu.Lock()
			p := srv.poll
			srv.mu.Unlock()
			if p != nil {
				t.Error("poller still set after Shutdown")
			}
			for _, sess := range rec.opened {
				if reason, _ := rec.closeReason(sess.ID()); reason != ReasonServerShutdown {
					t.Errorf("reason = %q", reason)
				}
			}
		})
	}
}

// TestIdleClose closes the server at once while its connections are parked.
func TestIdleClose(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			ts := newModeServer(t, mode, nil)
			conns := dialMany(t, ts, 10)
			waitConns(t, ts.eio, 10, wantParked(mode, 10))
			if err := ts.eio.Close(); err != nil {
				t.Fatal(err)
			}
			if n, _ := connCounts(ts.eio); n != 0 {
				t.Errorf("%d connections left after Close", n)
			}
			for _, c := range conns {
				if err := readWSClosed(t, c); err == nil {
					t.Error("connection still open")
				}
			}
			for _, s := range ts.rec.opened {
				if reason, _ := ts.rec.closeReason(s.ID()); reason != ReasonForcedServerExit {
					t.Errorf("reason = %q", reason)
				}
			}
		})
	}
}

// TestIdleHeartbeat answers pings on idle connections, then stops answering:
// the pongs must wake the parked reader, and a missing pong must close the
// session with ReasonPingTimeout while it is parked.
func TestIdleHeartbeat(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			ts := newModeServer(t, mode, &Options{PingInterval: 40 * time.Millisecond, PingTimeout: 2 * time.Second})
			c := dialMany(t, ts, 1)[0]
			for range 4 {
				if _, got := readWS(t, c); got != "2" {
					t.Fatalf("got %q, want ping", got)
				}
				waitConns(t, ts.eio, 1, wantParked(mode, 1))
				writeWS(t, c, websocket.MessageText, "3")
			}
			if _, got := readWS(t, c); got != "2" {
				t.Fatalf("got %q, want ping", got)
			}
			// No pong: the session ends PingTimeout later.
			if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
				t.Errorf("client saw %v, want the close frame 1000", err)
			}
			sid := ts.rec.opened[0].ID()
			ts.rec.waitFor(t, "OnClose", func(r *recorder) bool { _, ok := r.closed[sid]; return ok })
			if reason, _ := ts.rec.closeReason(sid); reason != ReasonPingTimeout {
				t.Errorf("reason = %q, want %q", reason, ReasonPingTimeout)
			}
			waitConns(t, ts.eio, 0, 0)
		})
	}
}

// TestHandshakeTailMessages sends the WebSocket handshake and two messages in
// one write, so that the messages arrive with the handshake's tail and are
// already read from the socket when the connection would park.
func TestHandshakeTailMessages(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			ts := newModeServer(t, mode, nil)
			nc, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if err := nc.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
				t.Fatal(err)
			}
			req := "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n" +
				"Host: " + ts.Listener.Addr().String() + "\r\n" +
				"Connection: Upgrade\r\nUpgrade: websocket\r\n" +
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
			b := append([]byte(req), clientFrame("4first")...)
			b = append(b, clientFrame("4second")...)
			if _, err := nc.Write(b); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(nc)
			res, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d", res.StatusCode)
			}
			for _, want := range []string{"0{", "4first", "4second"} {
				got, err := readServerFrame(br)
				if err != nil {
					t.Fatalf("waiting for %q: %v", want, err)
				}
				if !strings.HasPrefix(got, want) {
					t.Fatalf("got %q, want %q", got, want)
				}
			}
			waitConns(t, ts.eio, 1, wantParked(mode, 1))
			// And the connection keeps working after parking.
			if _, err := nc.Write(clientFrame("4third")); err != nil {
				t.Fatal(err)
			}
			if got, err := readServerFrame(br); err != nil || got != "4third" {
				t.Fatalf("got %q, %v", got, err)
			}
			// Frames split across writes: the woken reader waits for the rest.
			for _, split := range []int{1, 3, 8} {
				f := clientFrame("4split")
				waitConns(t, ts.eio, 1, wantParked(mode, 1))
				if _, err := nc.Write(f[:split]); err != nil {
					t.Fatal(err)
				}
				time.Sleep(10 * time.Millisecond) // most likely a segment of its own
				if _, err := nc.Write(f[split:]); err != nil {
					t.Fatal(err)
				}
				if got, err := readServerFrame(br); err != nil || got != "4split" {
					t.Fatalf("split at %d: got %q, %v", split, got, err)
				}
			}
		})
	}
}

// clientFrame returns a masked, final text frame with payload p (< 126 bytes).
func clientFrame(p string) []byte {
	var key [4]byte
	_, _ = rand.Read(key[:]) // crypto/rand.Read never returns an error
	b := []byte{0x81, 0x80 | byte(len(p)), key[0], key[1], key[2], key[3]}
	for i := range len(p) {
		b = append(b, p[i]^key[i%4])
	}
	return b
}

// readServerFrame reads one unmasked, final frame of fewer than 65536 bytes.
func readServerFrame(r *bufio.Reader) (string, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	if h[0] != 0x81 && h[0] != 0x82 {
		return "", fmt.Errorf("frame header %#x", h[0])
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := io.ReadFull(r, l[:]); err != nil {
			return "", err
		}
		n = int(l[0])<<8 | int(l[1])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return "", err
	}
	return string(p), nil
}

// TestDeflateParked checks that connections with permessage-deflate are
// parked like others (no compression state outlives a message), whether the
// client offers context takeover or not, and that compressed messages go
// both ways.
func TestDeflateParked(t *testing.T) {
	ts := newModeServer(t, "parked", &Options{PerMessageDeflate: true, CompressionThreshold: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var deflated []*websocket.Conn
	for _, mode := range []websocket.CompressionMode{websocket.CompressionNoContextTakeover, websocket.CompressionContextTakeover} {
		c, resp, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), &websocket.DialOptions{CompressionMode: mode})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != deflateResponse {
			t.Fatalf("extensions %q, want %q", got, deflateResponse)
		}
		readWS(t, c)
		deflated = append(deflated, c)
	}
	plain := dialMany(t, ts, 1)[0]
	waitConns(t, ts.eio, 3, 3)
	long := "4" + strings.Repeat("compress me ", 50)
	for range 3 {
		for _, c := range deflated {
			writeWS(t, c, websocket.MessageText, long)
			if _, got := readWS(t, c); got != long {
				t.Fatalf("echo mismatch: %d bytes", len(got))
			}
		}
		writeWS(t, plain, websocket.MessageText, long)
		if _, got := readWS(t, plain); got != long {
			t.Fatalf("echo mismatch: %d bytes", len(got))
		}
	}
	waitConns(t, ts.eio, 3, 3)
}

// TestUpgradedIdle upgrades a polling session to WebSocket and checks that the
// connection parks once idle, wakes for messages, and ends when the client
// goes away while it is parked.
func TestUpgradedIdle(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			ts := newModeServer(t, mode, nil)
			sid := ts.handshake(t)
			c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
			writeWS(t, c, websocket.MessageText, "2probe")
			if _, got := readWS(t, c); got != "3probe" {
				t.Fatalf("probe answer = %q", got)
			}
			// The probe connection is not parked before the upgrade completes.
			waitConns(t, ts.eio, 1, 0)
			writeWS(t, c, websocket.MessageText, "5")
			waitConns(t, ts.eio, 1, wantParked(mode, 1))
			for _, m := range []string{"4one", "4two"} {
				writeWS(t, c, websocket.MessageText, m)
				if _, got := readWS(t, c); got != m {
					t.Fatalf("echo %q, want %q", got, m)
				}
				waitConns(t, ts.eio, 1, wantParked(mode, 1))
			}
			if err := c.CloseNow(); err != nil {
				t.Fatal(err)
			}
			ts.rec.waitFor(t, "OnClose", func(r *recorder) bool { _, ok := r.closed[sid]; return ok })
			if reason, _ := ts.rec.closeReason(sid); reason != ReasonTransportClose {
				t.Errorf("reason = %q", reason)
			}
			waitConns(t, ts.eio, 0, 0)
		})
	}
}

// churnHandler echoes, counts OnClose calls per session, and closes a session
// from the server side when asked to by the message "close".
type churnHandler struct {
	mu     sync.Mutex
	opened int
	closes map[string]int
}

func (h *churnHandler) OnOpen(*Session) {
	h.mu.Lock()
	h.opened++
	h.mu.Unlock()
}

func (h *churnHandler) OnMessage(s *Session, m Message) {
	if string(m.Data) == "close" {
		_ = s.Close() // idempotent; the client sees the close frame
		return
	}
	_ = s.Send(m) // the session may be closing; the client tolerates a missing echo then
}

func (h *churnHandler) OnClose(s *Session, _ string) {
	h.mu.Lock()
	h.closes[s.ID()]++
	h.mu.Unlock()
}

// TestParkedChurn has clients connect, idle, burst, close abruptly, close
// properly and get closed by the server, all at once, then shuts the server
// down: every session gets exactly one OnClose and nothing is left.
func TestParkedChurn(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			h := &churnHandler{closes: map[string]int{}}
			srv := NewServer(h, &Options{PingInterval: 30 * time.Millisecond, PingTimeout: time.Second})
			if mode == "goroutine" {
				srv.pollErr = errPollerOff
			}
			ts := serve(t, srv, nil)
			url := ts.wsURL("EIO=4&transport=websocket")
			const clients, rounds = 16, 12
			var wg sync.WaitGroup
			var survivors sync.Map
			for i := range clients {
				wg.Go(func() {
					// Not cancelled when this client is done: the reader of the
					// connection left for Shutdown keeps reading.
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					t.Cleanup(cancel)
					for r := range rounds {
						c, _, err := websocket.Dial(ctx, url, nil)
						if err != nil {
							t.Errorf("dial: %v", err)
							return
						}
						// Read everything in the background, answering pings.
						readDone := make(chan struct{})
						go func() {
							defer close(readDone)
							for {
								_, b, err := c.Read(ctx)
								if err != nil {
									return
								}
								if string(b) == "2" {
									_ = c.Write(ctx, websocket.MessageText, []byte("3")) // fails only once closed
								}
							}
						}()
						for j := range (i + r) % 5 {
							_ = c.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf("4burst %d", j))) // fails only once closed
						}
						if (i+r)%3 == 0 {
							time.Sleep(time.Duration(i%4) * 10 * time.Millisecond) // idle: parked, pinged
						}
						switch (i + r) % 4 {
						case 0:
							_ = c.CloseNow() // abrupt
						case 1:
							_ = c.Close(websocket.StatusNormalClosure, "") // handshake; the server may close first
						case 2:
							_ = c.Write(ctx, websocket.MessageText, []byte("4close")) // server closes
						case 3:
							if r == rounds-1 {
								survivors.Store(c, readDone) // left for Shutdown
								continue
							}
							_ = c.CloseNow()
						}
						<-readDone
					}
				})
			}
			wg.Wait()
			// A client has its 101 before the server registers the session:
			// the last handshakes may still be on their way to OnOpen. Until
			// Shutdown, every accepted WebSocket becomes a session, so wait for
			// all of them (a handshake that Shutdown overtakes is refused
			// instead, see TestWebSocketRefusedAtShutdown).
			waitOpened(t, h, clients*rounds)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			survivors.Range(func(k, v any) bool {
				<-v.(chan struct{})
				_ = k.(*websocket.Conn).CloseNow() // already closed by the server
				return true
			})
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.opened != clients*rounds || len(h.closes) != clients*rounds {
				t.Errorf("opened %d, closed %d sessions; want %d", h.opened, len(h.closes), clients*rounds)
			}
			for sid, n := range h.closes {
				if n != 1 {
					t.Errorf("session %s: OnClose %d times", sid, n)
				}
			}
			if n, _ := connCounts(srv); n != 0 {
				t.Errorf("%d connections left", n)
			}
		})
	}
}

// waitOpened waits until h has seen n OnOpen calls.
func waitOpened(t *testing.T, h *churnHandler, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		got := h.opened
		h.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("opened %d sessions; want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestWebSocketRefusedAtShutdown starts Shutdown after a client has its 101
// but before the server registers its session: the client gets no session,
// no open packet and a close frame 1001 "server shutting down"; Shutdown waits
// for that handshake, and no connection is left.
func TestWebSocketRefusedAtShutdown(t *testing.T) {
	for _, mode := range readerModes {
		t.Run(mode, func(t *testing.T) {
			h := &churnHandler{closes: map[string]int{}}
			srv := NewServer(h, nil)
			if mode == "goroutine" {
				srv.pollErr = errPollerOff
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shutdown := make(chan error, 1)
			srv.testAfterAccept = func() {
				go func() { shutdown <- srv.Shutdown(ctx) }()
				for !srv.isClosing() {
					if ctx.Err() != nil {
						t.Error("Shutdown did not start")
						return
					}
					time.Sleep(time.Millisecond)
				}
			}
			ts := serve(t, srv, nil)
			c, _, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), nil)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer func() { _ = c.CloseNow() }() // closed by the server already
			typ, b, err := c.Read(ctx)
			if err == nil {
				t.Fatalf("read %v %q; want the close frame", typ, b)
			}
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "server shutting down" {
				t.Errorf("read error %v; want close status 1001 \"server shutting down\"", err)
			}
			if err := <-shutdown; err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			h.mu.Lock()
			if h.opened != 0 || len(h.closes) != 0 {
				t.Errorf("opened %d, closed %d sessions; want none", h.opened, len(h.closes))
			}
			h.mu.Unlock()
			if n, _ := connCounts(srv); n != 0 {
				t.Errorf("%d connections left", n)
			}
		})
	}
}
