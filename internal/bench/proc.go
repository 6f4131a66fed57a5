package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Server kinds a scenario can run its nodes as.
const (
	// ServerRelay runs relay nodes (RunNode) as separate processes: this program
	// started again with NodeEnv set. Publishers emit "pub" on a Socket.IO
	// connection and the node broadcasts it: the cheapest publisher path.
	ServerRelay = "relay"
	// ServerDurasock runs the cmd/durasock binary; publishers use its HTTP emit
	// API (POST /api/emit), one request per event.
	ServerDurasock = "durasock"
	// ServerNode runs the Node.js peer (bench/node/relay.js: socket.io 4.8 with
	// @socket.io/redis-adapter for transport pubsub, @socket.io/redis-streams-adapter
	// for streams) with the relay protocol, to measure Node in the same run.
	ServerNode = "node"
)

// Environment of a relay node process started by StartNode.
const (
	NodeEnv          = "DURASOCK_BENCH_NODE" // set to "1" in a node process
	nodeRedisEnv     = "DURASOCK_BENCH_NODE_REDIS"
	nodeTransportEnv = "DURASOCK_BENCH_NODE_TRANSPORT"
	nodeRoutingEnv   = "DURASOCK_BENCH_NODE_ROUTING"
	nodeQueueEnv     = "DURASOCK_BENCH_NODE_SEND_QUEUE"
	nodePingEnv      = "DURASOCK_BENCH_NODE_PING_INTERVAL_MS" // 0 or unset: the default
	nodeKeepAliveEnv = "DURASOCK_BENCH_NODE_TCP_KEEPALIVE_MS" // 0 or unset: the default (off)
	listeningPrefix  = "listening "
)

// emitToken is the bearer token of cmd/durasock nodes started here.
const emitToken = "bench-token"

// NodeMain runs this process as a relay node when NodeEnv is set, and then exits;
// otherwise it returns at once. Call it first in main and TestMain.
func NodeMain() {
	if os.Getenv(NodeEnv) != "1" {
		return
	}
	ctx, stop := signalContext()
	defer stop()
	queue, err := strconv.Atoi(os.Getenv(nodeQueueEnv))
	if err != nil {
		queue = 0
	}
	pingMs, err := strconv.Atoi(os.Getenv(nodePingEnv))
	if err != nil {
		pingMs = 0
	}
	keepMs, err := strconv.Atoi(os.Getenv(nodeKeepAliveEnv))
	if err != nil {
		keepMs = 0
	}
	err = RunNode(ctx, NodeConfig{RedisURL: os.Getenv(nodeRedisEnv), Transport: os.Getenv(nodeTransportEnv), SendQueue: queue,
		PingInterval: time.Duration(pingMs) * time.Millisecond, TCPKeepAlive: time.Duration(keepMs) * time.Millisecond,
		Routing: os.Getenv(nodeRoutingEnv) == "true"},
		func(addr string) { fmt.Printf("%s%s\n", listeningPrefix, addr) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay node:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// keepAliveMs is NodeSpec.TCPKeepAlive as the relay node's environment
// carries it: milliseconds, with -1 (as the listener set it) kept.
func keepAliveMs(d time.Duration) int64 {
	switch {
	case d < 0:
		return -1
	case d > 0 && d < time.Millisecond:
		return 1 // not 0, which is off
	}
	return d.Milliseconds()
}

// NodeSpec says how to start a node.
type NodeSpec struct {
	Server      string // ServerRelay (default) or ServerDurasock
	DurasockBin string // path of the cmd/durasock binary, for ServerDurasock
	RedisURL    string // empty: in-memory adapter
	Transport   string // "streams" or "pubsub"
	Name        string // for messages
	SendQueue   int    // relay nodes: Engine.IO send queue per session; 0: default
	// PingInterval is the node's Engine.IO ping interval (every server
	// kind); 0: the server's default, 25 s.
	PingInterval time.Duration
	// TCPKeepAlive is the relay and durasock nodes' TCP keepalive of
	// WebSocket connections: 0, none; -1, Go's 15 s (Common.TCPKeepAlive).
	TCPKeepAlive time.Duration
	// Routing turns interest routing on (durasock nodes): each node reads only
	// its inbox and the messages of its sockets' rooms.
	Routing bool
}

// Node is a running server process.
type Node struct {
	Name   string
	Server string
	Addr   string // 127.0.0.1:port
	cmd    *exec.Cmd
	exited chan struct{}
	logs   *tail
	waitMu sync.Mutex
	err    error
}

// URL is the node's HTTP base URL.
func (n *Node) URL() string { return "http://" + n.Addr }

// SocketURL is the node's Socket.IO endpoint.
func (n *Node) SocketURL() string { return n.URL() + "/socket.io/" }

// PID is the node's process id.
func (n *Node) PID() int { return n.cmd.Process.Pid }

// Logs returns the end of the node's stderr.
func (n *Node) Logs() string { return n.logs.String() }

// StartNode starts a node process and waits until it answers /healthz.
func StartNode(ctx context.Context, spec NodeSpec) (*Node, error) {
	n := &Node{Name: spec.Name, Server: spec.Server, exited: make(chan struct{}), logs: newTail(64 << 10)}
	var stdout io.ReadCloser
	pingEnv := nodePingEnv + "=" + strconv.FormatInt(spec.PingInterval.Milliseconds(), 10)
	switch spec.Server {
	case "", ServerRelay:
		n.Server = ServerRelay
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: own executable: %w", err)
		}
		n.cmd = exec.Command(self)
		n.cmd.Env = append(os.Environ(), NodeEnv+"=1", nodeRedisEnv+"="+spec.RedisURL, nodeTransportEnv+"="+spec.Transport,
			nodeQueueEnv+"="+strconv.Itoa(spec.SendQueue), pingEnv, nodeRoutingEnv+"="+strconv.FormatBool(spec.Routing),
			nodeKeepAliveEnv+"="+strconv.FormatInt(keepAliveMs(spec.TCPKeepAlive), 10))
		if stdout, err = n.cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	case ServerNode:
		script, err := nodePeerScript()
		if err != nil {
			return nil, err
		}
		n.cmd = exec.Command("node", script)
		n.cmd.Env = append(os.Environ(), nodeRedisEnv+"="+spec.RedisURL, nodeTransportEnv+"="+spec.Transport, pingEnv)
		if stdout, err = n.cmd.StdoutPipe(); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	case ServerDurasock:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		n.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		args := []string{"-addr", n.Addr, "-emit-token", emitToken, "-demo=false", "-log-level", "warn", "-drain-timeout", "5s"}
		if spec.RedisURL != "" {
			args = append(args, "-redis", spec.RedisURL, "-redis-transport", spec.Transport)
		}
		if spec.PingInterval > 0 {
			args = append(args, "-ping-interval", spec.PingInterval.String())
		}
		switch {
		case spec.TCPKeepAlive < 0:
			args = append(args, "-tcp-keepalive", "-1")
		case spec.TCPKeepAlive > 0:
			args = append(args, "-tcp-keepalive", spec.TCPKeepAlive.String())
		}
		if spec.Routing {
			args = append(args, "-interest-routing")
		}
		n.cmd = exec.Command(spec.DurasockBin, args...)
		n.cmd.Env = os.Environ()
	default:
		return nil, fmt.Errorf("bench: server %q: want %s, %s or %s", spec.Server, ServerRelay, ServerDurasock, ServerNode)
	}
	n.cmd.Stderr = n.logs
	setDeathSignal(n.cmd)
	if err := n.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s node: %w", n.Server, err)
	}
	go func() {
		err := n.cmd.Wait()
		n.waitMu.Lock()
		n.err = err
		n.waitMu.Unlock()
		close(n.exited)
	}()
	if stdout != nil {
		addr := make(chan string, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), listeningPrefix); ok {
					addr <- a
				}
			}
		}()
		select {
		case n.Addr = <-addr:
		case <-n.exited:
			return nil, fmt.Errorf("bench: %s node exited at start: %s", n.Server, n.Logs())
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), n.Stop())
		}
	}
	if err := waitHealthy(ctx, n); err != nil {
		return nil, errors.Join(err, n.Stop())
	}
	return n, nil
}

func waitHealthy(ctx context.Context, n *Node) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/healthz", nil)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if resp, err := httpClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-n.exited:
			return fmt.Errorf("bench: %s node exited: %s", n.Server, n.Logs())
		case <-ctx.Done():
			return fmt.Errorf("bench: %s node on %s not healthy: %w; log: %s", n.Server, n.Addr, ctx.Err(), n.Logs())
		}
	}
}

// Stop sends SIGTERM and waits for the exit, at most 15 s, then SIGKILL. It is
// idempotent.
func (n *Node) Stop() error {
	select {
	case <-n.exited:
		return nil
	default:
	}
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("bench: stop node: %w", err)
	}
	select {
	case <-n.exited:
		return nil
	case <-time.After(15 * time.Second):
	}
	if err := n.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("bench: kill node: %w", err)
	}
	<-n.exited
	return fmt.Errorf("bench: %s node on %s did not stop within 15s after SIGTERM", n.Server, n.Addr)
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// BuildDurasock builds cmd/durasock into dir and returns the binary's path. It
// runs "go build" in the module, so the current directory must be inside it.
func BuildDurasock(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "durasock")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/durasock/durasock/cmd/durasock")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("bench: go build cmd/durasock: %w: %s", err, b)
	}
	return out, nil
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// nodePeerScript finds bench/node/relay.js in the module that contains the
// current directory and checks that its npm packages are installed.
func nodePeerScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	for {
		script := filepath.Join(dir, "bench", "node", "relay.js")
		if _, err := os.Stat(script); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "bench", "node", "node_modules", "socket.io")); err != nil {
				return "", fmt.Errorf("bench: the Node peer's packages are not installed: run (cd %s && npm ci)", filepath.Dir(script))
			}
			return script, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bench: bench/node/relay.js not found: run from inside the durasock repository")
		}
		dir = parent
	}
}
