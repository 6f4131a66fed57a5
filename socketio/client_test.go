package socketio

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// This file is a minimal Engine.IO v4 / Socket.IO v5 client speaking the wire
// protocol, over WebSocket or HTTP long-polling, for tests.

const waitTimeout = 5 * time.Second

// msg is one Engine.IO message packet: Socket.IO text without the "4" prefix, or
// a binary attachment.
type msg struct {
	text   string
	bin    []byte
	binary bool
}

type testClient struct {
	t         *testing.T
	base      string // http://host/socket.io/
	transport string
	ws        *websocket.Conn
	sid       string
	msgs      chan msg
	closed    chan struct{} // closed when the server closed the session
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	noPong    atomic.Bool
	closeOnce sync.Once
}

func newTestServer(t *testing.T, opts *Options) (*Server, string) {
	t.Helper()
	srv := NewServer(opts)
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return srv, hs.URL + "/socket.io/"
}

// dial opens an Engine.IO session; transport is "websocket" or "polling".
func dial(t *testing.T, base, transport string) *testClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &testClient{t: t, base: base, transport: transport, msgs: make(chan msg, 1024),
		closed: make(chan struct{}), ctx: ctx, cancel: cancel}
	t.Cleanup(c.close)
	switch transport {
	case "websocket":
		u := strings.Replace(base, "http", "ws", 1) + "?EIO=4&transport=websocket"
		dctx, dcancel := context.WithTimeout(ctx, waitTimeout)
		defer dcancel()
		ws, _, err := websocket.Dial(dctx, u, nil)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		ws.SetReadLimit(1 << 24)
		c.ws = ws
		typ, data, err := ws.Read(dctx)
		if err != nil || typ != websocket.MessageText || len(data) == 0 || data[0] != '0' {
			t.Fatalf("open packet: %v %q", err, data)
		}
		c.sid = openSID(t, data[1:])
		c.wg.Add(1)
		go c.readWS()
	case "polling":
		body := c.get(base + "?EIO=4&transport=polling")
		if len(body) == 0 || body[0] != '0' {
			t.Fatalf("open packet: %q", body)
		}
		c.sid = openSID(t, body[1:])
		c.wg.Add(1)
		go c.poll()
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	return c
}

func openSID(t *testing.T, data []byte) string {
	var open struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(data, &open); err != nil || open.SID == "" {
		t.Fatalf("open packet %q: %v", data, err)
	}
	return open.SID
}

func (c *testClient) get(u string) []byte {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, u, nil)
	if err != nil {
		c.t.Fatalf("request: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		c.t.Fatalf("GET %s: %d %v %q", u, resp.StatusCode, err, b)
	}
	return b
}

func (c *testClient) pollURL() string {
	return c.base + "?EIO=4&transport=polling&sid=" + c.sid
}

func (c *testClient) markClosed() {
	c.closeOnce.Do(func() { close(c.closed) })
}

func (c *testClient) readWS() {
	defer c.wg.Done()
	defer c.markClosed()
	for {
		typ, data, err := c.ws.Read(c.ctx)
		if err != nil {
			return
		}
		if typ == websocket.MessageBinary {
			c.msgs <- msg{bin: data, binary: true}
			continue
		}
		if !c.handlePacket(data) {
			return
		}
	}
}

// handlePacket handles one Engine.IO text packet; false means closed.
func (c *testClient) handlePacket(data []byte) bool {
	if len(data) == 0 {
		return true
	}
	switch data[0] {
	case '2':
		if !c.noPong.Load() {
			c.sendRaw("3")
		}
	case '4':
		c.msgs <- msg{text: string(data[1:])}
	case '1':
		return false
	case 'b':
		b, err := base64.StdEncoding.DecodeString(string(data[1:]))
		if err != nil {
			c.t.Errorf("bad base64 packet %q", data)
			return false
		}
		c.msgs <- msg{bin: b, binary: true}
	}
	return true
}

func (c *testClient) poll() {
	defer c.wg.Done()
	defer c.markClosed()
	for {
		req, err := http.NewRequestWithContext(c.ctx, http.MethodGet, c.pollURL(), nil)
		if err != nil {
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			return
		}
		for _, p := range bytes.Split(b, []byte{0x1e}) {
			if len(p) > 0 && p[0] == '6' {
				continue
			}
			if !c.handlePacket(p) {
				return
			}
		}
	}
}

// sendRaw sends one Engine.IO text packet.
func (c *testClient) sendRaw(p string) {
	if c.ws != nil {
		if err := c.ws.Write(c.ctx, websocket.MessageText, []byte(p)); err != nil && c.ctx.Err() == nil {
			c.t.Logf("write: %v", err)
		}
		return
	}
	c.post([]byte(p))
}

func (c *testClient) post(body []byte) {
	req, err := http.NewRequestWithContext(c.ctx, http.MethodPost, c.pollURL(), bytes.NewReader(body))
	if err != nil {
		c.t.Errorf("request: %v", err)
		return
	}
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// send sends a Socket.IO packet (text) followed by binary attachments.
func (c *testClient) send(text string, atts ...[]byte) {
	if c.ws != nil {
		c.sendRaw("4" + text)
		for _, a := range atts {
			if err := c.ws.Write(c.ctx, websocket.MessageBinary, a); err != nil {
				c.t.Logf("write: %v", err)
			}
		}
		return
	}
	parts := []string{"4" + text}
	for _, a := range atts {
		parts = append(parts, "b"+base64.StdEncoding.EncodeToString(a))
	}
	c.post([]byte(strings.Join(parts, "\x1e")))
}

// next returns the next message from the server.
func (c *testClient) next() msg {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(waitTimeout):
		c.t.Fatalf("no message within %v", waitTimeout)
	}
	return msg{}
}

// expect reads the next text message and checks it.
func (c *testClient) expect(want string) {
	c.t.Helper()
	m := c.next()
	if m.binary || m.text != want {
		c.t.Fatalf("got %q (binary %v %v), want %q", m.text, m.binary, m.bin, want)
	}
}

// expectPrefix reads the next text message, checks its prefix and returns the rest.
func (c *testClient) expectPrefix(prefix string) string {
	c.t.Helper()
	m := c.next()
	if m.binary || !strings.HasPrefix(m.text, prefix) {
		c.t.Fatalf("got %q (binary %v), want prefix %q", m.text, m.binary, prefix)
	}
	return m.text[len(prefix):]
}

// expectBinary reads the next message and checks it is this attachment.
func (c *testClient) expectBinary(want []byte) {
	c.t.Helper()
	m := c.next()
	if !m.binary || !bytes.Equal(m.bin, want) {
		c.t.Fatalf("got %q %v, want binary %v", m.text, m.bin, want)
	}
}

// expectNothing checks that no message arrives within d.
func (c *testClient) expectNothing(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		c.t.Fatalf("unexpected message %q %v", m.text, m.bin)
	case <-time.After(d):
	}
}

// connect joins a namespace and returns the socket id.
func (c *testClient) connect(nsp, auth string) string {
	c.t.Helper()
	prefix := "0"
	if nsp != "/" {
		prefix += nsp + ","
	}
	c.send(prefix + auth)
	rest := c.expectPrefix(prefix)
	var ok struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal([]byte(rest), &ok); err != nil || ok.SID == "" {
		c.t.Fatalf("connect answer %q: %v", rest, err)
	}
	return ok.SID
}

// waitClosed waits until the server closed the session.
func (c *testClient) waitClosed() {
	c.t.Helper()
	select {
	case <-c.closed:
	case <-time.After(waitTimeout):
		c.t.Fatalf("session not closed within %v", waitTimeout)
	}
}

func (c *testClient) close() {
	if c.ws != nil {
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
	} else if c.ctx.Err() == nil {
		select {
		case <-c.closed:
		default:
			c.post([]byte("1"))
		}
	}
	c.cancel()
	c.wg.Wait()
}

// recv receives from ch within the wait timeout.
func recv[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("nothing received within %v", waitTimeout)
	}
	var zero T
	return zero
}

var transports = []string{"websocket", "polling"}

func forTransports(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) { f(t, tr) })
	}
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint("test value does not marshal: ", err))
	}
	return string(b)
}

func (c *testClient) sendBinary(b []byte) {
	if c.ws != nil {
		if err := c.ws.Write(c.ctx, websocket.MessageBinary, b); err != nil {
			c.t.Logf("write: %v", err)
		}
		return
	}
	c.post([]byte("b" + base64.StdEncoding.EncodeToString(b)))
}

// newHTTPTest serves srv on a test HTTP server and returns its URL; the caller
// shuts srv down.
func newHTTPTest(t *testing.T, srv *Server) string {
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return hs.URL
}
