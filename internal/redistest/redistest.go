package redistest

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"testing"
)

// Errors returned by this package. Failures wrap one of these with %w.
var (
	// ErrNoRedisServer means redis-server was not found in PATH.
	ErrNoRedisServer = errors.New("redistest: redis-server not found in PATH (install it with: apt-get install redis-server)")
	// ErrNotRunning is returned by operations that need a running process.
	ErrNotRunning = errors.New("redistest: server not running")
	// ErrRunning is returned by Start when the process already runs.
	ErrRunning = errors.New("redistest: server already running")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("redistest: closed")
	// ErrStart is returned when a process did not become ready.
	ErrStart = errors.New("redistest: start failed")
	// ErrProtocol is returned for a malformed RESP reply.
	ErrProtocol = errors.New("redistest: protocol error")
)

var (
	lookOnce      sync.Once
	serverPath    string
	cliPath       string
	serverLookErr error
	cliLookErr    error
)

func lookBinaries() {
	lookOnce.Do(func() {
		serverPath, serverLookErr = exec.LookPath("redis-server")
		if serverLookErr != nil {
			serverLookErr = fmt.Errorf("%w: %v", ErrNoRedisServer, serverLookErr)
		}
		cliPath, cliLookErr = exec.LookPath("redis-cli")
		if cliLookErr != nil {
			cliLookErr = fmt.Errorf("redistest: redis-cli not found in PATH (install it with: apt-get install redis-server): %w", cliLookErr)
		}
	})
}

// ServerBinary returns the path of redis-server, or ErrNoRedisServer.
func ServerBinary() (string, error) {
	lookBinaries()
	return serverPath, serverLookErr
}

// RequireRedisServer fails the test (never skips) when redis-server is missing, with a
// message saying how to install it.
func RequireRedisServer(tb testing.TB) {
	tb.Helper()
	if _, err := ServerBinary(); err != nil {
		tb.Fatal(err)
	}
}

// CLIBinary returns the path of redis-cli (used to create clusters).
func CLIBinary() (string, error) {
	lookBinaries()
	return cliPath, cliLookErr
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago. Another process
// may take it before it is used; the starters in this package retry on a bind failure.
func FreePort(tb testing.TB) int {
	tb.Helper()
	p, err := freePort()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("redistest: free port: %w", err)
	}
	return port, nil
}
