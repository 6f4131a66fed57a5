package interop

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const installAdvice = "run scripts/test from the repository root: it installs Node.js, npm ci in interop/ and python3-socketio"

// pythonPath is the Debian interpreter that has python3-socketio; a python3 found
// first on PATH (pyenv, venv) usually does not.
const pythonPath = "/usr/bin/python3"

// requireNode returns the node binary, failing the test when Node.js or the npm
// packages of interop/ are missing.
func requireNode(t testing.TB) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is not installed (%v): %s", err, installAdvice)
	}
	for _, pkg := range []string{"socket.io-client", "socket.io-client-v2", "ws"} {
		if _, err := os.Stat(filepath.Join("node_modules", pkg, "package.json")); err != nil {
			t.Fatalf("npm package %s is missing in interop/node_modules (%v): %s", pkg, err, installAdvice)
		}
	}
	return node
}

// requirePython returns the python interpreter, failing the test when it or
// python-socketio's client dependencies are missing.
func requirePython(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(pythonPath); err != nil {
		t.Fatalf("%s is missing (%v): %s", pythonPath, err, installAdvice)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, pythonPath, "-c", "import socketio, requests, websocket, redis").CombinedOutput()
	if err != nil {
		t.Fatalf("python3-socketio, python3-requests, python3-websocket or python3-redis is missing (%v: %s): %s", err, out, installAdvice)
	}
	return pythonPath
}

// syncBuffer collects a process's output; exec writes stdout and stderr from
// different goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// command prepares name args... with SERVER_URL set, bounded by timeout: the
// process is killed when ctx ends, and its pipes are closed at most five seconds
// later even if a child keeps them open.
func command(ctx context.Context, serverURL, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "SERVER_URL="+serverURL, "NO_COLOR=1", "PYTHONUNBUFFERED=1")
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs a command to completion within timeout and returns its combined output.
func run(timeout time.Duration, serverURL, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := command(ctx, serverURL, name, args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		return out.String(), fmt.Errorf("%s did not start: %w", name, err)
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (killed after %v)", err, timeout)
	}
	return out.String(), err
}

// runScenario runs one client script that prints "PASS <name>" on success and
// fails the test with the script's output otherwise.
func runScenario(t testing.TB, timeout time.Duration, serverURL, name string, args ...string) {
	t.Helper()
	out, err := run(timeout, serverURL, name, args...)
	if err != nil || !strings.Contains(out, "\nPASS ") && !strings.HasPrefix(out, "PASS ") {
		t.Fatalf("%s %s failed: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
	t.Logf("%s", lastLine(out))
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// startHTTP serves h on a new 127.0.0.1 port and returns its base URL. The
// server is closed when the test ends, after close (the handler's own shutdown).
func startHTTP(t testing.TB, h http.Handler, closeHandler func() error) string {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		if err := closeHandler(); err != nil {
			t.Errorf("closing the server: %v", err)
		}
	})
	return ts.URL
}

// lineWatcher copies a process's stdout into a buffer and reports the first line
// that starts with a prefix.
type lineWatcher struct {
	out   syncBuffer
	found chan string
	done  chan struct{}
}

func watchLines(r io.Reader, prefix string) *lineWatcher {
	w := &lineWatcher{found: make(chan string, 1), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(&w.out, line)
			if !sent && strings.HasPrefix(line, prefix) {
				w.found <- line
				sent = true
			}
		}
	}()
	return w
}

// listenAgain listens on addr, which a server just released, for at most ten
// seconds.
func listenAgain(ctx context.Context, addr string) (net.Listener, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			return ln, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("listen on %s again: %w", addr, err)
		case <-tick.C:
		}
	}
}
