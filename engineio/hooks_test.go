package engineio

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestConnectionErrorHook: every refused request is reported with the
// reference server's code, message and context.
func TestConnectionErrorHook(t *testing.T) {
	var mu sync.Mutex
	var got []*RequestError
	ts := newTestServer(t, &Options{
		AllowRequest: func(r *http.Request) error {
			if r.URL.Query().Get("deny") != "" {
				return errors.New("no thanks")
			}
			return nil
		},
		OnConnectionError: func(e *RequestError) {
			mu.Lock()
			got = append(got, e)
			mu.Unlock()
		},
	})
	tests := []struct {
		method, query string
		code          int
		message       string
		key           string
		value         any
	}{
		{"GET", "EIO=4&transport=abc", CodeUnknownTransport, "Transport unknown", "transport", "abc"},
		{"GET", "EIO=4&transport=polling&sid=nope", CodeUnknownSID, "Session ID unknown", "sid", "nope"},
		{"POST", "EIO=4&transport=polling", CodeBadHandshakeMethod, "Bad handshake method", "method", "POST"},
		{"GET", "EIO=4&transport=websocket", CodeBadRequest, "Bad request", "name", "TRANSPORT_HANDSHAKE_ERROR"},
		{"GET", "EIO=4&transport=polling&deny=1", CodeForbidden, "no thanks", "message", "no thanks"},
		{"GET", "EIO=3&transport=polling", CodeUnsupportedProtocol, "Unsupported protocol version", "protocol", 3},
	}
	for _, tt := range tests {
		body := ""
		if tt.method == "POST" {
			body = "4x"
		}
		ts.do(t, tt.method, tt.query, body)
	}
	ts.handshake(t) // accepted: not reported
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(tests) {
		t.Fatalf("%d reports for %d refusals", len(got), len(tests))
	}
	for i, tt := range tests {
		e := got[i]
		if e.Code != tt.code || e.Message != tt.message || e.Context[tt.key] != tt.value || e.Request == nil || e.Request.Method != tt.method {
			t.Errorf("report %d = %+v, want code %d message %q %s=%v", i, e, tt.code, tt.message, tt.key, tt.value)
		}
	}
}

// TestCookieAndHeaderHooks: the session cookie and the initial headers come
// with the first response of a session only, the headers hook with every
// response, over polling and WebSocket.
func TestCookieAndHeaderHooks(t *testing.T) {
	ts := newTestServer(t, &Options{
		Cookie: &http.Cookie{Name: "sticky", Secure: true},
		OnInitialHeaders: func(h http.Header, r *http.Request) {
			h.Set("X-Initial", "yes")
		},
		OnHeaders: func(h http.Header, r *http.Request) {
			h.Set("X-Every", r.Method)
		},
	})
	res := ts.do(t, http.MethodGet, "EIO=4&transport=polling", "")
	sid := parseOpen(t, res.body).SID
	cookies := (&http.Response{Header: res.header}).Cookies()
	if len(cookies) != 1 || cookies[0].Name != "sticky" || cookies[0].Value != sid || cookies[0].Path != "/" ||
		!cookies[0].HttpOnly || !cookies[0].Secure || cookies[0].SameSite != http.SameSiteLaxMode {
		t.Fatalf("handshake cookies = %+v (sid %s)", cookies, sid)
	}
	if res.header.Get("X-Initial") != "yes" || res.header.Get("X-Every") != "GET" {
		t.Fatalf("handshake headers = %v", res.header)
	}
	res = ts.post(t, sid, "4x")
	if res.header.Get("Set-Cookie") != "" || res.header.Get("X-Initial") != "" || res.header.Get("X-Every") != "POST" {
		t.Fatalf("later polling headers = %v", res.header)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, hr, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, open := readWS(t, c)
	wsSID := parseOpen(t, open).SID
	cookies = hr.Cookies()
	if len(cookies) != 1 || cookies[0].Value != wsSID || hr.Header.Get("X-Initial") != "yes" || hr.Header.Get("X-Every") != "GET" {
		t.Fatalf("websocket handshake cookies %+v headers %v (sid %s)", cookies, hr.Header, wsSID)
	}
	// An upgrade is not the session's first response: no cookie.
	up, hr2, err := websocket.Dial(ctx, ts.wsURL("EIO=4&transport=websocket&sid="+sid), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer up.CloseNow()
	if hr2.Header.Get("Set-Cookie") != "" || hr2.Header.Get("X-Every") != "GET" {
		t.Fatalf("upgrade headers = %v", hr2.Header)
	}
}

// rawGet gets a polling URL with Accept-Encoding set by hand, so that the
// response reaches the test as the server encoded it.
func rawGet(t *testing.T, ts *testServer, query, acceptEncoding string) (http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.url(query), nil)
	if err != nil {
		t.Fatal(err)
	}
	if acceptEncoding != "" {
		req.Header.Set("Accept-Encoding", acceptEncoding)
	}
	res, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.Header, b
}

// TestHTTPCompression: polling responses from the threshold on are gzip- or
// deflate-compressed for clients that accept it, not when every message has
// NoCompress, not below the threshold, not when disabled.
func TestHTTPCompression(t *testing.T) {
	big := strings.Repeat("abcdefgh", 512) // 4096 bytes
	cases := []struct {
		name       string
		opts       *Options
		msg        Message
		accept     string
		wantEncode string
	}{
		{"gzip", nil, Message{Data: []byte(big)}, "gzip, deflate", "gzip"},
		{"deflate", nil, Message{Data: []byte(big)}, "deflate", "deflate"},
		{"q=0", nil, Message{Data: []byte(big)}, "gzip;q=0", ""},
		{"not accepted", nil, Message{Data: []byte(big)}, "identity", ""},
		{"below threshold", nil, Message{Data: []byte("small")}, "gzip", ""},
		{"NoCompress", nil, Message{Data: []byte(big), NoCompress: true}, "gzip", ""},
		{"disabled", &Options{HTTPCompressionThreshold: -1}, Message{Data: []byte(big)}, "gzip", ""},
		{"lower threshold", &Options{HTTPCompressionThreshold: 100}, Message{Data: []byte(strings.Repeat("z", 120))}, "gzip", "gzip"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.opts)
			sid := ts.handshake(t)
			if err := ts.eio.lookup(sid).Send(tc.msg); err != nil {
				t.Fatal(err)
			}
			h, body := rawGet(t, ts, "EIO=4&transport=polling&sid="+sid, tc.accept)
			if got := h.Get("Content-Encoding"); got != tc.wantEncode {
				t.Fatalf("Content-Encoding = %q, want %q", got, tc.wantEncode)
			}
			var r io.Reader = bytes.NewReader(body)
			switch tc.wantEncode {
			case "gzip":
				zr, err := gzip.NewReader(r)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			case "deflate":
				zr, err := zlib.NewReader(r)
				if err != nil {
					t.Fatal(err)
				}
				r = zr
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if want := "4" + string(tc.msg.Data); string(plain) != want {
				t.Fatalf("payload of %d bytes, want %d", len(plain), len(want))
			}
			if tc.wantEncode != "" && len(body) >= len(plain)/2 {
				t.Fatalf("compressed %d bytes into %d", len(plain), len(body))
			}
		})
	}
}
