package engineio

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestErrorCodes(t *testing.T) {
	ts := newTestServer(t, &Options{
		AllowRequest: func(r *http.Request) error {
			if r.URL.Query().Get("deny") != "" {
				return errors.New("Forbidden")
			}
			return nil
		},
	})
	upgraded := ts.handshake(t)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+upgraded))
	writeWS(t, c, websocket.MessageText, "2probe")
	if _, got := readWS(t, c); got != "3probe" {
		t.Fatalf("probe answer = %q", got)
	}
	writeWS(t, c, websocket.MessageText, "5")
	ts.rec.waitFor(t, "upgrade", func(*recorder) bool { return ts.eio.lookup(upgraded).Transport() == TransportWebSocket })

	tests := []struct {
		name, method, query string
		status, code        int
		message             string
	}{
		{"no transport", "GET", "EIO=4", 400, 0, "Transport unknown"},
		{"unknown transport", "GET", "EIO=4&transport=abc", 400, 0, "Transport unknown"},
		{"unknown sid", "GET", "EIO=4&transport=polling&sid=nope", 400, 1, "Session ID unknown"},
		{"POST handshake", "POST", "EIO=4&transport=polling", 400, 2, "Bad handshake method"},
		{"PUT handshake", "PUT", "EIO=4&transport=polling", 400, 2, "Bad handshake method"},
		{"websocket without upgrade", "GET", "EIO=4&transport=websocket", 400, 3, "Bad request"},
		{"polling on upgraded sid", "GET", "EIO=4&transport=polling&sid=" + upgraded, 400, 3, "Bad request"},
		{"post on upgraded sid", "POST", "EIO=4&transport=polling&sid=" + upgraded, 400, 3, "Bad request"},
		{"refused by AllowRequest", "GET", "EIO=4&transport=polling&deny=1", 403, 4, "Forbidden"},
		{"no EIO", "GET", "transport=polling", 400, 5, "Unsupported protocol version"},
		{"bad EIO", "GET", "EIO=abc&transport=polling", 400, 5, "Unsupported protocol version"},
		{"EIO 3", "GET", "EIO=3&transport=polling", 400, 5, "Unsupported protocol version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := ""
			if tt.method != "GET" {
				body = "4x"
			}
			res := ts.do(t, tt.method, tt.query, body)
			if res.status != tt.status {
				t.Fatalf("status = %d, want %d (body %q)", res.status, tt.status, res.body)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal([]byte(res.body), &got); err != nil {
				t.Fatalf("body %q: %v", res.body, err)
			}
			if got.Code != tt.code || got.Message != tt.message {
				t.Errorf("body = %+v, want code %d message %q", got, tt.code, tt.message)
			}
		})
	}

	// The upgraded session is unharmed by the refused requests.
	writeWS(t, c, websocket.MessageText, "4still")
	if _, got := readWS(t, c); got != "4still" {
		t.Errorf("echo after refusals = %q", got)
	}
}

func TestWebSocketHandshakeErrorsClose(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, q := range []string{"transport=websocket", "EIO=abc&transport=websocket", "EIO=4", "EIO=4&transport=abc", "EIO=4&transport=websocket&sid=nope"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, res, err := websocket.Dial(ctx, ts.wsURL(q), nil)
		cancel()
		if err == nil {
			_ = c.CloseNow()
			t.Errorf("%s: dial succeeded", q)
			continue
		}
		if res == nil || res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: response %v, want 400", q, res)
		}
	}
}

func TestPollingInvalidPacketClosesSession(t *testing.T) {
	ts := newTestServer(t, nil)
	for _, body := range []string{"abc", "4a\x1e\x1e4b", "b!!!", "9"} {
		sid := ts.handshake(t)
		if res := ts.post(t, sid, body); res.status != http.StatusBadRequest {
			t.Errorf("post %q: status %d", body, res.status)
		}
		if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
			t.Errorf("poll after %q: status %d, want 400", body, res.status)
		}
		if reason, _ := ts.rec.closeReason(sid); reason != ReasonParseError {
			t.Errorf("reason = %q", reason)
		}
	}
}

func TestPollingDuplicateGetClosesSession(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	first := make(chan response, 1)
	go func() { first <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("second GET status = %d", res.status)
	}
	if res := <-first; res.status != http.StatusOK || res.body != "1" {
		t.Errorf("first GET = %d %q, want 200 \"1\"", res.status, res.body)
	}
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("GET after close = %d", res.status)
	}
}

// waitPollPending waits until sid has a waiting GET.
func waitPollPending(t *testing.T, ts *testServer, sid string) {
	t.Helper()
	sess := ts.eio.lookup(sid)
	if sess == nil {
		t.Fatal("session gone")
	}
	ts.rec.waitFor(t, "pending poll", func(*recorder) bool {
		sess.mu.Lock()
		defer sess.mu.Unlock()
		return sess.pollCh != nil
	})
}

func TestPollingCancelledGetClosesSession(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.url("EIO=4&transport=polling&sid="+sid), nil)
		if err != nil {
			t.Error(err)
			return
		}
		if res, err := ts.Client().Do(req); err == nil {
			res.Body.Close()
			t.Error("cancelled GET succeeded")
		}
	}()
	waitPollPending(t, ts, sid)
	cancel()
	<-done
	ts.rec.waitFor(t, "close", func(r *recorder) bool { _, ok := r.closed[sid]; return ok })
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("GET after cancel = %d", res.status)
	}
}

func TestPollingClientClose(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	first := make(chan response, 1)
	go func() { first <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)
	if res := ts.post(t, sid, "1"); res.status != http.StatusOK {
		t.Errorf("post close = %d", res.status)
	}
	if res := <-first; res.body != "6" {
		t.Errorf("pending GET = %q, want noop", res.body)
	}
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("GET after close = %d", res.status)
	}
	if reason, _ := ts.rec.closeReason(sid); reason != ReasonTransportClose {
		t.Errorf("reason = %q", reason)
	}
}

func TestPollingClientCloseBeforePoll(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	// The client's last GET may reach the server after the POST with the close
	// packet; it still gets the noop packet.
	if res := ts.post(t, sid, "1"); res.status != http.StatusOK {
		t.Errorf("post close = %d", res.status)
	}
	if got := ts.eio.Count(); got != 0 {
		t.Errorf("Count = %d", got)
	}
	if res := ts.poll(t, sid); res.status != http.StatusOK || res.body != "6" {
		t.Errorf("GET after close = %d %q, want noop", res.status, res.body)
	}
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("second GET after close = %d", res.status)
	}
}

func TestWebSocketClientCloseAndInvalidPacket(t *testing.T) {
	ts := newTestServer(t, nil)
	for body, reason := range map[string]string{"1": ReasonTransportClose, "abc": ReasonParseError, "2": ReasonTransportError} {
		c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
		_, open := readWS(t, c)
		sid := parseOpen(t, open).SID
		writeWS(t, c, websocket.MessageText, body)
		readWSClosed(t, c)
		ts.rec.waitFor(t, "close", func(r *recorder) bool { _, ok := r.closed[sid]; return ok })
		if got, _ := ts.rec.closeReason(sid); got != reason {
			t.Errorf("%q: reason = %q, want %q", body, got, reason)
		}
	}
}

func TestHeartbeatPolling(t *testing.T) {
	ts := newTestServer(t, &Options{PingInterval: 50 * time.Millisecond, PingTimeout: 2 * time.Second})
	sid := ts.handshake(t)
	for i := range 3 {
		if res := ts.poll(t, sid); res.body != "2" {
			t.Fatalf("poll %d = %q, want ping", i, res.body)
		}
		if res := ts.post(t, sid, "3"); res.status != http.StatusOK {
			t.Fatalf("pong %d: %d", i, res.status)
		}
	}
	// No pong now: the session ends with a ping timeout.
	if res := ts.poll(t, sid); res.body != "2" {
		t.Fatalf("poll = %q, want ping", res.body)
	}
	ts.rec.waitFor(t, "ping timeout", func(r *recorder) bool { return r.closed[sid] == ReasonPingTimeout })
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("poll after timeout = %d", res.status)
	}
}

func TestHeartbeatWebSocket(t *testing.T) {
	ts := newTestServer(t, &Options{PingInterval: 50 * time.Millisecond, PingTimeout: 2 * time.Second})
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	_, open := readWS(t, c)
	sid := parseOpen(t, open).SID
	for i := range 3 {
		if _, got := readWS(t, c); got != "2" {
			t.Fatalf("message %d = %q, want ping", i, got)
		}
		writeWS(t, c, websocket.MessageText, "3")
	}
	if _, got := readWS(t, c); got != "2" {
		t.Fatalf("got %q, want ping", got)
	}
	readWSClosed(t, c)
	ts.rec.waitFor(t, "ping timeout", func(r *recorder) bool { return r.closed[sid] == ReasonPingTimeout })
}

func TestUpgrade(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	pending := make(chan response, 1)
	go func() { pending <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)

	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	writeWS(t, c, websocket.MessageText, "2probe")
	if _, got := readWS(t, c); got != "3probe" {
		t.Fatalf("probe answer = %q", got)
	}
	if res := <-pending; res.body != "6" {
		t.Errorf("pending GET = %q, want noop", res.body)
	}
	if res := ts.poll(t, sid); res.body != "6" {
		t.Errorf("GET during upgrade = %q, want noop", res.body)
	}
	// A second WebSocket during the upgrade is closed at once.
	c2 := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	if err := readWSClosed(t, c2); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("second WebSocket during upgrade: %v", err)
	}
	writeWS(t, c, websocket.MessageText, "5")
	writeWS(t, c, websocket.MessageText, "4hello")
	if _, got := readWS(t, c); got != "4hello" {
		t.Errorf("echo = %q", got)
	}
	if got := ts.eio.lookup(sid).Transport(); got != TransportWebSocket {
		t.Errorf("Transport = %q", got)
	}
	// After the upgrade: polling and another WebSocket are refused, the session lives.
	if res := ts.poll(t, sid); res.status != http.StatusBadRequest {
		t.Errorf("GET after upgrade = %d", res.status)
	}
	c3 := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	if err := readWSClosed(t, c3); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("second WebSocket after upgrade: %v", err)
	}
	writeWS(t, c, websocket.MessageBinary, "\x00\x01")
	if typ, got := readWS(t, c); typ != websocket.MessageBinary || got != "\x00\x01" {
		t.Errorf("binary echo = %v %q", typ, got)
	}
}

func TestUpgradeQueuedMessagesMoveToWebSocket(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	writeWS(t, c, websocket.MessageText, "2probe")
	readWS(t, c)
	sess := ts.eio.lookup(sid)
	if err := sess.Send(Message{Data: []byte("queued")}); err != nil {
		t.Fatal(err)
	}
	writeWS(t, c, websocket.MessageText, "5")
	if _, got := readWS(t, c); got != "4queued" {
		t.Errorf("got %q", got)
	}
}

func TestUpgradeTimeoutKeepsPolling(t *testing.T) {
	ts := newTestServer(t, &Options{UpgradeTimeout: 50 * time.Millisecond})
	sid := ts.handshake(t)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	readWSClosed(t, c)
	if res := ts.post(t, sid, "4still"); res.status != http.StatusOK {
		t.Fatalf("post = %d", res.status)
	}
	if res := ts.poll(t, sid); res.body != "4still" {
		t.Errorf("poll = %q", res.body)
	}
}

func TestMaxPayload(t *testing.T) {
	ts := newTestServer(t, &Options{MaxPayload: 100})
	sid := ts.handshake(t)
	if res := ts.post(t, sid, "4"+strings.Repeat("x", 100)); res.status != http.StatusRequestEntityTooLarge {
		t.Errorf("post status = %d, want 413", res.status)
	}
	ts.rec.waitFor(t, "close", func(r *recorder) bool { return r.closed[sid] == ReasonPayloadTooLarge })

	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	_, open := readWS(t, c)
	o := parseOpen(t, open)
	if o.MaxPayload != 100 {
		t.Errorf("maxPayload = %d", o.MaxPayload)
	}
	writeWS(t, c, websocket.MessageText, "4"+strings.Repeat("x", 100))
	if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusMessageTooBig {
		t.Errorf("close = %v, want 1009", err)
	}
	ts.rec.waitFor(t, "close", func(r *recorder) bool { return r.closed[o.SID] == ReasonPayloadTooLarge })
}

// sendingHandler runs onOpen in OnOpen and records closes.
type sendingHandler struct {
	*recorder
	onOpen func(s *Session)
}

func (h sendingHandler) OnOpen(s *Session) {
	h.recorder.OnOpen(s)
	h.onOpen(s)
}

func TestSendQueueFull(t *testing.T) {
	rec := newRecorder(false)
	var errs []error
	h := sendingHandler{recorder: rec, onOpen: func(s *Session) {
		for range 5 {
			errs = append(errs, s.Send(Message{Data: []byte("x")}))
		}
	}}
	srv := NewServer(h, &Options{SendQueueSize: 3})
	ts := serve(t, srv, rec)
	res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	open, closePacket, _ := strings.Cut(res.body, "\x1e")
	sid := parseOpen(t, open).SID
	if closePacket != "1" {
		t.Errorf("handshake answer = %q, want open then close", res.body)
	}
	// The open packet waits in the queue until the handshake is answered, so it
	// takes one of the three places.
	want := []error{nil, nil, ErrQueueFull, ErrClosed, ErrClosed}
	for i := range want {
		if !errors.Is(errs[i], want[i]) {
			t.Errorf("Send %d = %v, want %v", i, errs[i], want[i])
		}
	}
	if reason, _ := rec.closeReason(sid); reason != ReasonSendQueueFull {
		t.Errorf("reason = %q", reason)
	}
}

func serve(t *testing.T, srv *Server, rec *recorder) *testServer {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/engine.io/", srv)
	hs := newHTTPTestServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{Server: hs, eio: srv, rec: rec}
}

func TestSendAtomicAndVolatile(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	sess := ts.eio.lookup(sid)
	if sess.SendVolatile(Message{Data: []byte("dropped")}) {
		t.Error("SendVolatile without a waiting poll returned true")
	}
	data := []byte("shared")
	if err := sess.Send(Message{Data: data}, Message{Data: []byte{1, 2}, Binary: true}); err != nil {
		t.Fatal(err)
	}
	if res := ts.poll(t, sid); res.body != "4shared\x1ebAQI=" {
		t.Errorf("poll = %q", res.body)
	}
	if string(data) != "shared" {
		t.Error("message data modified")
	}
	pending := make(chan response, 1)
	go func() { pending <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)
	if !sess.SendVolatile(Message{Data: []byte("v")}) {
		t.Error("SendVolatile with a waiting poll returned false")
	}
	if res := <-pending; res.body != "4v" {
		t.Errorf("poll = %q", res.body)
	}
}

func TestCloseFlushesQueue(t *testing.T) {
	ts := newTestServer(t, nil)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	_, open := readWS(t, c)
	sess := ts.eio.lookup(parseOpen(t, open).SID)
	if err := sess.Send(Message{Data: []byte("bye")}); err != nil {
		t.Fatal(err)
	}
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sess.Send(Message{Data: []byte("late")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
	if _, got := readWS(t, c); got != "4bye" {
		t.Errorf("got %q", got)
	}
	if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Errorf("close = %v", err)
	}
	<-sess.Done()

	sid := ts.handshake(t)
	psess := ts.eio.lookup(sid)
	if err := psess.Send(Message{Data: []byte("bye")}); err != nil {
		t.Fatal(err)
	}
	if err := psess.Close(); err != nil {
		t.Fatal(err)
	}
	if res := ts.poll(t, sid); res.body != "4bye\x1e1" {
		t.Errorf("poll = %q", res.body)
	}
	if reason, _ := ts.rec.closeReason(sid); reason != ReasonForcedClose {
		t.Errorf("reason = %q", reason)
	}
}

// closingHandler closes the session from OnMessage and records the order.
type closingHandler struct {
	mu     sync.Mutex
	events []string
	closed chan struct{}
}

func (h *closingHandler) add(e string) {
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}
func (h *closingHandler) OnOpen(*Session) { h.add("open") }
func (h *closingHandler) OnMessage(s *Session, m Message) {
	h.add("message")
	_ = s.Close()
	h.add("message returned")
}
func (h *closingHandler) OnClose(s *Session, reason string) {
	h.add("close " + reason)
	close(h.closed)
}

func TestHandlerOrder(t *testing.T) {
	h := &closingHandler{closed: make(chan struct{})}
	ts := serve(t, NewServer(h, nil), newRecorder(false))
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	readWS(t, c)
	writeWS(t, c, websocket.MessageText, "4x")
	select {
	case <-h.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	want := []string{"open", "message", "message returned", "close " + ReasonForcedClose}
	if strings.Join(h.events, "|") != strings.Join(want, "|") {
		t.Errorf("events = %q, want %q", h.events, want)
	}
}

func TestShutdown(t *testing.T) {
	rec := newRecorder(true)
	srv := NewServer(rec, nil)
	mux := http.NewServeMux()
	mux.Handle("/engine.io/", srv)
	hs := newHTTPTestServer(mux)
	defer hs.Close()
	ts := &testServer{Server: hs, eio: srv, rec: rec}

	var conns []*websocket.Conn
	for range 3 {
		c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
		readWS(t, c)
		conns = append(conns, c)
	}
	sid := ts.handshake(t)
	idle := ts.handshake(t)
	pending := make(chan response, 1)
	go func() { pending <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)
	if got := srv.Count(); got != 5 {
		t.Fatalf("Count = %d", got)
	}

	errc := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		errc <- srv.Shutdown(ctx)
	}()
	for _, c := range conns {
		if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusGoingAway {
			t.Errorf("close = %v, want 1001", err)
		}
	}
	if res := <-pending; res.body != "1" {
		t.Errorf("pending poll = %q, want close packet", res.body)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
	if got := srv.Count(); got != 0 {
		t.Errorf("Count after Shutdown = %d", got)
	}
	rec.mu.Lock()
	for id, reason := range rec.closed {
		if reason != ReasonServerShutdown {
			t.Errorf("%s closed with %q", id, reason)
		}
	}
	if len(rec.closed) != 5 {
		t.Errorf("%d closes, want 5", len(rec.closed))
	}
	rec.mu.Unlock()
	if res := ts.poll(t, idle); res.status != http.StatusBadRequest {
		t.Errorf("poll after shutdown = %d", res.status)
	}
	if res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", ""); res.status != http.StatusServiceUnavailable {
		t.Errorf("handshake after shutdown = %d", res.status)
	}
}

func TestShutdownTimeout(t *testing.T) {
	rec := newRecorder(false)
	srv := NewServer(rec, nil)
	ts := serve(t, srv, rec)
	sid := ts.handshake(t)
	// A queued message keeps the polling session waiting for its next poll.
	if err := srv.lookup(sid).Send(Message{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want deadline exceeded", err)
	}
	if got := srv.Count(); got != 0 {
		t.Errorf("Count = %d", got)
	}
	if reason, _ := rec.closeReason(sid); reason != ReasonServerShutdown {
		t.Errorf("reason = %q", reason)
	}
}

func TestCORS(t *testing.T) {
	ts := newTestServer(t, &Options{CORS: &CORSOptions{Origins: []string{"https://a.example"}, Credentials: true, MaxAge: time.Minute}})
	do := func(method, origin string, hdr map[string]string) *http.Response {
		req, err := http.NewRequest(method, ts.url("EIO=4&transport=polling"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		res, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	res := do(http.MethodOptions, "https://a.example", map[string]string{"Access-Control-Request-Headers": "x-token"})
	if res.StatusCode != http.StatusNoContent ||
		res.Header.Get("Access-Control-Allow-Origin") != "https://a.example" ||
		res.Header.Get("Access-Control-Allow-Credentials") != "true" ||
		res.Header.Get("Access-Control-Allow-Headers") != "x-token" ||
		res.Header.Get("Access-Control-Max-Age") != "60" ||
		!strings.Contains(res.Header.Get("Access-Control-Allow-Methods"), "POST") {
		t.Errorf("preflight = %d %v", res.StatusCode, res.Header)
	}
	res = do(http.MethodGet, "https://a.example", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get("Access-Control-Allow-Origin") != "https://a.example" {
		t.Errorf("GET = %d %v", res.StatusCode, res.Header)
	}
	res = do(http.MethodGet, "https://evil.example", nil)
	if res.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin got %v", res.Header)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hdr := http.Header{"Origin": {"https://evil.example"}}
	if c, _, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), &websocket.DialOptions{HTTPHeader: hdr}); err == nil {
		_ = c.CloseNow()
		t.Error("WebSocket from foreign origin accepted")
	}
	hdr.Set("Origin", "https://a.example")
	c, _, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("WebSocket from allowed origin: %v", err)
	}
	_ = c.CloseNow()

	any := newTestServer(t, &Options{CORS: &CORSOptions{Origins: []string{"*"}}})
	req, err := http.NewRequest(http.MethodGet, any.url("EIO=4&transport=polling"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", "https://b.example")
	res, err = any.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("wildcard = %v", res.Header)
	}
}

func TestTransportsOption(t *testing.T) {
	ts := newTestServer(t, &Options{Transports: []string{TransportWebSocket}})
	if res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", ""); res.status != http.StatusBadRequest {
		t.Errorf("polling handshake = %d", res.status)
	}
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	readWS(t, c)

	noUp := newTestServer(t, &Options{DisableUpgrades: true})
	res := noUp.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	o := parseOpen(t, res.body)
	if len(o.Upgrades) != 0 {
		t.Errorf("upgrades = %v", o.Upgrades)
	}
	up := dialWS(t, noUp.wsURL("EIO=4&transport=websocket&sid="+o.SID))
	if err := readWSClosed(t, up); websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
		t.Errorf("upgrade with DisableUpgrades: %v", err)
	}
}

func TestPerMessageDeflate(t *testing.T) {
	ts := newTestServer(t, &Options{PerMessageDeflate: true, CompressionThreshold: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), &websocket.DialOptions{CompressionMode: websocket.CompressionNoContextTakeover})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if ext := res.Header.Get("Sec-WebSocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Errorf("extensions = %q", ext)
	}
	readWS(t, c)
	long := "4" + strings.Repeat("compress me ", 50)
	writeWS(t, c, websocket.MessageText, long)
	if _, got := readWS(t, c); got != long {
		t.Errorf("echo mismatch: %d bytes", len(got))
	}
}

// TestUpgradeRacingPoll sends a poll after the probe and the upgrade packet
// while the poll is held: the poll is refused as after the upgrade, as the
// official suite expects when it sends both at once.
func TestUpgradeRacingPoll(t *testing.T) {
	rec := newRecorder(true)
	srv := NewServer(rec, nil)
	srv.upgradeSettle = time.Minute // held until the upgrade packet, however slow
	ts := serve(t, srv, rec)
	sid := ts.handshake(t)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket&sid="+sid))
	writeWS(t, c, websocket.MessageText, "2probe")
	if _, got := readWS(t, c); got != "3probe" {
		t.Fatalf("probe answer = %q", got)
	}
	pending := make(chan response, 1)
	go func() { pending <- ts.poll(t, sid) }()
	waitPollPending(t, ts, sid)
	writeWS(t, c, websocket.MessageText, "5")
	if res := <-pending; res.status != http.StatusBadRequest {
		t.Errorf("poll during the upgrade = %d %q, want 400", res.status, res.body)
	}
	writeWS(t, c, websocket.MessageText, "4hello")
	if _, got := readWS(t, c); got != "4hello" {
		t.Errorf("echo = %q", got)
	}
}
