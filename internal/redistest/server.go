package redistest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// errAddrInUse marks a start that failed because another process took the port.
var errAddrInUse = errors.New("redistest: address already in use")

const startAttempts = 5

// Server is one redis-server process (a data node or a sentinel) that this package
// started on 127.0.0.1 in its own directory. Its port and directory stay the same
// across Kill, Stop and Start, so an AOF written before a Kill is loaded again.
// Methods are safe for concurrent use.
type Server struct {
	name       string
	dir        string
	confPath   string
	logPath    string
	stdoutPath string
	sentinel   bool
	cfg        *config
	tlsFiles   *TLSFiles
	clientTLS  *tls.Config
	removeDir  bool

	mu     sync.Mutex
	port   int
	proc   *process
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// serverSpec describes a process to start.
type serverSpec struct {
	name     string
	dir      string
	sentinel bool
	cfg      *config
	tlsFiles *TLSFiles // a shared PKI; generated in dir when nil and cfg.tls
	// conf returns the whole configuration file for a port.
	conf func(s *Server, port int) []string
}

// Standalone starts one redis-server with the options and stops it when the test ends.
// It fails the test when redis-server is missing or does not start.
func Standalone(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	RequireRedisServer(tb)
	s, err := startServer(context.Background(), serverSpec{
		name: "standalone",
		dir:  tb.TempDir(),
		cfg:  newConfig(opts),
		conf: standaloneConf,
	})
	if err != nil {
		tb.Fatal(err)
	}
	cleanupServer(tb, s)
	return s
}

// NewStandalone starts one redis-server outside a test (benchmarks, tools) in a new
// temporary directory. Close stops it and removes the directory.
func NewStandalone(ctx context.Context, opts ...Option) (*Server, error) {
	dir, err := os.MkdirTemp("", "redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: temp dir: %w", err)
	}
	s, err := startServer(ctx, serverSpec{name: "standalone", dir: dir, cfg: newConfig(opts), conf: standaloneConf})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.removeDir = true
	return s, nil
}

// cleanupServer stops s when the test ends and prints its logs if the test failed.
func cleanupServer(tb testing.TB, s *Server) {
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("redistest: close %s: %v", s.name, err)
		}
		if tb.Failed() {
			tb.Logf("redistest: %s on %s, dir %s, log:\n%s", s.name, s.Addr(), s.dir, s.Logs())
		}
	})
}

func validateConfig(cfg *config) error {
	for _, v := range []string{cfg.user, cfg.password, cfg.defaultPassword} {
		if strings.ContainsAny(v, " \t\r\n\"'\\") {
			return fmt.Errorf("redistest: user names and passwords must not contain spaces, quotes or backslashes: %q", v)
		}
	}
	if cfg.user != "" && cfg.password == "" {
		return fmt.Errorf("redistest: WithUser needs a password")
	}
	return nil
}

func startServer(ctx context.Context, spec serverSpec) (*Server, error) {
	if _, err := ServerBinary(); err != nil {
		return nil, err
	}
	if err := validateConfig(spec.cfg); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(spec.dir, 0o755); err != nil {
		return nil, fmt.Errorf("redistest: %w", err)
	}
	s := &Server{
		name:       spec.name,
		dir:        spec.dir,
		confPath:   filepath.Join(spec.dir, "redis.conf"),
		logPath:    filepath.Join(spec.dir, "redis.log"),
		stdoutPath: filepath.Join(spec.dir, "stdout.log"),
		sentinel:   spec.sentinel,
		cfg:        spec.cfg,
		tlsFiles:   spec.tlsFiles,
	}
	if spec.sentinel {
		s.confPath = filepath.Join(spec.dir, "sentinel.conf")
	}
	var err error
	if spec.cfg.tls && s.tlsFiles == nil {
		if s.tlsFiles, err = GenerateTLS(spec.dir); err != nil {
			return nil, err
		}
	}
	if s.tlsFiles != nil {
		if s.clientTLS, err = s.tlsFiles.ClientConfig(); err != nil {
			return nil, err
		}
	}
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.port = port
		s.mu.Unlock()
		if err := writeConf(s.confPath, spec.conf(s, port)); err != nil {
			return nil, err
		}
		lastErr = s.Start(ctx)
		if lastErr == nil {
			return s, nil
		}
		if !errors.Is(lastErr, errAddrInUse) {
			break
		}
	}
	return nil, lastErr
}

func writeConf(path string, lines []string) error {
	b := []byte(strings.Join(lines, "\n") + "\n")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("redistest: write %s: %w", path, err)
	}
	return nil
}

// quote makes a redis.conf string argument.
func quote(s string) string { return strconv.Quote(s) }

// dataConf is the configuration of a data node (standalone, primary, replica, cluster
// node) before role specific lines.
func dataConf(s *Server, port int) []string {
	c := s.cfg
	lines := []string{
		"bind 127.0.0.1",
		"daemonize no",
		"dir " + quote(s.dir),
		"logfile " + quote(s.logPath),
		`save ""`,
		"shutdown-timeout 1",
		"enable-debug-command local",
		"enable-protected-configs local",
		"repl-diskless-sync-delay 0",
	}
	if c.aof {
		fsync := c.fsync
		if fsync == "" {
			fsync = "always"
		}
		lines = append(lines, "appendonly yes", "appendfsync "+fsync)
	} else {
		lines = append(lines, "appendonly no")
	}
	if s.tlsFiles != nil {
		lines = append(lines,
			"port 0",
			"tls-port "+strconv.Itoa(port),
			"tls-cert-file "+quote(s.tlsFiles.ServerCert),
			"tls-key-file "+quote(s.tlsFiles.ServerKey),
			"tls-ca-cert-file "+quote(s.tlsFiles.CACert),
			"tls-auth-clients yes",
			"tls-replication yes",
			"tls-cluster yes",
		)
	} else {
		lines = append(lines, "port "+strconv.Itoa(port))
	}
	switch {
	case c.user != "" && c.defaultPassword != "":
		lines = append(lines, "user default on >"+c.defaultPassword+" ~* &* +@all")
	case c.user != "":
		lines = append(lines, "user default off")
	case c.defaultPassword != "":
		lines = append(lines, "user default on >"+c.defaultPassword+" ~* &* +@all")
	}
	if c.user != "" {
		lines = append(lines, "user "+c.user+" on >"+c.password+" ~* &* +@all")
		lines = append(lines, "masteruser "+c.user, "masterauth "+c.password)
	} else if c.defaultPassword != "" {
		lines = append(lines, "masterauth "+c.defaultPassword)
	}
	return lines
}

// withExtra appends the user's extra lines last.
func withExtra(s *Server, lines []string) []string {
	return append(lines, s.cfg.extra...)
}

// Start starts the stopped process again on the same port, in the same directory, and
// waits until it answers PING (bounded by ctx and the start timeout).
func (s *Server) Start(ctx context.Context) error {
	bin, err := ServerBinary()
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.proc != nil && !s.proc.exited() {
		s.mu.Unlock()
		return ErrRunning
	}
	args := []string{s.confPath}
	if s.sentinel {
		args = append(args, "--sentinel")
	}
	p, err := startProcess(bin, args, s.dir, s.stdoutPath)
	if err != nil {
		s.mu.Unlock()
		return err
	}
	s.proc = p
	s.mu.Unlock()
	if err := s.waitReady(ctx, p); err != nil {
		if kerr := p.kill(); kerr != nil {
			return errors.Join(err, kerr)
		}
		return err
	}
	return nil
}

func (s *Server) waitReady(ctx context.Context, p *process) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		if p.exited() {
			logs := s.Logs()
			err := fmt.Errorf("%w: %s on %s exited: %v\n%s", ErrStart, s.name, s.Addr(), p.err, logs)
			if strings.Contains(logs, "already in use") {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			return err
		}
		if last = s.probe(ctx, p.pid()); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s on %s not ready: %w (last: %v)\n%s", ErrStart, s.name, s.Addr(), ctx.Err(), last, s.Logs())
		case <-tick.C:
		case <-p.done:
		}
	}
}

// probe checks that the process with pid answers on the port (and not some other
// process that took it).
func (s *Server) probe(ctx context.Context, pid int) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	c, err := dialRESP(ctx, s.Addr(), s.clientTLS, s.adminAuth())
	if err != nil {
		return err
	}
	defer c.close()
	if _, err := c.do(ctx, "PING"); err != nil {
		return err
	}
	v, err := c.do(ctx, "INFO", "server")
	if err != nil {
		return err
	}
	str, ok := v.(string)
	if !ok {
		return fmt.Errorf("%w: INFO reply %T", ErrProtocol, v)
	}
	if got := parseInfo(str)["process_id"]; got != strconv.Itoa(pid) {
		return fmt.Errorf("%w: %s answered by process %s, want %d", errAddrInUse, s.Addr(), got, pid)
	}
	return nil
}

func (s *Server) adminAuth() []string {
	switch {
	case s.cfg.user != "":
		return []string{s.cfg.user, s.cfg.password}
	case s.cfg.defaultPassword != "":
		return []string{s.cfg.defaultPassword}
	}
	return nil
}

// Kill sends SIGKILL and waits for the process to exit: a crash, nothing is flushed
// beyond what the AOF policy already wrote. ErrNotRunning if it was not running.
func (s *Server) Kill() error {
	p := s.running()
	if p == nil {
		return ErrNotRunning
	}
	return p.kill()
}

// Stop sends SIGTERM and waits (at most 10s, then SIGKILL) for a clean shutdown.
func (s *Server) Stop() error {
	p := s.running()
	if p == nil {
		return ErrNotRunning
	}
	return p.term()
}

// Suspend stops the process with SIGSTOP: it answers nobody and reads nothing (a
// replica suspended this way falls behind its primary) until Resume. Kill, Stop
// and Close work on a suspended process.
func (s *Server) Suspend() error {
	p := s.running()
	if p == nil {
		return ErrNotRunning
	}
	return p.signal(syscall.SIGSTOP)
}

// Resume continues a process stopped by Suspend (SIGCONT).
func (s *Server) Resume() error {
	p := s.running()
	if p == nil {
		return ErrNotRunning
	}
	return p.signal(syscall.SIGCONT)
}

// Restart stops the process (SIGTERM) if it runs and starts it again.
func (s *Server) Restart(ctx context.Context) error {
	if err := s.Stop(); err != nil && !errors.Is(err, ErrNotRunning) {
		return err
	}
	return s.Start(ctx)
}

// Running reports whether the process is alive.
func (s *Server) Running() bool { return s.running() != nil }

func (s *Server) running() *process {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.exited() {
		return nil
	}
	return s.proc
}

// Close stops the process (SIGTERM, then SIGKILL) and, for NewStandalone, removes its
// directory. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		p := s.proc
		s.mu.Unlock()
		if p != nil {
			s.closeErr = p.term()
		}
		if s.removeDir {
			if err := os.RemoveAll(s.dir); err != nil {
				s.closeErr = errors.Join(s.closeErr, fmt.Errorf("redistest: %w", err))
			}
		}
	})
	return s.closeErr
}

// Addr returns "127.0.0.1:port".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())) }

// Port returns the TCP port (the TLS port with WithTLS).
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// PID returns the process id, or 0 when not running.
func (s *Server) PID() int {
	if p := s.running(); p != nil {
		return p.pid()
	}
	return 0
}

// Dir returns the working directory (AOF, logs, config, certificates).
func (s *Server) Dir() string { return s.dir }

// Logs returns the tail of the server log and of its stdout/stderr.
func (s *Server) Logs() string {
	out := tailFile(s.logPath, 32<<10)
	if st, err := os.Stat(s.stdoutPath); err == nil && st.Size() > 0 {
		out += "\n--- stdout/stderr ---\n" + tailFile(s.stdoutPath, 8<<10)
	}
	return out
}

// URL returns redis://[user:password@]127.0.0.1:port, or rediss:// with WithTLS.
func (s *Server) URL() string {
	u := url.URL{Scheme: "redis", Host: s.Addr()}
	if s.tlsFiles != nil {
		u.Scheme = "rediss"
	}
	switch {
	case s.cfg.user != "":
		u.User = url.UserPassword(s.cfg.user, s.cfg.password)
	case s.cfg.defaultPassword != "":
		u.User = url.UserPassword("", s.cfg.defaultPassword)
	}
	return u.String()
}

// TLS returns the generated certificate files, or nil without WithTLS.
func (s *Server) TLS() *TLSFiles { return s.tlsFiles }

// TLSConfig returns a new client tls.Config trusting the generated CA and presenting
// the client certificate, or nil without WithTLS.
func (s *Server) TLSConfig() *tls.Config {
	if s.clientTLS == nil {
		return nil
	}
	return s.clientTLS.Clone()
}

// Do runs one admin command on a new connection (authenticated as the configured
// user) and returns the reply: string, int64, nil, []any, ... An error reply is
// returned as a ReplyError.
func (s *Server) Do(ctx context.Context, args ...string) (any, error) {
	c, err := dialRESP(ctx, s.Addr(), s.clientTLS, s.adminAuth())
	if err != nil {
		return nil, err
	}
	defer c.close()
	return c.do(ctx, args...)
}

// DoAll runs commands in order on one connection, for state bound to a connection:
// WAIT after a write (WAIT counts the replicas that acknowledged this connection's
// writes, so Do("WAIT", ...) on its own connection returns at once), MULTI/EXEC,
// CLIENT SETNAME. It returns every reply (error replies as ReplyError values) and the
// first error.
func (s *Server) DoAll(ctx context.Context, cmds ...[]string) ([]any, error) {
	c, err := dialRESP(ctx, s.Addr(), s.clientTLS, s.adminAuth())
	if err != nil {
		return nil, err
	}
	defer c.close()
	out := make([]any, 0, len(cmds))
	var first error
	for _, cmd := range cmds {
		v, err := c.do(ctx, cmd...)
		var re ReplyError
		switch {
		case errors.As(err, &re):
			out = append(out, re)
		case err != nil:
			return out, err
		default:
			out = append(out, v)
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

// Info runs INFO section and returns its fields.
func (s *Server) Info(ctx context.Context, section string) (map[string]string, error) {
	v, err := s.Do(ctx, "INFO", section)
	if err != nil {
		return nil, err
	}
	str, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("%w: INFO reply %T", ErrProtocol, v)
	}
	return parseInfo(str), nil
}

// Pause suspends all clients for d with CLIENT PAUSE ... ALL (the server stays up but
// answers nobody, like a stalled primary).
func (s *Server) Pause(ctx context.Context, d time.Duration) error {
	ms := max(d.Milliseconds(), 1)
	_, err := s.Do(ctx, "CLIENT", "PAUSE", strconv.FormatInt(ms, 10), "ALL")
	return err
}

func parseInfo(s string) map[string]string {
	m := make(map[string]string)
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = v
		}
	}
	return m
}

func standaloneConf(s *Server, port int) []string { return withExtra(s, dataConf(s, port)) }
