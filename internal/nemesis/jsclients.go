package nemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// jsClients is the node process (js/clients.mjs) that holds the official
// socket.io-client clients of a run. Each client reaches the cluster through a
// switchProxy of its own, which stands for a load balancer: a new connection
// goes to the client's home node if usable, else to another. The client's own
// reconnection and connection state recovery do the rest, as in production.
//
// A history session of such a client spans its reconnects while the server
// recovers it (socket.recovered): it is owed every event sent from the moment
// it joined its rooms until it closes, whatever happened to its connections in
// between. A reconnect that is not recovered ends the session (with the reason
// of the disconnect) and starts a new one.
type jsClients struct {
	r      *Run
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	logs   *tail
	exited chan struct{}

	mu      sync.Mutex
	clients map[int]*jsClient
	closed  map[int]bool
}

// jsClient is one official client.
type jsClient struct {
	id    int
	ns    string
	rooms []string
	home  int
	lb    *switchProxy
	ready chan struct{} // closed when its first session is ready
	once  sync.Once

	mu         sync.Mutex
	sess       *sessHist
	downAt     int64
	downReason string
}

func (c *jsClient) current() *sessHist {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

// startJSClients starts the node process; openJS adds clients to it.
func startJSClients(r *Run) (*jsClients, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("nemesis: node is needed for the official client (scripts/test installs it): %w", err)
	}
	dir := packageDir()
	script := filepath.Join(dir, "js", "clients.mjs")
	interop := filepath.Join(dir, "..", "..", "interop")
	if _, err := os.Stat(filepath.Join(interop, "node_modules", "socket.io-client", "package.json")); err != nil {
		return nil, fmt.Errorf("nemesis: socket.io-client is missing in interop/node_modules (run npm ci in interop, as scripts/test does): %w", err)
	}
	cmd := exec.Command(node, script)
	cmd.Env = append(os.Environ(), "NEMESIS_INTEROP="+interop)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	j := &jsClients{r: r, cmd: cmd, logs: newTail(32 << 10), exited: make(chan struct{}),
		clients: map[int]*jsClient{}, closed: map[int]bool{}}
	cmd.Stderr = j.logs
	if j.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nemesis: start the official clients: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			j.handle(sc.Bytes())
		}
		_ = cmd.Wait() // the exit is seen through exited
		close(j.exited)
	}()
	return j, nil
}

// packageDir is this package's source directory: the working directory of
// its tests, or where it was compiled from (a test binary run elsewhere).
func packageDir() string {
	if _, err := os.Stat(filepath.Join("js", "clients.mjs")); err == nil {
		if dir, err := filepath.Abs("."); err == nil {
			return dir
		}
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// jsReport is one line of clients.mjs.
type jsReport struct {
	Kind      string `json:"k"`
	Client    int    `json:"c"`
	Recovered bool   `json:"recovered"`
	Pub       int    `json:"p"`
	Seq       uint64 `json:"s"`
	Reason    string `json:"reason"`
	Err       string `json:"err"`
}

func (j *jsClients) handle(line []byte) {
	var rep jsReport
	if err := json.Unmarshal(line, &rep); err != nil {
		j.logs.Write([]byte("nemesis: bad report: " + string(line) + "\n"))
		return
	}
	j.mu.Lock()
	c := j.clients[rep.Client]
	if rep.Kind == "closed" {
		j.closed[rep.Client] = true
	}
	j.mu.Unlock()
	if c == nil {
		if rep.Kind == "bad" {
			j.logs.Write([]byte("nemesis: " + rep.Err + "\n"))
		}
		return
	}
	now := j.r.clk.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch rep.Kind {
	case "connect":
		inst := c.lb.lastInstance()
		if rep.Recovered && c.sess != nil {
			c.sess.mu.Lock()
			c.sess.Recovered++
			c.sess.Instance = inst
			c.sess.Moves = append(c.sess.Moves, instMove{At: now, Index: len(c.sess.Got), Instance: inst})
			c.sess.mu.Unlock()
			return
		}
		if c.sess != nil {
			c.sess.mu.Lock()
			if c.sess.End == 0 {
				c.sess.End, c.sess.Reason = c.downAt, "not recovered: "+c.downReason
			}
			c.sess.mu.Unlock()
		}
		// Ready once its rooms are joined: what arrives before is recorded,
		// not owed.
		s := &sessHist{Client: c.id, Namespace: c.ns, Rooms: c.rooms, Instance: inst, Official: true,
			Moves: []instMove{{At: now, Instance: inst}}}
		j.r.mu.Lock()
		s.ID = j.r.nextSess
		j.r.nextSess++
		j.r.hist.Sessions = append(j.r.hist.Sessions, s)
		j.r.mu.Unlock()
		c.sess = s
	case "ready":
		if c.sess == nil {
			return
		}
		c.sess.mu.Lock()
		c.sess.Ready = now
		c.sess.mu.Unlock()
		c.once.Do(func() { close(c.ready) })
	case "e":
		if c.sess == nil {
			return
		}
		c.sess.mu.Lock()
		c.sess.Got = append(c.sess.Got, recv{Pub: rep.Pub, Seq: rep.Seq})
		c.sess.mu.Unlock()
	case "down":
		c.downAt, c.downReason = now, rep.Reason
	case "bad":
		if c.sess != nil {
			c.sess.mu.Lock()
			c.sess.Bad++
			c.sess.mu.Unlock()
		}
		j.logs.Write([]byte(fmt.Sprintf("nemesis: client %d: %s\n", c.id, rep.Err)))
	}
}

func (j *jsClients) send(cmd map[string]any) error {
	b, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Errorf("nemesis: %w", err)
	}
	if _, err := j.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("nemesis: official clients: %w (%s)", err, j.logs.String())
	}
	return nil
}

// open starts an official client of namespace ns in rooms whose load balancer
// prefers home.
func (j *jsClients) open(id int, ns string, rooms []string, home int) (*jsClient, error) {
	lb, err := startSwitchProxy(func() *nodeProc { return j.r.pickNode(home) })
	if err != nil {
		return nil, err
	}
	c := &jsClient{id: id, ns: ns, rooms: rooms, home: home, lb: lb, ready: make(chan struct{})}
	j.mu.Lock()
	j.clients[id] = c
	j.mu.Unlock()
	return c, j.send(map[string]any{"op": "open", "c": id, "url": "http://" + lb.addr() + ns, "rooms": rooms})
}

// bounce breaks the connections of home's clients; they reconnect and should
// be recovered.
func (j *jsClients) bounce(home int) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range j.clients {
		if c.home == home {
			c.lb.cut()
		}
	}
}

// stop closes every client (their sessions end as closed by the harness), then
// the process, and stops the load balancers.
func (j *jsClients) stop(ctx context.Context) error {
	j.mu.Lock()
	cs := make([]*jsClient, 0, len(j.clients))
	for _, c := range j.clients {
		cs = append(cs, c)
	}
	j.mu.Unlock()
	var errs []error
	for _, c := range cs {
		errs = append(errs, j.send(map[string]any{"op": "close", "c": c.id}))
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
wait:
	for {
		j.mu.Lock()
		done := len(j.closed) >= len(cs)
		j.mu.Unlock()
		if done {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			break wait
		case <-deadline.C:
			errs = append(errs, errors.New("nemesis: official clients did not close within 10s"))
			break wait
		}
	}
	now := j.r.clk.now()
	for _, c := range cs {
		if s := c.current(); s != nil {
			s.mu.Lock()
			if s.End == 0 {
				s.End, s.Reason = now, reasonClosed
			}
			s.mu.Unlock()
		}
	}
	errs = append(errs, j.close())
	return errors.Join(errs...)
}

// close ends the process (stdin closed, then SIGKILL if it lingers) and the
// load balancers. Idempotent.
func (j *jsClients) close() error {
	_ = j.stdin.Close() // the process exits when stdin ends
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	var err error
	select {
	case <-j.exited:
	case <-t.C:
		if kerr := j.cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
			err = fmt.Errorf("nemesis: kill the official clients: %w", kerr)
		}
		<-j.exited
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, c := range j.clients {
		c.lb.close()
	}
	return err
}

// switchProxy is a TCP load balancer for one client: every new connection
// goes to the node pick returns at that moment.
type switchProxy struct {
	ln   net.Listener
	pick func() *nodeProc
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	last  int
}

func startSwitchProxy(pick func() *nodeProc) (*switchProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	sp := &switchProxy{ln: ln, pick: pick, conns: map[net.Conn]struct{}{}, last: -1}
	sp.wg.Add(1)
	go sp.acceptLoop()
	return sp, nil
}

func (sp *switchProxy) addr() string { return sp.ln.Addr().String() }

func (sp *switchProxy) lastInstance() int {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.last
}

func (sp *switchProxy) acceptLoop() {
	defer sp.wg.Done()
	for {
		c, err := sp.ln.Accept()
		if err != nil {
			return
		}
		sp.wg.Add(1)
		go sp.serve(c)
	}
}

func (sp *switchProxy) serve(c net.Conn) {
	defer sp.wg.Done()
	p := sp.pick()
	if p == nil {
		c.Close()
		return
	}
	d, err := net.DialTimeout("tcp", p.addr, 2*time.Second)
	if err != nil {
		c.Close()
		return
	}
	sp.mu.Lock()
	sp.last = p.hist.Instance
	sp.conns[c], sp.conns[d] = struct{}{}, struct{}{}
	sp.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // ends when either side closes
		c.Close()
		d.Close()
		done <- struct{}{}
	}
	go pipe(d, c)
	go pipe(c, d)
	<-done
	<-done
	sp.mu.Lock()
	delete(sp.conns, c)
	delete(sp.conns, d)
	sp.mu.Unlock()
}

// cut closes every current connection.
func (sp *switchProxy) cut() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for c := range sp.conns {
		c.Close()
	}
}

func (sp *switchProxy) close() {
	sp.ln.Close()
	sp.cut()
	sp.wg.Wait()
}
