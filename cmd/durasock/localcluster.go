package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// `durasock cluster` starts a whole local cluster to watch the reliability story:
// its own redis-server (in a temporary directory, on a free port), two or three
// durasock nodes on that Redis, and a small load balancer in front of them that
// serves the demo chat and a control panel (kill and restart Redis, drain, kill
// and start nodes; live charts of node states, outbox depth, delivery lag and
// events per second). None of this exists in a node: only this command serves it.

// clusterUsage is printed by `durasock cluster -h`.
const clusterUsage = `usage: durasock cluster [flags]

Starts redis-server, durasock nodes on it and a load balancer that serves the demo
chat at / and a control panel at /cluster/. Ctrl-C stops everything.
`

// redisControl is the Redis of a local cluster: a process the launcher (or a
// test) can kill and start again on the same port.
type redisControl interface {
	Addr() string
	Running() bool
	Kill() error
	Start(ctx context.Context) error
}

func runCluster(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("durasock cluster", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, clusterUsage); fs.PrintDefaults() }
	addr := fs.String("addr", "127.0.0.1:3000", "address of the load balancer (demo chat and control panel)")
	nodes := fs.Int("nodes", 2, "durasock nodes to start (1 to 5)")
	clientDir := fs.String("demo-client-dir", getenv(envPrefix+"DEMO_CLIENT_DIR"), "socket.io-client's dist directory (env DURASOCK_DEMO_CLIENT_DIR; see durasock -h)")
	redisBin := fs.String("redis-server", "redis-server", "redis-server binary")
	open := fs.Bool("open", true, "open the demo in a browser when one is available (xdg-open)")
	ticks := fs.Int("ticks", 10, "numbered events per second that the delivery checker emits and counts on every node; 0 turns it off")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *nodes < 1 || *nodes > 5 {
		return errors.New("cluster: -nodes must be 1 to 5")
	}
	bin, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cluster: own binary: %w", err)
	}
	client := findDemoClient(*clientDir)
	if client == "" {
		return errors.New("cluster: " + clientMissingAdvice)
	}
	if client, err = filepath.Abs(client); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	dir, err := os.MkdirTemp("", "durasock-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rp, err := startRedisProc(ctx, *redisBin, filepath.Join(dir, "redis"))
	if err != nil {
		return err
	}
	defer rp.Close()
	log.Info("redis-server started", "addr", rp.Addr(), "dir", rp.dir)

	lc := newLocalCluster(rp, bin, client, dir, log, stderr)
	lc.checker.rate = max(0, *ticks)
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("cluster: load balancer: %w", err)
	}
	for i := range *nodes {
		if err := lc.addNode(fmt.Sprintf("node-%d", i+1)); err != nil {
			ln.Close()
			lc.stopAll()
			return err
		}
	}
	base := "http://" + ln.Addr().String()
	fmt.Fprintf(stderr, "\ndurasock local cluster: Redis %s, %d nodes\n  demo chat:     %s/   (open it in two windows; ?node=node-2 picks a node)\n  control panel: %s/cluster/   (kill Redis, drain or kill a node, watch the charts)\n  Ctrl-C stops everything.\n\n",
		rp.Addr(), *nodes, base, base)
	if *open {
		openBrowser(base+"/cluster/", log)
	}
	return lc.serve(ctx, ln)
}

// openBrowser opens url with xdg-open when there is a display; otherwise the
// printed URLs are enough.
func openBrowser(u string, log *slog.Logger) {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return
	}
	p, err := exec.LookPath("xdg-open")
	if err != nil {
		return
	}
	cmd := exec.Command(p, u)
	if err := cmd.Start(); err != nil {
		log.Debug("xdg-open", "err", err)
		return
	}
	go func() { _ = cmd.Wait() }() // reaps xdg-open, which returns at once
}

// ---- Redis process ----

// redisProc is a redis-server the launcher started, with an append-only file so
// that a killed Redis comes back with its streams.
type redisProc struct {
	bin, dir string
	port     int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedisProc(ctx context.Context, bin, dir string) (*redisProc, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s not found (install it with: apt-get install redis-server): %w", bin, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	port, err := freeTCPPort()
	if err != nil {
		return nil, err
	}
	r := &redisProc{bin: path, dir: dir, port: port}
	return r, r.Start(ctx)
}

func (r *redisProc) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

func (r *redisProc) Running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Start starts redis-server again on the same port and waits until it answers.
func (r *redisProc) Start(ctx context.Context) error {
	if r.Running() {
		return nil
	}
	cmd := exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	cmd.Dir = r.dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cluster: start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if pingRedis(r.Addr()) == nil {
			return nil
		}
		select {
		case <-done:
			b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			return fmt.Errorf("cluster: redis-server exited at start:\n%s", lastLines(string(b), 10))
		case <-ctx.Done():
			_ = r.Kill()
			return fmt.Errorf("cluster: redis-server did not answer: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Kill stops redis-server with SIGKILL, as a crash would.
func (r *redisProc) Kill() error {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil || !r.Running() {
		return nil
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-done
	return nil
}

func (r *redisProc) Close() error { return r.Kill() }

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis answered %q", strings.TrimSpace(line))
	}
	return nil
}

func freeTCPPort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// ---- nodes ----

// Process states of a node, as the panel shows them.
const (
	procRunning  = "running"
	procDraining = "draining"
	procStopped  = "stopped"
	procKilled   = "killed"
)

// nodeProc is one durasock process of the local cluster.
type nodeProc struct {
	name string
	addr string // 127.0.0.1:port, the same across restarts
	args []string
	out  io.Writer

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	state string
	exit  string

	health nodeHealth // written by the poller only
}

func (n *nodeProc) start(bin string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == procRunning || n.state == procDraining {
		return nil
	}
	cmd := exec.Command(bin, n.args...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		return fmt.Errorf("cluster: start %s: %w", n.name, err)
	}
	done := make(chan struct{})
	go prefixLines(pr, n.out, n.name+" | ")
	go func() {
		err := cmd.Wait()
		pw.Close()
		n.mu.Lock()
		if n.state != procKilled {
			n.state = procStopped
		}
		n.exit = "exit 0"
		if err != nil {
			n.exit = err.Error()
		}
		n.mu.Unlock()
		close(done)
	}()
	n.cmd, n.done, n.state, n.exit = cmd, done, procRunning, ""
	return nil
}

// drain sends SIGTERM: the node stops being ready, closes its clients properly
// and gives its outbox the drain timeout.
func (n *nodeProc) drain() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state != procRunning {
		return nil
	}
	n.state = procDraining
	return n.cmd.Process.Signal(syscall.SIGTERM)
}

// kill sends SIGKILL, as a crash would.
func (n *nodeProc) kill() error {
	n.mu.Lock()
	if n.state != procRunning && n.state != procDraining {
		n.mu.Unlock()
		return nil
	}
	n.state = procKilled
	cmd, done := n.cmd, n.done
	n.mu.Unlock()
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	<-done
	return nil
}

func (n *nodeProc) procState() (state, exit string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state, n.exit
}

func (n *nodeProc) wait() {
	n.mu.Lock()
	done := n.done
	n.mu.Unlock()
	if done != nil {
		<-done
	}
}

// prefixLines copies the node's log to out, each line prefixed with its name.
func prefixLines(r io.Reader, out io.Writer, prefix string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fmt.Fprintf(out, "%s%s\n", prefix, sc.Text())
	}
	_, _ = io.Copy(io.Discard, r) // a line over 1 MiB: keep the pipe flowing
}

// ---- the cluster, its load balancer and panel ----

// localCluster owns the nodes, the Redis control, the health poller and the
// HTTP handler of the load balancer.
type localCluster struct {
	redis     redisControl
	bin       string
	clientDir string
	dir       string
	log       *slog.Logger
	out       io.Writer
	sioPath   string

	mu     sync.Mutex
	nodes  []*nodeProc
	sticky map[string]stickyEntry // Engine.IO sid -> node
	rr     int
	events []string // recent actions, for the panel

	history *clusterHistory
	checker *tickChecker
}

type stickyEntry struct {
	node *nodeProc
	seen time.Time
}

func newLocalCluster(r redisControl, bin, clientDir, dir string, log *slog.Logger, out io.Writer) *localCluster {
	lc := &localCluster{
		redis: r, bin: bin, clientDir: clientDir, dir: dir, log: log, out: out, sioPath: "/socket.io/",
		sticky: map[string]stickyEntry{}, history: newClusterHistory(120),
	}
	lc.checker = newTickChecker(lc, 0)
	return lc
}

// addNode starts one more durasock node on the cluster's Redis.
func (lc *localCluster) addNode(name string) error {
	port, err := freeTCPPort()
	if err != nil {
		return err
	}
	n := &nodeProc{name: name, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: lc.out}
	n.args = []string{
		"-addr", n.addr,
		"-redis", "redis://" + lc.redis.Addr(),
		"-recovery", "2m",
		"-drain-timeout", "5s",
		"-outbox-dir", filepath.Join(lc.dir, name),
		"-demo-client-dir", lc.clientDir,
		"-log-level", "warn",
		"-emit-token", lc.checker.token,
	}
	if err := n.start(lc.bin); err != nil {
		return err
	}
	lc.mu.Lock()
	lc.nodes = append(lc.nodes, n)
	lc.mu.Unlock()
	return nil
}

func (lc *localCluster) nodeList() []*nodeProc {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return append([]*nodeProc(nil), lc.nodes...)
}

func (lc *localCluster) node(name string) *nodeProc {
	for _, n := range lc.nodeList() {
		if n.name == name {
			return n
		}
	}
	return nil
}

// stopAll drains every node (SIGTERM) and waits for them, killing those that
// take longer than their drain timeout and a margin.
func (lc *localCluster) stopAll() {
	var wg sync.WaitGroup
	for _, n := range lc.nodeList() {
		wg.Go(func() {
			if err := n.drain(); err != nil {
				lc.log.Warn("drain", "node", n.name, "err", err)
			}
			done := make(chan struct{})
			go func() { n.wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				if err := n.kill(); err != nil {
					lc.log.Warn("kill", "node", n.name, "err", err)
				}
				<-done
			}
		})
	}
	wg.Wait()
}

// serve runs the load balancer and the health poller until ctx is done, then
// stops the nodes.
func (lc *localCluster) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: lc, ReadHeaderTimeout: 10 * time.Second}
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled, checked := make(chan struct{}), make(chan struct{})
	go func() { defer close(polled); lc.poll(pollCtx) }()
	go func() { defer close(checked); lc.checker.run(pollCtx) }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
	}
	stopPoll()
	<-polled
	<-checked
	lc.stopAll()
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutCtx); serr != nil {
		_ = srv.Close() // hijacked WebSockets of stopped nodes: nothing left to wait for
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func (lc *localCluster) note(format string, args ...any) {
	msg := time.Now().Format("15:04:05 ") + fmt.Sprintf(format, args...)
	lc.log.Info(msg)
	lc.mu.Lock()
	lc.events = append(lc.events, msg)
	if len(lc.events) > 20 {
		lc.events = lc.events[len(lc.events)-20:]
	}
	lc.mu.Unlock()
}

// ServeHTTP is the load balancer: the panel under /cluster/, Engine.IO requests
// sticky to the node of their session, everything else to any ready node.
func (lc *localCluster) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/cluster" || strings.HasPrefix(r.URL.Path, "/cluster/") {
		lc.panel(w, r)
		return
	}
	var target *nodeProc
	isEIO := strings.HasPrefix(r.URL.Path, lc.sioPath) && r.URL.Query().Get("EIO") != ""
	sid := r.URL.Query().Get("sid")
	if isEIO && sid != "" {
		lc.mu.Lock()
		e, ok := lc.sticky[sid]
		if ok {
			e.seen = time.Now()
			lc.sticky[sid] = e
		}
		lc.mu.Unlock()
		if !ok {
			http.Error(w, `{"code":1,"message":"Session ID unknown"}`, http.StatusBadRequest)
			return
		}
		target = e.node
	} else {
		target = lc.pick(r.URL.Query().Get("node"))
	}
	if target == nil {
		http.Error(w, "durasock cluster: no node is ready", http.StatusServiceUnavailable)
		return
	}
	u := &url.URL{Scheme: "http", Host: target.addr}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.FlushInterval = -1
	proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, err error) {
		http.Error(w, "durasock cluster: "+target.name+" is not answering", http.StatusBadGateway)
	}
	if isEIO && sid == "" && r.URL.Query().Get("transport") == "polling" {
		proxy.ModifyResponse = func(resp *http.Response) error { return lc.learnSession(resp, target) }
	}
	proxy.ServeHTTP(w, r)
}

// pick chooses the node of a new session: the one named by ?node= when it is
// ready, else the next ready node in turn.
func (lc *localCluster) pick(name string) *nodeProc {
	nodes := lc.nodeList()
	ready := nodes[:0:0]
	for _, n := range nodes {
		if st, _ := n.procState(); st == procRunning && n.health.ready.Load() {
			if n.name == name {
				return n
			}
			ready = append(ready, n)
		}
	}
	if len(ready) == 0 {
		return nil
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	lc.rr++
	return ready[lc.rr%len(ready)]
}

var sidPattern = regexp.MustCompile(`"sid":"([^"]{1,64})"`)

// learnSession reads the sid of a polling handshake so that the next requests
// of that session reach the same node.
func (lc *localCluster) learnSession(resp *http.Response, n *nodeProc) error {
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if err != nil {
		return err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if m := sidPattern.FindSubmatch(body); m != nil {
		now := time.Now()
		lc.mu.Lock()
		lc.sticky[string(m[1])] = stickyEntry{node: n, seen: now}
		for sid, e := range lc.sticky {
			if now.Sub(e.seen) > 2*time.Minute {
				delete(lc.sticky, sid)
			}
		}
		lc.mu.Unlock()
	}
	return nil
}
