package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// running is an in-process app a test talks to.
type running struct {
	app  *app
	url  string // http://127.0.0.1:port
	logs *syncBuffer
	stop func() error // drains; idempotent
}

// launch runs an app in-process on free ports; configure may adjust it before
// it serves. The test's cleanup drains it.
func launch(t *testing.T, configure func(*app), args ...string) *running {
	t.Helper()
	cfg, err := parseConfig(append([]string{"-addr", "127.0.0.1:0", "-drain-timeout", "3s"}, args...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(a)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	var adminLn net.Listener
	if cfg.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln, adminLn) }()
	var once sync.Once
	var serveErr error
	r := &running{app: a, url: "http://" + ln.Addr().String(), logs: logs}
	r.stop = func() error {
		once.Do(func() {
			cancel()
			serveErr = <-done
		})
		return serveErr
	}
	t.Cleanup(func() { _ = r.stop() })
	return r
}

func request(t *testing.T, method, url string, header map[string]string, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestFlagErrorsArePlain(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"-ping-interval", "5"}, want: `"5" has no unit: write it like 5s`},
		{args: []string{"-drain-timeout", "soon"}, want: "not a duration: write it like 25s"},
		{args: []string{"-log-level", "loud"}, want: `-log-level "loud": want debug, info, warn or error`},
		{args: []string{"-send-queue", "many"}, want: "not a whole number"},
		{args: []string{"-max-payload", "99999999999999999999"}, want: "is too large"},
		{args: []string{"-demo=maybe"}, want: "want true or false"},
		{args: []string{"-addr", "3000"}, want: "want host:port"},
		{args: []string{"-outbox-max-messages", "-2"}, want: "0 (default) or -1 (no bound)"},
		{args: []string{"-ping-timeout", "0s"}, want: "-ping-timeout 0s: must be more than 0"},
		{args: []string{"-tcp-keepalive", "-2s"}, want: "-tcp-keepalive -2s: want a positive duration, 0 (off) or -1"},
		{args: []string{"-nope"}, want: "flag provided but not defined: -nope"},
		{args: []string{"extra"}, want: `unexpected argument "extra"`},
		{env: map[string]string{"DURASOCK_MAX_PAYLOAD": "lots"}, want: `DURASOCK_MAX_PAYLOAD="lots": not a whole number`},
		{env: map[string]string{"DURASOCK_RECOVERY": "2"}, want: `DURASOCK_RECOVERY="2": "2" has no unit`},
	} {
		_, err := parseConfig(c.args, func(k string) string { return c.env[k] }, io.Discard)
		if err == nil {
			t.Errorf("%q %v: no error", c.args, c.env)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, c.want) {
			t.Errorf("%q %v: error %q, want it to say %q", c.args, c.env, msg, c.want)
		}
		for _, bad := range []string{"parse error", "slog", "strconv", "time: "} {
			if strings.Contains(msg, bad) {
				t.Errorf("%q %v: error %q shows %q", c.args, c.env, msg, bad)
			}
		}
		if !strings.Contains(msg, "durasock -h") {
			t.Errorf("%q: error %q does not say how to list the flags", c.args, msg)
		}
	}
}

// TestOutboxZeroAndMinusOne: as docs/RELIABILITY.md says, 0 means the default
// and -1 no bound.
func TestOutboxZeroAndMinusOne(t *testing.T) {
	c, err := parseConfig([]string{"-outbox-max-messages", "0", "-outbox-max-bytes", "-1", "-outbox-max-age", "-1"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbox.MaxMessages != 100_000 || c.Outbox.MaxBytes != -1 || c.Outbox.MaxAge != -1 {
		t.Fatalf("outbox = %+v", c.Outbox)
	}
	c, err = parseConfig([]string{"-outbox-max-bytes", "8MiB", "-outbox-max-age", "0", "-outbox-max-messages", "-1"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Outbox.MaxBytes != 8<<20 || c.Outbox.MaxAge != 5*time.Minute || c.Outbox.MaxMessages != -1 {
		t.Fatalf("outbox = %+v", c.Outbox)
	}
	// The bus takes them: a node starts with no bound at all.
	r := launch(t, nil, "-redis", "redis://127.0.0.1:1", "-outbox-max-messages", "-1", "-outbox-max-bytes", "-1", "-outbox-max-age", "-1", "-ready-needs-redis=false")
	if code, _, body := request(t, "GET", r.url+"/readyz", nil, ""); code != http.StatusOK {
		t.Fatalf("readyz with unbounded outbox: %d %s", code, body)
	}
}

func TestRedaction(t *testing.T) {
	for _, c := range []struct{ url, want string }{
		{"redis://127.0.0.1:6379", "redis://127.0.0.1:6379"},
		{"redis://user@host:6379/0", "redis://user@host:6379/0"},
		{"redis://:s3cret@host:6379/0", "redis://:xxxxx@host:6379/0"},
		{"redis://user:s3cret@host:6379", "redis://user:xxxxx@host:6379"},
		{"rediss://user:s3cret@host:6380?ca=/etc/ca.pem", "rediss://user:xxxxx@host:6380?ca=/etc/ca.pem"},
		{"redis://user:pa/ss?w#rd@host:6379/1", "redis://user:xxxxx@host:6379/1"},
		{"redis://user:p@ss@host:6379", "redis://user:xxxxx@host:6379"},
		{"redis://user:@?@host", "redis://user:xxxxx@host"},
		{"redis://user:pw@host:6379/0?client_name=a@b", "redis://user:xxxxx@b"}, // hides more, never less
		{"redis://user:p%40ss@host:6379", "redis://user:xxxxx@host:6379"},
		{"redis+sentinel://user:pw1@s1:26379,s2:26379/mymaster?sentinel_password=pw2", "redis+sentinel://user:xxxxx@s1:26379,s2:26379/mymaster?sentinel_password=xxxxx"},
		{"redis+sentinel://s1:26379/mymaster?sentinel_username=sen&sentinel_password=p@ss&db=2", "redis+sentinel://s1:26379/mymaster?sentinel_username=sen&sentinel_password=xxxxx&db=2"},
		{"redis+sentinel://s1:26379/mymaster?Sentinel_Password=a&b", "redis+sentinel://s1:26379/mymaster?Sentinel_Password=xxxxx"},
		{"redis+cluster://:pw@n1:6379,n2:6379", "redis+cluster://:xxxxx@n1:6379,n2:6379"},
		{"unix://:pw@/run/redis.sock", "unix://:xxxxx@/run/redis.sock"},
		{"not a url at all", "not a url at all"},
	} {
		if got := redactURL(c.url); got != c.want {
			t.Errorf("redactURL(%q) = %q, want %q", c.url, got, c.want)
		}
	}

	// Errors and logs: a URL the parser refuses is shown redacted, with its
	// secrets hidden wherever they appear.
	for _, u := range []string{
		"redis://user:pa/ss?w#rd@host:6379/1",
		"redis+sentinel://s1:26379/mymaster?sentinel_password=topsecret&db=x",
		"redis+sentinel://user:hunter22@s1:26379?sentinel_password=hunter33",
		"redis://user:hunter44@host:notaport",
	} {
		logs := &syncBuffer{}
		cfg, err := parseConfig([]string{"-redis", u, "-addr", "127.0.0.1:0"}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		_, err = newApp(cfg, slog.New(slog.NewTextHandler(logs, nil)))
		if err == nil {
			continue // a URL the parser takes: the startup line is checked below
		}
		for _, secret := range []string{"pa/ss", "w#rd", "topsecret", "hunter22", "hunter33", "hunter44"} {
			if strings.Contains(err.Error(), secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("%q: secret %q in the error %q or logs %q", u, secret, err, logs)
			}
		}
	}

	// The startup line of a URL the parser takes.
	r := launch(t, nil, "-redis", "redis+sentinel://user:hunter55@127.0.0.1:1/mymaster?sentinel_password=hunter66")
	testwait.Every(t, poll, 20*time.Second, "the listening line", func() bool { return strings.Contains(r.logs.String(), "durasock listening") })
	if s := r.logs.String(); strings.Contains(s, "hunter55") || strings.Contains(s, "hunter66") || !strings.Contains(s, "sentinel_password=xxxxx") {
		t.Errorf("startup logs show a secret or no redacted URL:\n%s", s)
	}
}

func TestPublicError(t *testing.T) {
	s := newScrubber("redis://user:hunter77@10.1.2.3:6379")
	got := s.publicError("dial tcp 10.1.2.3:6379: connect: connection refused; auth hunter77 via redis://user:hunter77@10.1.2.3:6379 and [::1]:6380 and redis.internal:6379")
	for _, leak := range []string{"10.1.2.3", "hunter77", "::1", "redis.internal"} {
		if strings.Contains(got, leak) {
			t.Errorf("publicError shows %q: %s", leak, got)
		}
	}
	if !strings.Contains(got, "connection refused") {
		t.Errorf("publicError lost the cause: %s", got)
	}
}

func TestVersionAndBuildInfo(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), nil, []string{"-version"}, func(string) string { return "" }, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^durasock \S+ go1\.\d+`).MatchString(out.String()) {
		t.Errorf("-version printed %q", out.String())
	}
	r := launch(t, nil)
	_, _, body := request(t, "GET", r.url+"/status", nil, "")
	var st statusBody
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	if st.Version.Version == "" || !strings.HasPrefix(st.Version.GoVersion, "go") || st.Uptime.Text == "" || st.Mode != "single process" {
		t.Errorf("/status = %+v", st)
	}
	if !strings.Contains(body, "\n  \"ready\": true") {
		t.Errorf("/status is not indented:\n%s", body)
	}
	_, _, metrics := request(t, "GET", r.url+"/metrics", nil, "")
	if !regexp.MustCompile(`durasock_build_info\{goversion="go[^"]+",revision="[^"]*",version="[^"]+"\} 1`).MatchString(metrics) {
		t.Errorf("no durasock_build_info in /metrics")
	}
}

func TestAdminAccess(t *testing.T) {
	// Default: only this machine, and not through a proxy.
	r := launch(t, nil)
	for _, path := range []string{"/status", "/status/history", "/dashboard", "/metrics"} {
		if code, _, body := request(t, "GET", r.url+path, nil, ""); code != http.StatusOK {
			t.Errorf("GET %s from loopback: %d %s", path, code, body)
		}
		code, _, body := request(t, "GET", r.url+path, map[string]string{"X-Forwarded-For": "203.0.113.9"}, "")
		if code != http.StatusForbidden || !strings.Contains(body, "-admin-token") {
			t.Errorf("GET %s forwarded by a proxy: %d %s, want 403 naming -admin-token", path, code, body)
		}
	}
	code, hdr, page := request(t, "GET", r.url+"/dashboard", nil, "")
	if code != http.StatusOK || !strings.Contains(page, "<svg") || hdr.Get("X-Frame-Options") != "DENY" || !strings.Contains(hdr.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("dashboard: %d %v", code, hdr)
	}
	if regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|fetch\(\s*["'](https?:)?//|@import`).MatchString(page) {
		t.Error("the dashboard loads something from elsewhere")
	}

	// A token: required from everywhere, the scheme in any case, or as the
	// password of Basic credentials (browsers).
	r = launch(t, nil, "-admin-token", "adm1n")
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:adm1n"))
	for _, c := range []struct {
		auth string
		code int
	}{
		{"", http.StatusUnauthorized},
		{"Bearer wrong", http.StatusUnauthorized},
		{"Bearer adm1n", http.StatusOK},
		{"bearer adm1n", http.StatusOK},
		{"BEARER  adm1n", http.StatusOK},
		{basic, http.StatusOK},
	} {
		h := map[string]string{}
		if c.auth != "" {
			h["Authorization"] = c.auth
		}
		if code, _, body := request(t, "GET", r.url+"/metrics", h, ""); code != c.code {
			t.Errorf("/metrics with %q: %d %.100s, want %d", c.auth, code, body, c.code)
		}
	}
	if _, hdr, _ := request(t, "GET", r.url+"/dashboard", nil, ""); !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("the dashboard does not ask the browser for the token: %v", hdr)
	}
	// Health checks need no token.
	if code, _, _ := request(t, "GET", r.url+"/readyz", nil, ""); code != http.StatusOK {
		t.Errorf("/readyz asks for the admin token: %d", code)
	}

	// -admin-addr moves them.
	admin := freeAddr(t)
	r = launch(t, nil, "-admin-addr", admin)
	if code, _, _ := request(t, "GET", r.url+"/status", nil, ""); code != http.StatusNotFound {
		t.Errorf("/status on -addr with -admin-addr: %d, want 404", code)
	}
	for _, path := range []string{"/status", "/metrics", "/dashboard", "/readyz"} {
		if code, _, body := request(t, "GET", "http://"+admin+path, map[string]string{"X-Forwarded-For": "203.0.113.9"}, ""); code != http.StatusOK {
			t.Errorf("GET %s on -admin-addr: %d %.100s", path, code, body)
		}
	}
}

func TestEmitErrorsInPlainWords(t *testing.T) {
	r := launch(t, nil, "-emit-token", "tok")
	auth := map[string]string{"Authorization": "bearer tok"}
	big := `{"event":"x","args":["` + strings.Repeat("a", maxEmitBody) + `"]}`
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"event":"news","namespace":"/admin"}`, http.StatusNotFound, `namespace "/admin" is not served by this server (it serves /)`},
		{`{"event":"news","namespace":"chat"}`, http.StatusNotFound, `namespace "/chat" is not served`},
		{big, http.StatusRequestEntityTooLarge, "larger than 1048576 bytes"},
		{`{"event":"news","rooms":"lobby"}`, http.StatusBadRequest, `"rooms" must be a list of strings`},
		{`{"event":42}`, http.StatusBadRequest, `"event" must be a string`},
		{`{"event":"news","timeout_ms":"soon"}`, http.StatusBadRequest, `"timeout_ms" must be a whole number of milliseconds`},
		{`{"event":"news","room":["a"]}`, http.StatusBadRequest, `unknown field "room"; the fields are args, delivery, event, except, namespace, rooms, timeout_ms`},
		{`[1,2]`, http.StatusBadRequest, "must be a JSON object"},
		{`{"event":`, http.StatusBadRequest, "empty or cut short"},
		{`{"event" "x"}`, http.StatusBadRequest, "not valid JSON"},
		{``, http.StatusBadRequest, "empty or cut short"},
		{`{"event":"disconnect"}`, http.StatusBadRequest, "reserves"},
		{`{"args":[1]}`, http.StatusBadRequest, `"event" is missing`},
	} {
		code, _, raw := request(t, "POST", r.url+"/api/emit", auth, c.body)
		var answer struct{ Error string }
		if err := json.Unmarshal([]byte(raw), &answer); err != nil {
			t.Fatalf("answer %q is not JSON: %v", raw, err)
		}
		body := answer.Error
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("POST %.60s: %d %s, want %d saying %q", c.body, code, body, c.code, c.want)
		}
		for _, bad := range []string{"emitRequest", "Go struct", "json:", "[]string", "socketio:", "bus:"} {
			if strings.Contains(body, bad) {
				t.Errorf("POST %.60s: answer %s shows %q", c.body, body, bad)
			}
		}
	}
	// The namespace was not created by the attempts.
	for _, n := range []string{"/admin", "/chat"} {
		if strings.Contains(metricsText(t, r.url), `namespace="`+n+`"`) {
			t.Errorf("namespace %s appeared in the metrics after a refused emit", n)
		}
	}
}

func metricsText(t *testing.T, base string) string {
	t.Helper()
	_, _, body := request(t, "GET", base+"/metrics", nil, "")
	return body
}

// TestSocketIOMetrics: connections, events in and out, and acks per namespace.
func TestSocketIOMetrics(t *testing.T) {
	r := launch(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var clients []*sioclient.Client
	for range 2 {
		c, err := sioclient.Dial(ctx, r.url+"/socket.io/", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		clients = append(clients, c)
	}
	// The demo chat answers join and chat with acks and broadcasts chat to the room.
	for i, c := range clients {
		if _, err := c.EmitWithAck(ctx, "join", map[string]string{"room": "r", "name": fmt.Sprint("n", i), "page": fmt.Sprint("p", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := clients[0].EmitWithAck(ctx, "chat", map[string]string{"room": "r", "text": "hi", "id": "m1"}); err != nil {
		t.Fatal(err)
	}
	want := []*regexp.Regexp{
		regexp.MustCompile(`durasock_socketio_connections\{namespace="/"\} 2\b`),
		regexp.MustCompile(`durasock_socketio_connects_total\{namespace="/"\} 2\b`),
		regexp.MustCompile(`durasock_socketio_events_received_total\{namespace="/"\} 3\b`),
		regexp.MustCompile(`durasock_socketio_acks_sent_total\{namespace="/"\} 3\b`),
		// 2 presence to the first joiner... at least the chat to the other member.
		regexp.MustCompile(`durasock_socketio_events_sent_total\{namespace="/"\} [1-9]\d*\b`),
		regexp.MustCompile(`durasock_socketio_parse_errors_total 0\b`),
	}
	testwait.Every(t, poll, 20*time.Second, "socket.io metrics", func() bool {
		m := metricsText(t, r.url)
		for _, re := range want {
			if !re.MatchString(m) {
				return false
			}
		}
		return true
	})
	clients[1].Close()
	testwait.Every(t, poll, 20*time.Second, "the connection gauge to drop", func() bool {
		return strings.Contains(metricsText(t, r.url), `durasock_socketio_connections{namespace="/"} 1`)
	})
}

// TestRedisUnreachable: a node whose Redis does not answer warns within
// seconds and keeps warning; /readyz stays 503 until Redis answered once
// (unless -ready-needs-redis=false); /status shows the error without the
// address.
func TestRedisUnreachable(t *testing.T) {
	dead := freeAddr(t) // nothing listens there
	r := launch(t, func(a *app) { a.mon.warnAfter, a.mon.warnEvery = 200*time.Millisecond, 500*time.Millisecond },
		"-redis", "redis://:pw-unreachable@"+dead)
	testwait.Every(t, poll, 20*time.Second, "two warnings", func() bool {
		return strings.Count(r.logs.String(), "cannot reach Redis since start") >= 2
	})
	if s := r.logs.String(); !strings.Contains(s, "redis=redis://:xxxxx@"+dead) || strings.Contains(s, "pw-unreachable") {
		t.Errorf("warning does not name the redacted URL, or shows the password:\n%s", s)
	}
	code, _, body := request(t, "GET", r.url+"/readyz", nil, "")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "waiting for Redis") {
		t.Errorf("/readyz before Redis answered: %d %s", code, body)
	}
	_, _, status := request(t, "GET", r.url+"/status", nil, "")
	_, port, _ := net.SplitHostPort(dead)
	if strings.Contains(status, port) || strings.Contains(status, "pw-unreachable") || !strings.Contains(status, `"state": "connecting"`) {
		t.Errorf("/status shows the address or password, or no state:\n%s", status)
	}

	r2 := launch(t, nil, "-redis", "redis://"+dead, "-ready-needs-redis=false")
	if code, _, body := request(t, "GET", r2.url+"/readyz", nil, ""); code != http.StatusOK {
		t.Errorf("/readyz with -ready-needs-redis=false: %d %s", code, body)
	}
}

// TestHTTPTimeouts: each HTTP timeout ends what a client leaves hanging. Each
// case runs a server where only its timeout is short, so that a loaded machine
// does not trip the others.
func TestHTTPTimeouts(t *testing.T) {
	dial := func(t *testing.T, r *running) net.Conn {
		c, err := net.Dial("tcp", strings.TrimPrefix(r.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// closedWithin reads c until the server closes it, and fails after limit.
	closedWithin := func(t *testing.T, what string, c net.Conn, limit time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(limit))
		_, err := io.Copy(io.Discard, c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: the server kept the connection open for %v", what, limit)
		}
	}

	t.Run("header", func(t *testing.T) {
		r := launch(t, nil, "-read-header-timeout", "300ms")
		c := dial(t, r)
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // never finished
		closedWithin(t, "unfinished headers", c, 10*time.Second)
	})
	t.Run("body", func(t *testing.T) {
		r := launch(t, nil, "-read-timeout", "300ms")
		c := dial(t, r)
		fmt.Fprint(c, "POST /api/emit HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{") // 1 of 100 bytes
		closedWithin(t, "unfinished body", c, 10*time.Second)
	})
	t.Run("idle", func(t *testing.T) {
		r := launch(t, nil, "-idle-timeout", "1s")
		const n = 500
		conns := make([]net.Conn, n)
		for i := range conns {
			conns[i] = dial(t, r)
			fmt.Fprint(conns[i], "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		}
		for i, c := range conns {
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("conn %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		for i, c := range conns {
			closedWithin(t, fmt.Sprintf("idle keep-alive connection %d", i), c, 20*time.Second)
		}
	})
	t.Run("unread poll", func(t *testing.T) {
		r := launch(t, nil, "-send-queue-bytes", "16MiB", "-write-timeout", "2s", "-ping-interval", "1s", "-ping-timeout", "20s")
		// A polling client that asks for a big answer and never reads it.
		sid := openPolling(t, r.url)
		if code, _, body := request(t, "POST", r.url+"/socket.io/?EIO=4&transport=polling&sid="+sid, nil, "40"); code != http.StatusOK {
			t.Fatal(body)
		}
		request(t, "GET", r.url+"/socket.io/?EIO=4&transport=polling&sid="+sid, nil, "") // the CONNECT answer
		// 12 MB of events for it, more than the socket buffers hold.
		chunk := strings.Repeat("x", 900_000)
		for range 14 {
			if err := r.app.sio.Of("/").Local().Emit(context.Background(), "big", chunk); err != nil {
				t.Fatal(err)
			}
		}
		c := dial(t, r)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4096)
		}
		fmt.Fprintf(c, "GET /socket.io/?EIO=4&transport=polling&sid=%s HTTP/1.1\r\nHost: x\r\n\r\n", sid)
		polling := func() bool {
			var b bytes.Buffer
			_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
			return strings.Contains(b.String(), "servePoll")
		}
		testwait.Every(t, poll, 20*time.Second, "the poll to be served", polling)
		// Its goroutine ends once the write deadline passes (-ping-interval +
		// -write-timeout); without the deadline it waits for the client forever.
		testwait.Every(t, poll, 20*time.Second, "the unread poll's goroutine to end", func() bool { return !polling() })
	})
}

// TestShutdownDelayAndDrain: after SIGTERM the binary answers /readyz 503 for
// -shutdown-delay while it still serves, then drains its clients and logs
// how many.
func TestShutdownDelayAndDrain(t *testing.T) {
	bin := buildBinary(t)
	// The delay is long enough for the two checks made during it (readyz, a
	// handshake) to land inside it on a loaded machine.
	n := startNode(t, bin, "-shutdown-delay", "8s", "-drain-timeout", "5s")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, n.url+"/socket.io/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	testwait.Every(t, poll, 20*time.Second, "/readyz 503 during the shutdown delay", func() bool {
		code, _, body := request(t, "GET", n.url+"/readyz", nil, "")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "shutting down")
	})
	// Still serving: new Engine.IO sessions are taken.
	if code, _, body := request(t, "GET", n.url+"/socket.io/?EIO=4&transport=polling", nil, ""); code != http.StatusOK {
		t.Errorf("handshake during the shutdown delay: %d %s", code, body)
	}
	select {
	case err := <-n.exited:
		n.exited <- err
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, n.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("still running\n%s", n.logs)
	}
	<-c.Done()
	logs := n.logs.String()
	for _, want := range []string{"shutting down: /readyz answers 503", "shutdown_delay=8s", "msg=draining clients=", "msg=drained clients_closed=", "outbox_published=0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// TestFailedDrainSaysWhatWasLeft: a polling client that has packets waiting
// and never polls again cannot be sent its close; the drain gives up at
// -drain-timeout and says so.
func TestFailedDrainSaysWhatWasLeft(t *testing.T) {
	r := launch(t, nil, "-drain-timeout", "500ms", "-ping-interval", "10s", "-ping-timeout", "10s")
	sid := openPolling(t, r.url)
	// CONNECT: its answer waits in the queue for a poll that never comes.
	if code, _, body := request(t, "POST", r.url+"/socket.io/?EIO=4&transport=polling&sid="+sid, nil, "40"); code != http.StatusOK {
		t.Fatal(body)
	}
	// The server handles the CONNECT on its own goroutine: drain only once the
	// answer is queued (the socket is counted when it is).
	testwait.Every(t, poll, 20*time.Second, "the CONNECT to be answered", func() bool {
		return strings.Contains(metricsText(t, r.url), `durasock_socketio_connects_total{namespace="/"} 1`)
	})
	err := r.stop()
	if err == nil {
		t.Fatalf("drain with a client that never polls succeeded\n%s", r.logs)
	}
	for _, want := range []string{"drain incomplete after", "-drain-timeout 500ms", "1 of 1 clients had not closed and were cut"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !strings.Contains(r.logs.String(), "clients_cut=1") {
		t.Errorf("logs lack the count:\n%s", r.logs)
	}
}

// TestListeningLine names the URL and the mode.
func TestListeningLine(t *testing.T) {
	r := launch(t, nil)
	testwait.Every(t, poll, 20*time.Second, "the listening line", func() bool { return strings.Contains(r.logs.String(), "durasock listening") })
	line := r.logs.String()
	for _, want := range []string{"url=" + r.url + "/socket.io/", `mode="single process`} {
		if !strings.Contains(line, want) {
			t.Errorf("listening line lacks %q:\n%s", want, line)
		}
	}
}

// openPolling opens an Engine.IO session over polling at base and returns its
// id.
func openPolling(t *testing.T, base string) string {
	t.Helper()
	code, _, open := request(t, http.MethodGet, base+"/socket.io/?EIO=4&transport=polling", nil, "")
	if code != http.StatusOK {
		t.Fatal(open)
	}
	var hs struct{ SID string }
	if err := json.Unmarshal([]byte(strings.TrimPrefix(open, "0")), &hs); err != nil {
		t.Fatal(err)
	}
	return hs.SID
}

// TestRetainFlags: the retention of acknowledged messages is set by flag or
// environment, 0 meaning the bus default and -1 off, and nonsense is refused.
func TestRetainFlags(t *testing.T) {
	env := func(name string) string {
		if name == "DURASOCK_RETAIN_MAX_BYTES" {
			return "1MiB"
		}
		return ""
	}
	c, err := parseConfig([]string{"-retain-window", "-1", "-retain-max-messages", "500"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Retain.Window != -1 || c.Retain.MaxMessages != 500 || c.Retain.MaxBytes != 1<<20 {
		t.Fatalf("retain = %+v", c.Retain)
	}
	for _, bad := range [][]string{{"-retain-window", "-2s"}, {"-retain-max-messages", "-5"}, {"-retain-max-bytes", "-3"}} {
		if _, err := parseConfig(bad, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), bad[0]) {
			t.Errorf("%v: err = %v, want one naming the flag", bad, err)
		}
	}
}

// TestInterestKeepFlag: -interest-keep sets cluster.Options.InterestKeep (an
// hour by default); a keep shorter than the node timeout is refused.
func TestInterestKeepFlag(t *testing.T) {
	none := func(string) string { return "" }
	c, err := parseConfig(nil, none, io.Discard)
	if err != nil || c.InterestKeep != time.Hour {
		t.Fatalf("default: %v, %v; want 1h", c.InterestKeep, err)
	}
	c, err = parseConfig([]string{"-interest-routing", "-interest-keep", "10m"}, none, io.Discard)
	if err != nil || c.InterestKeep != 10*time.Minute {
		t.Fatalf("-interest-keep 10m: %v, %v", c.InterestKeep, err)
	}
	for _, bad := range []string{"10s", "0", "-1s"} {
		if _, err := parseConfig([]string{"-interest-keep", bad}, none, io.Discard); err == nil || !strings.Contains(err.Error(), "-interest-keep") {
			t.Errorf("-interest-keep %s: err = %v, want one naming the flag", bad, err)
		}
	}
}
