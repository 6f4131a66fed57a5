package redistest

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustDo(t *testing.T, ctx context.Context, s *Server, args ...string) any {
	t.Helper()
	v, err := s.Do(ctx, args...)
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

func TestStandaloneBasics(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.Port() == 6379 || s.Port() == 0 {
		t.Fatalf("Addr = %q", s.Addr())
	}
	if got, want := s.URL(), "redis://"+s.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	if s.PID() == 0 || !s.Running() {
		t.Fatal("not running")
	}
	if v := mustDo(t, ctx, s, "SET", "k", "v"); v != "OK" {
		t.Fatalf("SET = %#v", v)
	}
	if v := mustDo(t, ctx, s, "GET", "k"); v != "v" {
		t.Fatalf("GET = %#v", v)
	}
	if v := mustDo(t, ctx, s, "GET", "missing"); v != nil {
		t.Fatalf("GET missing = %#v", v)
	}
	if v := mustDo(t, ctx, s, "INCR", "n"); v != int64(1) {
		t.Fatalf("INCR = %#v", v)
	}
	v := mustDo(t, ctx, s, "CONFIG", "GET", "appendonly")
	if arr, ok := v.([]any); !ok || len(arr) != 2 || arr[1] != "no" {
		t.Fatalf("CONFIG GET appendonly = %#v", v)
	}
	_, err := s.Do(ctx, "NOSUCHCOMMAND")
	var re ReplyError
	if !errors.As(err, &re) || !strings.HasPrefix(string(re), "ERR") {
		t.Fatalf("unknown command error = %v", err)
	}

	// Persistence off: a restart loses the data.
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if v := mustDo(t, ctx, s, "GET", "k"); v != nil {
		t.Fatalf("GET after restart without persistence = %#v", v)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrRunning) {
		t.Fatalf("Start while running = %v, want ErrRunning", err)
	}
}

func TestStandaloneAOFSurvivesKill(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t, WithAOF())
	port, oldPID := s.Port(), s.PID()
	mustDo(t, ctx, s, "SET", "durable", "yes")
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Running() || s.PID() != 0 {
		t.Fatal("still running after Kill")
	}
	if _, err := s.Do(ctx, "PING"); err == nil {
		t.Fatal("PING succeeded on a killed server")
	}
	if err := s.Kill(); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("second Kill = %v, want ErrNotRunning", err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Port() != port || s.PID() == oldPID {
		t.Fatalf("port %d->%d pid %d->%d", port, s.Port(), oldPID, s.PID())
	}
	if v := mustDo(t, ctx, s, "GET", "durable"); v != "yes" {
		t.Fatalf("GET after kill+start with AOF = %#v", v)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if v := mustDo(t, ctx, s, "GET", "durable"); v != "yes" {
		t.Fatalf("GET after stop+start with AOF = %#v", v)
	}
}

func TestStandaloneACL(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t, WithUser("app", "s3cret"))
	if got, want := s.URL(), "redis://app:s3cret@"+s.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	mustDo(t, ctx, s, "SET", "k", "v")

	// Without credentials: NOAUTH.
	c, err := dialRESP(ctx, s.Addr(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	_, err = c.do(ctx, "GET", "k")
	var re ReplyError
	if !errors.As(err, &re) || !strings.HasPrefix(string(re), "NOAUTH") {
		t.Fatalf("GET without auth = %v, want NOAUTH", err)
	}
	// Wrong password and the disabled default user are refused.
	if _, err := dialRESP(ctx, s.Addr(), nil, []string{"app", "wrong"}); !errors.As(err, &re) {
		t.Fatalf("wrong password = %v", err)
	}
	if _, err := dialRESP(ctx, s.Addr(), nil, []string{""}); !errors.As(err, &re) {
		t.Fatalf("default user = %v", err)
	}

	d := Standalone(t, WithDefaultPassword("pw"))
	if got, want := d.URL(), "redis://:pw@"+d.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	c2, err := dialRESP(ctx, d.Addr(), nil, []string{"pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.close()
	if v, err := c2.do(ctx, "PING"); err != nil || v != "PONG" {
		t.Fatalf("PING = %v, %v", v, err)
	}
}

func TestStandaloneTLS(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t, WithTLS())
	if got, want := s.URL(), "rediss://"+s.Addr(); got != want {
		t.Fatalf("URL = %q, want %q", got, want)
	}
	if s.TLS() == nil || s.TLSConfig() == nil {
		t.Fatal("no TLS files")
	}
	mustDo(t, ctx, s, "SET", "k", "v")

	// A TLS client of its own, from the files.
	conf, err := s.TLS().ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialRESP(ctx, s.Addr(), conf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if v, err := c.do(ctx, "GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET over TLS = %v, %v", v, err)
	}

	// Plain TCP on the TLS port gets no answer: the server closes the connection.
	raw, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := raw.Read(buf)
	if strings.Contains(string(buf[:n]), "PONG") || err == nil {
		t.Fatalf("plain TCP on TLS port read %q, %v", buf[:n], err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("plain TCP on TLS port hung until the deadline")
	}

	// A TLS client that does not trust the CA fails the handshake.
	bad, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", s.Addr(), &tls.Config{MinVersion: tls.VersionTLS12})
	if err == nil {
		bad.Close()
		t.Fatal("handshake without the CA succeeded")
	}
	// A TLS client without a client certificate is refused (tls-auth-clients yes).
	noCert := s.TLSConfig()
	noCert.Certificates = nil
	c3, err := dialRESP(ctx, s.Addr(), noCert, nil)
	if err == nil {
		_, err = c3.do(ctx, "PING")
		c3.close()
	}
	if err == nil {
		t.Fatal("client without certificate was served")
	}
}

func TestStandalonePauseAndExtraConfig(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t, WithConfig("maxmemory 10mb"))
	v := mustDo(t, ctx, s, "CONFIG", "GET", "maxmemory")
	if arr, ok := v.([]any); !ok || len(arr) != 2 || arr[1] != "10485760" {
		t.Fatalf("maxmemory = %#v", v)
	}
	if err := s.Pause(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// A write issued during the pause is answered only after it.
	start := time.Now()
	mustDo(t, ctx, s, "SET", "a", "b")
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("SET answered after %v during a 300ms pause", el)
	}
}

func TestNewStandaloneRemovesDir(t *testing.T) {
	ctx := testCtx(t)
	s, err := NewStandalone(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := s.Dir()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.Start(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Fatal("port still open after Close")
	}
	if _, err := statDir(dir); err == nil {
		t.Fatal("dir still there")
	}
}

func TestFreePortAndRequire(t *testing.T) {
	RequireRedisServer(t)
	p := FreePort(t)
	if p <= 0 || p == 6379 {
		t.Fatalf("FreePort = %d", p)
	}
}

func statDir(dir string) (bool, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return false, err
	}
	return st.IsDir(), nil
}

func TestStandaloneBindFailure(t *testing.T) {
	// A port held by a listener of ours: every attempt fails to bind, and the error says
	// so instead of hanging.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	s, err := NewStandalone(testCtx(t), WithConfig("port "+strconv.Itoa(port)))
	if err == nil {
		s.Close()
		t.Fatal("started on a busy port")
	}
	if !errors.Is(err, ErrStart) || !errors.Is(err, errAddrInUse) {
		t.Fatalf("err = %v, want ErrStart and address in use", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, opts := range [][]Option{
		{WithUser("app", "")},
		{WithUser("a b", "pw")},
		{WithDefaultPassword("p\"w")},
	} {
		s, err := NewStandalone(testCtx(t), opts...)
		if err == nil {
			s.Close()
			t.Fatalf("options accepted")
		}
	}
}

func TestDoAllOneConnection(t *testing.T) {
	ctx := testCtx(t)
	s := Standalone(t)
	replies, err := s.DoAll(ctx,
		[]string{"CLIENT", "SETNAME", "admin"},
		[]string{"CLIENT", "GETNAME"},
		[]string{"MULTI"},
		[]string{"INCR", "n"},
		[]string{"EXEC"},
		[]string{"NOSUCH"},
		[]string{"PING"},
	)
	var re ReplyError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v, want the NOSUCH ReplyError", err)
	}
	if len(replies) != 7 || replies[1] != "admin" || replies[3] != "QUEUED" || replies[6] != "PONG" {
		t.Fatalf("replies = %#v", replies)
	}
	if exec, ok := replies[4].([]any); !ok || len(exec) != 1 || exec[0] != int64(1) {
		t.Fatalf("EXEC = %#v", replies[4])
	}
	if _, ok := replies[5].(ReplyError); !ok {
		t.Fatalf("NOSUCH reply = %#v", replies[5])
	}
}

func TestSuspendResume(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := Standalone(t)
	if err := s.Suspend(); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err := s.Do(pctx, "PING")
	cancel()
	if err == nil {
		t.Fatal("a suspended server answered PING")
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	if v := mustDo(t, ctx, s, "PING"); v != "PONG" {
		t.Fatalf("PING after Resume = %#v", v)
	}
	// Close stops a suspended server at once (SIGTERM, then SIGCONT).
	if err := s.Suspend(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d >= termWait {
		t.Fatalf("Close of a suspended server took %v: it waited for SIGKILL", d)
	}
}
