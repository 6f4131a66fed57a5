package engineio

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/durasock/durasock/internal/testwait"
)

// heapInUse returns the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// refusedMetric reads durasock_engineio_refused_total{reason} from reg.
func refusedMetric(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "durasock_engineio_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no refused series with reason %q", reason)
	return 0
}

// TestPollingSlowBodyMemoryBounded: clients that announce a large POST body
// (Content-Length 1 MB, within MaxPayload) and send one byte of it hold only
// what they sent, not what they announced, and only until
// PollingBodyTimeout: the server answers 408, closes their sessions and
// counts them. Before, each such request reserved its Content-Length at once
// and waited for the rest forever: 300 of them held 300 MB.
func TestPollingSlowBodyMemoryBounded(t *testing.T) {
	const (
		clients = 300
		limit   = 10 << 20
	)
	reg := prometheus.NewRegistry()
	var logs bytes.Buffer
	var logMu sync.Mutex
	ts := newTestServer(t, &Options{
		PollingBodyTimeout: 2 * time.Second,
		Registerer:         reg,
		Logger:             slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)),
	})
	sids := make([]string, clients)
	for i := range sids {
		sids[i] = ts.handshake(t)
	}
	addr := strings.TrimPrefix(ts.URL, "http://")
	base := heapInUse()

	conns := make([]net.Conn, clients)
	for i, sid := range sids {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		conns[i] = c
		req := "POST /engine.io/?EIO=4&transport=polling&sid=" + sid + " HTTP/1.1\r\nHost: x\r\n" +
			"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000000\r\n\r\n4"
		if _, err := c.Write([]byte(req)); err != nil {
			t.Fatal(err)
		}
	}
	posting := func() int {
		n := 0
		for _, sid := range sids {
			if s := ts.eio.lookup(sid); s != nil {
				s.mu.Lock()
				if s.posting {
					n++
				}
				s.mu.Unlock()
			}
		}
		return n
	}
	testwait.For(t, 20*time.Second, "every POST being read", func() bool { return posting() == clients })
	var peak uint64
	for range 5 {
		peak = max(peak, heapInUse())
	}
	grown := int64(peak) - int64(base)
	t.Logf("%d slow POSTs of 1 MB announced, 1 byte sent: heap +%.1f MiB", clients, float64(grown)/(1<<20))
	if grown > limit {
		t.Errorf("heap grew by %d MiB under %d slow POSTs, want < %d MiB", grown>>20, clients, limit>>20)
	}

	// Each one times out: 408, session closed, counted.
	for i, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusRequestTimeout {
			t.Fatalf("client %d: status %d, want 408", i, res.StatusCode)
		}
	}
	testwait.For(t, 10*time.Second, "sessions closed", func() bool { return ts.eio.Count() == 0 })
	for _, sid := range sids {
		if reason, _ := ts.rec.closeReason(sid); reason != ReasonTransportError {
			t.Fatalf("session %s closed with %q, want %q", sid, reason, ReasonTransportError)
		}
	}
	if got := refusedMetric(t, reg, RefusedBodyTimeout); got != clients {
		t.Errorf("refused{body timeout} = %v, want %d", got, clients)
	}
	if got := ts.eio.Refused()[RefusedBodyTimeout]; got != clients {
		t.Errorf("Refused()[body timeout] = %d", got)
	}
	logMu.Lock()
	lines := strings.Count(logs.String(), "client input refused")
	logMu.Unlock()
	if lines < 1 || lines > 30 { // one a second at most; the timeouts spread over a few seconds
		t.Errorf("%d warnings for %d refusals in a few seconds, want a rate-limited few", lines, clients)
	}
	if after := heapInUse(); int64(after)-int64(base) > limit {
		t.Errorf("heap still +%d MiB after the timeouts", (int64(after)-int64(base))>>20)
	}
}

// TestPollingBodyGrowsWithWhatArrives: a body sent in pieces within the
// deadline is read whole; one over MaxPayload without a Content-Length is
// refused with 413.
func TestPollingBodyGrowsWithWhatArrives(t *testing.T) {
	ts := newTestServer(t, &Options{MaxPayload: 64 << 10})
	sid := ts.handshake(t)
	msg := "4" + strings.Repeat("é", 20_000) // 40 001 bytes, several buffer growths
	if res := ts.post(t, sid, msg); res.status != http.StatusOK || res.body != "ok" {
		t.Fatalf("post = %d %q", res.status, res.body)
	}
	ts.rec.waitFor(t, "message", func(r *recorder) bool { return len(r.messages) == 1 })
	ts.rec.mu.Lock()
	got := string(ts.rec.messages[0].Data)
	ts.rec.mu.Unlock()
	if got != msg[1:] {
		t.Fatalf("message of %d bytes, want %d", len(got), len(msg)-1)
	}

	// Chunked (no Content-Length) and too large.
	pr, pw := net.Pipe()
	defer pr.Close()
	go func() {
		defer pw.Close()
		for range 100 {
			if _, err := pw.Write([]byte(strings.Repeat("x", 1000))); err != nil {
				return
			}
		}
	}()
	req, err := http.NewRequest(http.MethodPost, ts.url("EIO=4&transport=polling&sid="+sid), pr)
	if err != nil {
		t.Fatal(err)
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked body over the limit: %d, want 413", res.StatusCode)
	}
	ts.rec.waitFor(t, "close", func(r *recorder) bool { return r.closed[sid] == ReasonPayloadTooLarge })
	if got := ts.eio.Refused()[RefusedPayloadTooLarge]; got != 1 {
		t.Errorf("Refused()[payload too large] = %d, want 1", got)
	}
}

// TestInvalidUTF8Refused: a WebSocket text message that is not UTF-8 closes
// the connection with 1007 and a polling body that is not UTF-8 gets 400;
// neither reaches the handler, both close the session and are counted.
func TestInvalidUTF8Refused(t *testing.T) {
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, &Options{Registerer: reg})

	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	_, open := readWS(t, c)
	wsSID := parseOpen(t, open).SID
	writeWS(t, c, websocket.MessageText, "4valid é")
	if _, echo := readWS(t, c); echo != "4valid é" {
		t.Fatalf("echo %q", echo)
	}
	writeWS(t, c, websocket.MessageText, "4[\"chat\",\"\xff\xfe\"]")
	if err := readWSClosed(t, c); websocket.CloseStatus(err) != websocket.StatusInvalidFramePayloadData {
		t.Errorf("close = %v, want 1007", err)
	}
	ts.rec.waitFor(t, "ws close", func(r *recorder) bool { return r.closed[wsSID] == ReasonParseError })

	sid := ts.handshake(t)
	if res := ts.post(t, sid, "4ok\x1e4\xc3\x28"); res.status != http.StatusBadRequest {
		t.Errorf("invalid UTF-8 body: %d, want 400", res.status)
	}
	ts.rec.waitFor(t, "polling close", func(r *recorder) bool { return r.closed[sid] == ReasonParseError })

	ts.rec.mu.Lock()
	for _, m := range ts.rec.messages {
		if !m.Binary && !bytesValidUTF8(m.Data) {
			t.Errorf("invalid UTF-8 reached the handler: %q", m.Data)
		}
	}
	n := len(ts.rec.messages)
	ts.rec.mu.Unlock()
	if n != 1 { // "valid é" only: the valid packet of the refused body is not passed on either
		t.Errorf("%d messages reached the handler, want 1", n)
	}
	if got := refusedMetric(t, reg, RefusedInvalidUTF8); got != 2 {
		t.Errorf("refused{invalid utf-8} = %v, want 2", got)
	}
}

func bytesValidUTF8(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

// corsRequest sends a request with origin (none if empty) and returns the
// response headers and status.
func corsRequest(t *testing.T, ts *testServer, method, origin string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, ts.url("EIO=4&transport=polling"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header
}

// wsOrigin dials a WebSocket with origin and reports whether it was accepted.
func wsOrigin(t *testing.T, ts *testServer, origin string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, res, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
	if err != nil {
		if res == nil || res.StatusCode != http.StatusForbidden {
			t.Fatalf("WebSocket from %q: %v, want 101 or 403", origin, err)
		}
		return false
	}
	_ = c.CloseNow()
	return true
}

// TestCORSWildcardNeverWithCredentials: "*" answers "*" without credentials
// even when Credentials is set (before, it echoed every Origin, "null"
// included, with credentials), and "null" is allowed only when listed.
func TestCORSWildcardNeverWithCredentials(t *testing.T) {
	var logs bytes.Buffer
	var mu sync.Mutex
	reg := prometheus.NewRegistry()
	ts := newTestServer(t, &Options{
		CORS:       &CORSOptions{Origins: []string{"*"}, Credentials: true},
		Registerer: reg,
		Logger:     slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil)),
	})
	mu.Lock()
	if !strings.Contains(logs.String(), "never allows credentials") {
		t.Errorf("no warning about \"*\" with credentials; log:\n%s", logs.String())
	}
	mu.Unlock()
	for _, method := range []string{http.MethodGet, http.MethodOptions} {
		_, h := corsRequest(t, ts, method, "https://evil.example")
		if h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s with \"*\": %v", method, h)
		}
		_, h = corsRequest(t, ts, method, "null")
		if h.Get("Access-Control-Allow-Origin") != "" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s from null with \"*\": %v", method, h)
		}
		if h.Get("Vary") != "" {
			t.Errorf("\"*\" alone needs no Vary: %v", h)
		}
	}
	if !wsOrigin(t, ts, "https://any.example") {
		t.Error("WebSocket refused with \"*\"")
	}
	if wsOrigin(t, ts, "null") {
		t.Error("WebSocket from null accepted with \"*\"")
	}
	if got := refusedMetric(t, reg, RefusedOrigin); got != 1 {
		t.Errorf("refused{origin} = %v, want 1", got)
	}

	listed := newTestServer(t, &Options{CORS: &CORSOptions{Origins: []string{"null", "https://a.example"}, Credentials: true}})
	_, h := corsRequest(t, listed, http.MethodGet, "null")
	if h.Get("Access-Control-Allow-Origin") != "null" || h.Get("Access-Control-Allow-Credentials") != "true" || h.Get("Vary") != "Origin" {
		t.Errorf("listed null: %v", h)
	}
	_, h = corsRequest(t, listed, http.MethodGet, "https://b.example")
	if h.Get("Access-Control-Allow-Origin") != "" || h.Get("Vary") != "Origin" {
		t.Errorf("unlisted origin: %v", h)
	}
	if !wsOrigin(t, listed, "null") {
		t.Error("WebSocket from listed null refused")
	}
	// Clients that are not browsers send no Origin and are never refused.
	if status, _ := corsRequest(t, listed, http.MethodGet, ""); status != http.StatusOK {
		t.Errorf("no Origin: %d", status)
	}
}

// TestCORSAllowOriginFunc: the function decides for every origin not listed,
// sees the request, and an origin it allows is echoed with credentials.
func TestCORSAllowOriginFunc(t *testing.T) {
	var asked sync.Map
	ts := newTestServer(t, &Options{CORS: &CORSOptions{
		Origins: []string{"https://listed.example"},
		AllowOriginFunc: func(origin string, r *http.Request) bool {
			asked.Store(origin, r.URL.Query().Get("EIO"))
			return strings.HasSuffix(origin, ".trusted.example")
		},
		Credentials: true,
	}})
	for origin, want := range map[string]bool{
		"https://app.trusted.example":  true,
		"https://listed.example":       true,
		"https://trusted.example.evil": false,
		"null":                         false,
	} {
		_, h := corsRequest(t, ts, http.MethodGet, origin)
		allowed := h.Get("Access-Control-Allow-Origin") == origin && h.Get("Access-Control-Allow-Credentials") == "true"
		if allowed != want || (!want && h.Get("Access-Control-Allow-Origin") != "") {
			t.Errorf("%s: headers %v, want allowed=%v", origin, h, want)
		}
		if ws := wsOrigin(t, ts, origin); ws != want {
			t.Errorf("%s: WebSocket accepted=%v, want %v", origin, ws, want)
		}
	}
	if _, ok := asked.Load("https://listed.example"); ok {
		t.Error("AllowOriginFunc asked about a listed origin")
	}
	if v, _ := asked.Load("null"); v != "4" {
		t.Errorf("AllowOriginFunc saw request query EIO=%v", v)
	}
}

// TestQueuedBytesAndVolatileDrops: the process-wide gauge of queued bytes
// follows the queues, and a volatile message is dropped, and counted, as soon
// as its session is behind, before any other message.
func TestQueuedBytesAndVolatileDrops(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := NewServer(newRecorder(false), &Options{Registerer: reg})
	defer srv.Close()
	a, b := openBare(t, srv), openBare(t, srv)
	if err := a.Send(msgs(3, 100)...); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(msgs(1, 50)...); err != nil {
		t.Fatal(err)
	}
	if got := srv.Stats().QueuedBytes; got != 350 {
		t.Errorf("QueuedBytes = %d, want 350", got)
	}
	// a is behind (nothing takes its queue): volatile messages go first.
	if a.SendVolatile(msgs(2, 10)...) {
		t.Error("volatile messages queued behind others")
	}
	if got := srv.Stats().VolatileDropped; got != 2 {
		t.Errorf("VolatileDropped = %d, want 2", got)
	}
	takeQueue(a)
	if got := srv.Stats().QueuedBytes; got != 50 {
		t.Errorf("QueuedBytes after a's queue was taken = %d, want 50", got)
	}
	b.Close()
	a.closeNow(ReasonForcedClose, closeKill)
	b.closeNow(ReasonForcedClose, closeKill)
	if got := srv.Stats().QueuedBytes; got != 0 {
		t.Errorf("QueuedBytes after close = %d, want 0", got)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, mf := range mfs {
		found[mf.GetName()] = true
	}
	for _, name := range []string{"durasock_engineio_send_queue_bytes", "durasock_engineio_polls_waiting", "durasock_engineio_volatile_dropped_total", "durasock_engineio_refused_total", "durasock_engineio_clients_cut_total"} {
		if !found[name] {
			t.Errorf("metric %s not registered", name)
		}
	}
}

// TestBadPacketsCounted: packets that do not decode are counted as refusals.
func TestBadPacketsCounted(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	if res := ts.post(t, sid, "9nope"); res.status != http.StatusBadRequest {
		t.Errorf("bad payload: %d", res.status)
	}
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	readWS(t, c)
	writeWS(t, c, websocket.MessageText, "x")
	readWSClosed(t, c)
	testwait.For(t, 10*time.Second, "two refusals", func() bool { return ts.eio.Refused()[RefusedBadPacket] == 2 })
}

// TestSendQueueBudget: over the process-wide budget, a send to a client that
// is behind cuts that client; a client that keeps up is never cut by it.
func TestSendQueueBudget(t *testing.T) {
	rec := newRecorder(false)
	srv := NewServer(rec, &Options{SendQueueBudget: 1000})
	defer srv.Close()
	a, b := openBare(t, srv), openBare(t, srv)
	if err := a.Send(msgs(1, 600)...); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(msgs(1, 300)...); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(msgs(1, 200)...); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("send over the budget to a client that is behind = %v, want ErrQueueFull", err)
	}
	if reason, _ := rec.closeReason(b.ID()); reason != ReasonSendQueueFull {
		t.Errorf("b closed with %q, want %q", reason, ReasonSendQueueFull)
	}
	takeQueue(a) // a keeps up
	c := openBare(t, srv)
	if err := c.Send(msgs(1, 2000)...); err != nil {
		t.Errorf("a first message over the budget to a client that keeps up: %v", err)
	}
	if err := a.Send(msgs(1, 100)...); err != nil {
		t.Errorf("a client with an empty queue was cut: %v", err)
	}
	if got := srv.Stats().CutSendQueueFull; got != 1 {
		t.Errorf("CutSendQueueFull = %d, want 1", got)
	}
}

// TestPollsWaitingCounted: a long poll the server holds shows in
// Stats().PollsWaiting until it is answered.
func TestPollsWaitingCounted(t *testing.T) {
	ts := newTestServer(t, nil)
	sid := ts.handshake(t)
	if n := ts.eio.Stats().PollsWaiting; n != 0 {
		t.Fatalf("PollsWaiting before any poll = %d, want 0", n)
	}
	got := make(chan response, 1)
	go func() { got <- ts.poll(t, sid) }()
	testwait.For(t, 10*time.Second, "the poll being held", func() bool { return ts.eio.Stats().PollsWaiting == 1 })
	if res := ts.post(t, sid, "4hi"); res.status != http.StatusOK {
		t.Fatalf("POST status = %d, body %q", res.status, res.body)
	}
	if res := <-got; res.status != http.StatusOK || res.body != "4hi" {
		t.Fatalf("poll = %d %q, want 200 \"4hi\" (the echo)", res.status, res.body)
	}
	testwait.For(t, 10*time.Second, "the answered poll no longer counted", func() bool { return ts.eio.Stats().PollsWaiting == 0 })
}
