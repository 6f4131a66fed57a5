package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/internal/testwait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestParseConfig(t *testing.T) {
	env := map[string]string{"DURASOCK_ADDR": ":4000", "DURASOCK_REDIS_URL": "redis://x:6379", "DURASOCK_CORS_ORIGINS": "https://a, https://b"}
	c, err := parseConfig([]string{"-addr", ":5000", "-ping-interval", "2s"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":5000" || c.RedisURL != "redis://x:6379" || c.PingInterval != 2*time.Second || len(c.CORSOrigins) != 2 || c.CORSOrigins[1] != "https://b" {
		t.Fatalf("config = %+v", c)
	}
	if c.TCPKeepAlive != 0 {
		t.Errorf("-tcp-keepalive default %v, want 0 (off)", c.TCPKeepAlive)
	}
	for arg, want := range map[string]time.Duration{"30s": 30 * time.Second, "-1": -1} {
		c, err := parseConfig([]string{"-tcp-keepalive", arg}, func(string) string { return "" }, io.Discard)
		if err != nil {
			t.Errorf("-tcp-keepalive %s: %v", arg, err)
		} else if c.TCPKeepAlive != want {
			t.Errorf("-tcp-keepalive %s: %v, want %v", arg, c.TCPKeepAlive, want)
		}
	}
	bad := [][]string{
		{"-path", "socket.io"},
		{"-redis-transport", "carrier-pigeon"},
		{"-ping-timeout", "0s"},
		{"-outbox-overflow", "sometimes"},
		{"-outbox-fsync", "sometimes"},
		{"-recovery", "-1s"},
		{"-send-queue-bytes", "0"},
		{"-slow-client-timeout", "0s"},
		{"-log-level", "loud"},
		{"extra"},
	}
	for _, args := range bad {
		if _, err := parseConfig(args, func(string) string { return "" }, io.Discard); err == nil {
			t.Errorf("parseConfig(%q) = nil error", args)
		}
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "DURASOCK_MAX_PAYLOAD" {
			return "lots"
		}
		return ""
	}, io.Discard); err == nil || !strings.Contains(err.Error(), "DURASOCK_MAX_PAYLOAD") {
		t.Errorf("bad environment value: err = %v", err)
	}
}

// startApp runs the binary's app in-process on a free port until the test ends.
func startApp(t *testing.T, args ...string) string {
	t.Helper()
	cfg, err := parseConfig(append([]string{"-addr", "127.0.0.1:0", "-drain-timeout", "3s"}, args...), func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.serve(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("drain: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	code, _, body := request(t, http.MethodGet, url, nil, "")
	return code, body
}

func TestEndpoints(t *testing.T) {
	base := startApp(t, "-emit-token", "s3cret")
	for _, c := range []struct {
		path, want string
	}{
		{"/healthz", `"ok"`},
		{"/readyz", `"ready"`},
		{"/status", `"mode": "single process"`},
		{"/", "durasock chat"},
		{"/socket.io/?EIO=4&transport=polling", `"pingInterval":25000`},
		{"/metrics", "durasock_connected_clients"},
	} {
		code, body := get(t, base+c.path)
		if code != http.StatusOK || !strings.Contains(body, c.want) {
			t.Errorf("GET %s = %d %q, want 200 containing %q", c.path, code, body[:min(len(body), 200)], c.want)
		}
	}
	if code, _ := get(t, base+"/socket.io/?EIO=3&transport=polling"); code != http.StatusBadRequest {
		t.Errorf("EIO=3: %d, want 400", code)
	}
}

func TestEmitAPI(t *testing.T) {
	base := startApp(t, "-emit-token", "s3cret")
	post := func(token, body string) (int, string) { return postEmit(t, base, token, body) }
	for _, c := range []struct {
		token, body string
		code        int
	}{
		{"s3cret", `{"event":"news","args":[{"n":1}],"rooms":["lobby"]}`, http.StatusOK}, // no cluster: delivered
		{"", `{"event":"news"}`, http.StatusUnauthorized},
		{"wrong", `{"event":"news"}`, http.StatusUnauthorized},
		{"s3cret", `{"args":[1]}`, http.StatusBadRequest},
		{"s3cret", `{"event":"news","unknown":1}`, http.StatusBadRequest},
		{"s3cret", `{"event":"news"} {}`, http.StatusBadRequest},
		{"s3cret", `not json`, http.StatusBadRequest},
	} {
		if code, body := post(c.token, c.body); code != c.code {
			t.Errorf("POST %s (token %q) = %d %s, want %d", c.body, c.token, code, body, c.code)
		}
	}

	off := startApp(t)
	resp, err := http.Post(off+"/api/emit", "application/json", strings.NewReader(`{"event":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("emit API without a token configured: %d, want 404", resp.StatusCode)
	}
}

// buildBinary builds cmd/durasock into a temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "durasock")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// freeAddr returns a 127.0.0.1 address with a port free right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestSIGTERMDrains builds the binary, runs it, and checks that SIGTERM makes it
// close its clients and exit 0 within the drain timeout.
func TestSIGTERMDrains(t *testing.T) {
	bin := buildBinary(t)
	addr := freeAddr(t)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-addr", addr, "-drain-timeout", "5s")
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill() // only reached when the test already failed
		}
	})

	// Wait for it to listen, then open an Engine.IO session and hold a long poll.
	var (
		sid     string
		lastErr error
	)
	testwait.Every(t, 50*time.Millisecond, 20*time.Second, "the binary to open an Engine.IO session", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("binary exited at start: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get("http://" + addr + "/socket.io/?EIO=4&transport=polling")
		if lastErr = err; err != nil {
			return false
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		var open struct{ SID string }
		if lastErr = errors.Join(err, json.Unmarshal(bytes.TrimPrefix(b, []byte("0")), &open)); lastErr != nil {
			return false
		}
		sid = open.SID
		return sid != ""
	})
	poll := make(chan string, 1)
	wrote := make(chan struct{})
	go func() {
		var once sync.Once // a retried request is written again
		trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(wrote) }) }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet,
			"http://"+addr+"/socket.io/?EIO=4&transport=polling&sid="+sid, nil)
		if err != nil {
			poll <- "error: " + err.Error()
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			poll <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		poll <- string(b)
	}()
	select {
	case <-wrote: // the long poll is on the wire
	case got := <-poll:
		t.Fatalf("long poll ended before SIGTERM: %q", got)
	}
	// The server has read the request and holds it: its gauge of waiting
	// polls says so.
	testwait.Every(t, 20*time.Millisecond, 20*time.Second, "the long poll to be held", func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return bytes.Contains(b, []byte("\ndurasock_engineio_polls_waiting 1\n"))
	})
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM\n%s", logs.String())
	}
	// The pending poll was answered with a close packet ("1"), not a dropped connection.
	if got := <-poll; !strings.Contains(got, "1") || strings.HasPrefix(got, "error") {
		t.Errorf("pending poll got %q, want a close packet", got)
	}
	if !strings.Contains(logs.String(), "drained") {
		t.Errorf("logs lack the drain line:\n%s", logs.String())
	}
	_ = os.Remove(bin)
}

// TestClusterMode runs two apps on one real redis-server: an event sent through the
// emit API of one reaches a client of the other, and /status reports the bus.
func TestClusterMode(t *testing.T) {
	redis := redistest.Standalone(t)
	a := startApp(t, "-redis", redis.URL(), "-emit-token", "tok")
	b := startApp(t, "-redis", redis.URL())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The nodes find each other through the bus; until then an emit may reach no
	// one, so it is repeated until the client sees it.
	emitUntilSeen(ctx, t, a, b)
	code, body := get(t, a+"/status")
	if code != http.StatusOK || !strings.Contains(body, `"state": "connected"`) || !strings.Contains(body, `"mode": "cluster"`) {
		t.Errorf("status = %d %s", code, body)
	}
}

// emitUntilSeen connects a client to node to and emits "news" through the
// emit API of node from (token "tok") every 100 ms until the client gets it.
func emitUntilSeen(ctx context.Context, t *testing.T, from, to string) {
	t.Helper()
	got := make(chan string, 16)
	c, err := sioclient.Dial(ctx, to+"/socket.io/", &sioclient.Options{
		OnEvent: func(e *sioclient.Event) { got <- e.Name + " " + string(e.Data) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, from+"/api/emit", strings.NewReader(`{"event":"news","args":[{"n":1}]}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("emit: %d", resp.StatusCode)
		}
		select {
		case ev := <-got:
			if ev != `news ["news",{"n":1}]` {
				t.Fatalf("client on the other node got %q", ev)
			}
			return
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("the event never crossed to the other node")
		}
	}
}

// TestEmitAPIPublished: with "delivery":"published" the emit API answers only
// once Redis holds the event; while Redis is down it answers 504 and keeps the
// event queued, and the event reaches Redis when Redis is back.
func TestEmitAPIPublished(t *testing.T) {
	redis := redistest.Standalone(t, redistest.WithAOF())
	a := startApp(t, "-redis", redis.URL(), "-emit-token", "tok")
	post := func(body string) (int, string) { return postEmit(t, a, "tok", body) }
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	entries := func() int {
		t.Helper()
		n := 0
		for p := range redisbus.DefaultStreamPartitions {
			v, err := redis.Do(ctx, "XLEN", redisbus.StreamKey(redisbus.DefaultPrefix, p))
			if err != nil {
				t.Fatal(err)
			}
			n += int(v.(int64))
		}
		return n
	}
	countEvents := func() int {
		t.Helper()
		n := 0
		for p := range redisbus.DefaultStreamPartitions {
			v, err := redis.Do(ctx, "XRANGE", redisbus.StreamKey(redisbus.DefaultPrefix, p), "-", "+")
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range v.([]any) {
				if strings.Contains(fmt.Sprint(e), "news") {
					n++
				}
			}
		}
		return n
	}

	if code, body := post(`{"event":"news","delivery":"sometime"}`); code != http.StatusBadRequest {
		t.Fatalf("bad delivery: %d %s", code, body)
	}
	if code, body := post(`{"event":"news","delivery":"published","timeout_ms":-1}`); code != http.StatusBadRequest {
		t.Fatalf("bad timeout: %d %s", code, body)
	}
	// The bus connects at its own pace: retry until Redis holds the first one.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body := post(`{"event":"news","args":[1],"delivery":"published","timeout_ms":1000}`)
		if code == http.StatusOK {
			if !strings.Contains(body, `"delivery":"published"`) {
				t.Fatalf("answer %s does not name the delivery", body)
			}
			break
		}
		if code != http.StatusGatewayTimeout || time.Now().After(deadline) {
			t.Fatalf("published emit: %d %s", code, body)
		}
	}
	if n := countEvents(); n < 1 {
		t.Fatalf("answered published with %d events in Redis (%d entries)", n, entries())
	}
	before := countEvents()

	if err := redis.Kill(); err != nil {
		t.Fatal(err)
	}
	code, body := post(`{"event":"news","args":[2],"delivery":"published","timeout_ms":300}`)
	if code != http.StatusGatewayTimeout || !strings.Contains(body, `"delivery":"accepted"`) {
		t.Fatalf("published emit while Redis is down: %d %s, want 504 naming delivery accepted", code, body)
	}
	code, body = post(`{"event":"news","args":[3]}`)
	if code != http.StatusAccepted || !strings.Contains(body, `"delivery":"accepted"`) {
		t.Fatalf("accepted emit while Redis is down: %d %s", code, body)
	}
	if err := redis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	code, body = post(`{"event":"news","args":[4],"delivery":"published","timeout_ms":30000}`)
	if code != http.StatusOK {
		t.Fatalf("published emit after Redis came back: %d %s", code, body)
	}
	// Everything accepted before the answer is in Redis: the two events of the
	// outage and this one.
	if got := countEvents(); got < before+3 {
		t.Fatalf("Redis holds %d events, want at least %d", got, before+3)
	}

	local := startApp(t, "-emit-token", "tok")
	if code, body := postEmit(t, local, "tok", `{"event":"news","delivery":"published"}`); code != http.StatusOK || !strings.Contains(body, `"delivery":"local"`) {
		t.Fatalf("emit without a cluster: %d %s", code, body)
	}
}

// node is a durasock process a test can kill.
type node struct {
	cmd    *exec.Cmd
	url    string
	logs   *bytes.Buffer
	exited chan error
}

func startNode(t *testing.T, bin string, args ...string) *node {
	t.Helper()
	addr := freeAddr(t)
	n := &node{url: "http://" + addr, logs: &bytes.Buffer{}, exited: make(chan error, 1)}
	n.cmd = exec.Command(bin, append([]string{"-addr", addr, "-demo=false"}, args...)...)
	n.cmd.Stderr = n.logs
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { n.exited <- n.cmd.Wait() }()
	t.Cleanup(func() {
		if n.cmd.ProcessState == nil {
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(n.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			return n
		}
		select {
		case err := <-n.exited:
			n.exited <- err
			t.Fatalf("node exited at start: %v\n%s", err, n.logs)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node did not start: %v\n%s", err, n.logs)
		}
	}
}

func (n *node) kill(t *testing.T) {
	t.Helper()
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-n.exited
}

func (n *node) emit(t *testing.T, body string) (int, string) {
	t.Helper()
	return postEmit(t, n.url, "tok", body)
}

// postEmit posts body to base's emit API with the bearer token (none when
// empty) and returns the status and the answer.
func postEmit(t *testing.T, base, token, body string) (int, string) {
	t.Helper()
	var header map[string]string
	if token != "" {
		header = map[string]string{"Authorization": "Bearer " + token}
	}
	code, _, answer := request(t, http.MethodPost, base+"/api/emit", header, body)
	return code, answer
}

// TestKilledNodeDiskOutbox: a node process accepts events while Redis is down
// and is SIGKILLed; started again on its -outbox-dir, it publishes them, and a
// client on another node receives every one, in order, once.
func TestKilledNodeDiskOutbox(t *testing.T) {
	redis := redistest.Standalone(t, redistest.WithAOF())
	bin := buildBinary(t)
	dir := filepath.Join(t.TempDir(), "outbox")
	other := startApp(t, "-redis", redis.URL())

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	got := make(chan string, 1024)
	c, err := sioclient.Dial(ctx, other+"/socket.io/", &sioclient.Options{
		OnEvent: func(e *sioclient.Event) { got <- string(e.Data) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	a := startNode(t, bin, "-redis", redis.URL(), "-emit-token", "tok", "-outbox-dir", dir)
	// Until the nodes know each other an emit may reach no one: repeat a
	// warm-up event until the client has it.
	for warm := false; !warm; {
		if code, body := a.emit(t, `{"event":"warm"}`); code != http.StatusAccepted {
			t.Fatalf("warm-up emit: %d %s", code, body)
		}
		select {
		case <-got:
			warm = true
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("the nodes never found each other")
		}
	}
	for len(got) > 0 {
		<-got
	}

	if err := redis.Kill(); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if code, body := a.emit(t, fmt.Sprintf(`{"event":"news","args":[%d]}`, i)); code != http.StatusAccepted {
			t.Fatalf("emit %d while Redis is down: %d %s", i, code, body)
		}
	}
	a.kill(t)
	if err := redis.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	a = startNode(t, bin, "-redis", redis.URL(), "-emit-token", "tok", "-outbox-dir", dir)
	for i := 0; i < n; {
		select {
		case ev := <-got:
			if strings.HasPrefix(ev, `["warm"`) {
				continue
			}
			if want := fmt.Sprintf(`["news",%d]`, i); ev != want {
				t.Fatalf("event %d: got %s, want %s (lost, duplicated or reordered)", i, ev, want)
			}
			i++
		case <-ctx.Done():
			t.Fatalf("received %d of %d events accepted before the kill\nrestarted node:\n%s", i, n, a.logs)
		}
	}
	// Nothing more arrives: no event twice.
	select {
	case ev := <-got:
		if !strings.HasPrefix(ev, `["warm"`) {
			t.Fatalf("extra event %s", ev)
		}
	case <-time.After(500 * time.Millisecond):
	}
}

// TestClusterModeInterestRouting: two nodes with -interest-routing become
// ready once each knows the other's interest, and an emit on one reaches a
// client of the other through that node's inbox (a routed message).
func TestClusterModeInterestRouting(t *testing.T) {
	redis := redistest.Standalone(t)
	a := startApp(t, "-redis", redis.URL(), "-emit-token", "tok", "-interest-routing")
	b := startApp(t, "-redis", redis.URL(), "-interest-routing")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, n := range []string{a, b} {
		for {
			if code, _ := get(t, n+"/readyz"); code == http.StatusOK {
				break
			}
			select {
			case <-ctx.Done():
				_, body := get(t, n+"/readyz")
				t.Fatalf("%s never ready: %s", n, body)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	// b announces its new socket within tens of milliseconds; until a knows
	// it, a routes the emit nowhere.
	emitUntilSeen(ctx, t, a, b)
	_, metrics := get(t, a+"/metrics")
	if !strings.Contains(metrics, "durasock_cluster_routed_messages_total") ||
		strings.Contains(metrics, "durasock_cluster_routed_messages_total 0\n") {
		t.Errorf("node a routed nothing:\n%s", grepLines(metrics, "durasock_cluster_routed"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
