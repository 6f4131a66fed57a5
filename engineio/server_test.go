package engineio

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// recorder is a Handler that records events and echoes messages when echo is set.
type recorder struct {
	echo bool

	mu       sync.Mutex
	opened   []*Session
	messages []Message
	closed   map[string]string // sid -> reason
	changed  chan struct{}
}

func newRecorder(echo bool) *recorder {
	return &recorder{echo: echo, closed: map[string]string{}, changed: make(chan struct{}, 1)}
}

func (r *recorder) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) OnOpen(s *Session) {
	r.mu.Lock()
	r.opened = append(r.opened, s)
	r.mu.Unlock()
	r.notify()
}

func (r *recorder) OnMessage(s *Session, m Message) {
	r.mu.Lock()
	r.messages = append(r.messages, m)
	r.mu.Unlock()
	if r.echo {
		_ = s.Send(m) // the session may close meanwhile; tests check what arrives
	}
	r.notify()
}

func (r *recorder) OnClose(s *Session, reason string) {
	r.mu.Lock()
	r.closed[s.ID()] = reason
	r.mu.Unlock()
	r.notify()
}

// waitFor waits until cond holds, failing the test after a generous deadline.
func (r *recorder) waitFor(t *testing.T, what string, cond func(r *recorder) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (r *recorder) closeReason(sid string) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	reason, ok := r.closed[sid]
	return reason, ok
}

type testServer struct {
	*httptest.Server
	eio *Server
	rec *recorder
}

func newTestServer(t *testing.T, opts *Options) *testServer {
	t.Helper()
	rec := newRecorder(true)
	eio := NewServer(rec, opts)
	return &testServer{Server: startHTTP(t, eio, false), eio: eio, rec: rec}
}

// startHTTP serves eio at /engine.io/ over HTTP, or HTTPS with tls, until
// the test ends, when it shuts both down.
func startHTTP(t *testing.T, eio *Server, tls bool) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/engine.io/", eio)
	hs := httptest.NewUnstartedServer(mux)
	if tls {
		hs.StartTLS()
	} else {
		hs.Start()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eio.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return hs
}

func (ts *testServer) url(query string) string {
	return ts.URL + "/engine.io/?" + query
}

func (ts *testServer) wsURL(query string) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/engine.io/?" + query
}

type response struct {
	status int
	header http.Header
	body   string
}

func (ts *testServer) do(t *testing.T, method, query, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, ts.url(query), rd)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, query, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, query, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: string(b)}
}

type openPacket struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int      `json:"pingInterval"`
	PingTimeout  int      `json:"pingTimeout"`
	MaxPayload   int      `json:"maxPayload"`
}

func parseOpen(t *testing.T, s string) openPacket {
	t.Helper()
	if !strings.HasPrefix(s, "0") {
		t.Fatalf("open packet = %q, want prefix 0", s)
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s[1:]), &keys); err != nil {
		t.Fatalf("open packet %q: %v", s, err)
	}
	if len(keys) != 5 {
		t.Fatalf("open packet keys = %v, want exactly sid, upgrades, pingInterval, pingTimeout, maxPayload", keys)
	}
	var o openPacket
	if err := json.Unmarshal([]byte(s[1:]), &o); err != nil {
		t.Fatalf("open packet %q: %v", s, err)
	}
	return o
}

// handshake opens a polling session and returns its sid.
func (ts *testServer) handshake(t *testing.T) string {
	t.Helper()
	res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	if res.status != http.StatusOK {
		t.Fatalf("handshake status = %d, body %q", res.status, res.body)
	}
	return parseOpen(t, res.body).SID
}

func (ts *testServer) poll(t *testing.T, sid string) response {
	t.Helper()
	return ts.do(t, http.MethodGet, "EIO=4&transport=polling&sid="+sid, "")
}

func (ts *testServer) post(t *testing.T, sid, body string) response {
	t.Helper()
	return ts.do(t, http.MethodPost, "EIO=4&transport=polling&sid="+sid, body)
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.CloseNow() })
	return c
}

func readWS(t *testing.T, c *websocket.Conn) (websocket.MessageType, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	typ, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, string(b)
}

func writeWS(t *testing.T, c *websocket.Conn, typ websocket.MessageType, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, typ, []byte(s)); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// readWSClosed reads until the connection ends and returns the error.
func readWSClosed(t *testing.T, c *websocket.Conn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 100 {
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("connection not closed in time")
			}
			return err
		}
	}
	t.Fatal("connection kept sending")
	return nil
}

func TestPollingHandshake(t *testing.T) {
	ts := newTestServer(t, &Options{PingInterval: 3 * time.Second, PingTimeout: 2 * time.Second})
	res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	if res.status != http.StatusOK {
		t.Fatalf("status = %d", res.status)
	}
	o := parseOpen(t, res.body)
	if len(o.SID) != 20 || len(o.Upgrades) != 1 || o.Upgrades[0] != "websocket" || o.PingInterval != 3000 || o.PingTimeout != 2000 || o.MaxPayload != 1000000 {
		t.Errorf("open = %+v", o)
	}
	if ct := res.header.Get("Content-Type"); ct != "text/plain; charset=UTF-8" {
		t.Errorf("Content-Type = %q", ct)
	}
	ts.rec.waitFor(t, "OnOpen", func(r *recorder) bool { return len(r.opened) == 1 })
	if got := ts.eio.Count(); got != 1 {
		t.Errorf("Count = %d, want 1", got)
	}
}

func TestPollingMessages(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	res := ts.post(t, sid, "4test1\x1e4test2\x1ebAQIDBA==")
	if res.status != http.StatusOK || res.body != "ok" || res.header.Get("Content-Type") != "text/html" {
		t.Fatalf("post = %d %q %q", res.status, res.body, res.header.Get("Content-Type"))
	}
	res = ts.poll(t, sid)
	if want := "4test1\x1e4test2\x1ebAQIDBA=="; res.body != want {
		t.Fatalf("poll = %q, want %q", res.body, want)
	}
	ts.rec.mu.Lock()
	defer ts.rec.mu.Unlock()
	if len(ts.rec.messages) != 3 || !ts.rec.messages[2].Binary || string(ts.rec.messages[2].Data) != "\x01\x02\x03\x04" {
		t.Errorf("messages = %+v", ts.rec.messages)
	}
}

func TestWebSocketMessages(t *testing.T) {
	ts := newTestServer(t, nil)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	_, open := readWS(t, c)
	if o := parseOpen(t, open); len(o.Upgrades) != 0 {
		t.Errorf("upgrades = %v, want none", o.Upgrades)
	}
	writeWS(t, c, websocket.MessageText, "4hello")
	if typ, got := readWS(t, c); typ != websocket.MessageText || got != "4hello" {
		t.Errorf("got %v %q", typ, got)
	}
	writeWS(t, c, websocket.MessageBinary, "\x01\x02\x03")
	if typ, got := readWS(t, c); typ != websocket.MessageBinary || got != "\x01\x02\x03" {
		t.Errorf("got %v %q", typ, got)
	}
}

func newHTTPTestServer(h http.Handler) *httptest.Server { return httptest.NewServer(h) }
