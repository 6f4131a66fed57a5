package engineio

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/go-cmp/cmp"
)

// TestHandshakeRoundTrip packs requests and checks that what comes back is the
// request without the WebSocket handshake headers.
func TestHandshakeRoundTrip(t *testing.T) {
	long := strings.Repeat("x", 70_000) // length needs a three-byte uvarint
	r := httptest.NewRequest(http.MethodGet, "/engine.io/?EIO=4&transport=websocket&q=%C3%A9+1", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	r.Header = http.Header{
		"Cookie":                []string{"a=1", "b=2"},
		"Empty":                 []string{""},
		"Long":                  []string{long},
		"Connection":            []string{"Upgrade"},
		"Upgrade":               []string{"websocket"},
		"Sec-Websocket-Key":     []string{"k"},
		"Sec-Websocket-Version": []string{"13"},
	}
	got := newHandshake(r).request(nil)
	want := http.Header{"Cookie": {"a=1", "b=2"}, "Empty": {""}, "Long": {long}}
	if diff := cmp.Diff(want, got.Header); diff != "" {
		t.Errorf("headers (-want +got):\n%s", diff)
	}
	if got.Method != http.MethodGet || got.Host != "example.com" || got.RemoteAddr != "192.0.2.1:1234" ||
		got.RequestURI != r.RequestURI || got.Proto != "HTTP/1.1" || got.ProtoMajor != 1 || got.ProtoMinor != 1 ||
		got.Body != http.NoBody || got.TLS != nil {
		t.Errorf("request = %+v", got)
	}
	if q := got.URL.Query(); q.Get("q") != "é 1" || q.Get("transport") != "websocket" || got.URL.Path != "/engine.io/" {
		t.Errorf("URL = %v", got.URL)
	}
	if got == newHandshake(r).request(nil) {
		t.Error("two calls returned the same request")
	}

	// A request made by hand, without RequestURI.
	r2, err := http.NewRequest(http.MethodGet, "http://example.com/a%20b?x=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	got = newHandshake(r2).request(nil)
	if got.URL.Path != "/a b" || got.URL.RawQuery != "x=1" || got.RequestURI != "/a%20b?x=1" || len(got.Header) != 0 {
		t.Errorf("request = %+v, URL %v", got, got.URL)
	}
}

// TestSessionRequest checks Session.Request over both transports, and TLS.
func TestSessionRequest(t *testing.T) {
	ts := newTestServer(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket&token=abc"), &websocket.DialOptions{
		HTTPHeader: http.Header{"X-Token": {"one", "two"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readWS(t, c)
	ts.handshake(t)
	ts.rec.waitFor(t, "sessions", func(r *recorder) bool { return len(r.opened) == 2 })
	// The WebSocket client reads its open packet before OnOpen runs: the
	// sessions may be recorded in either order.
	wsSess, pollSess := ts.rec.opened[0], ts.rec.opened[1]
	if wsSess.Transport() != TransportWebSocket {
		wsSess, pollSess = pollSess, wsSess
	}
	ws := wsSess.Request()
	if got := ws.Header["X-Token"]; len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Errorf("X-Token = %q", got)
	}
	if ws.URL.Query().Get("token") != "abc" || ws.Header.Get("Sec-WebSocket-Key") != "" || ws.Header.Get("Upgrade") != "" {
		t.Errorf("websocket request = %+v", ws)
	}
	if ws.RemoteAddr == "" || ws.Host != ts.Listener.Addr().String() {
		t.Errorf("RemoteAddr %q, Host %q", ws.RemoteAddr, ws.Host)
	}
	if p := pollSess.Request(); p.URL.Query().Get("transport") != "polling" || p.TLS != nil {
		t.Errorf("polling request = %+v", p)
	}

	rec := newRecorder(false)
	srv := NewServer(rec, nil)
	hs := httptest.NewTLSServer(srv)
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		hs.Close()
	})
	res, err := hs.Client().Get(hs.URL + "/?EIO=4&transport=polling")
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close() // only the session matters
	rec.waitFor(t, "TLS session", func(r *recorder) bool { return len(r.opened) == 1 })
	if rec.opened[0].Request().TLS == nil {
		t.Error("TLS state missing")
	}
}

// TestTLSWebSocketNotParked checks that a WebSocket over TLS keeps its reader
// goroutine (TLS buffers bytes the socket's readiness does not show) and works.
func TestTLSWebSocketNotParked(t *testing.T) {
	rec := newRecorder(true)
	srv := NewServer(rec, nil)
	hs := httptest.NewTLSServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		hs.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(hs.URL, "https")+"/?EIO=4&transport=websocket", &websocket.DialOptions{HTTPClient: hs.Client()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readWS(t, c)
	for _, m := range []string{"4one", "4two"} {
		writeWS(t, c, websocket.MessageText, m)
		if _, got := readWS(t, c); got != m {
			t.Errorf("echo %q, want %q", got, m)
		}
		waitConns(t, srv, 1, 0)
	}
	if rec.opened[0].Request().TLS == nil {
		t.Error("TLS state missing")
	}
}
