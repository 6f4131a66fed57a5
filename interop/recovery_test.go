package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// TestRecoveryAcrossNodes is what a user of a load-balanced cluster sees when a
// node goes away. Two cmd/durasock processes A and B share one redis-server (AOF)
// and run with -recovery; a TCP proxy stands for the load balancer. Ten official
// clients (socket.io-client 4.8, WebSocket, its built-in connection state
// recovery) connect through the proxy, which sends them all to A, and join room
// "lobby". A publisher posts ~100 numbered events a second to node B's POST
// /api/emit, each to every client, by turns as a broadcast to all, to the room
// and to the ten socket ids (seqStats.lostByKind).
// About two seconds in, node A goes away; the proxy refuses connections for a
// moment (the events published then are what recovery must restore), then sends
// the reconnecting clients to B (or to A restarted). The publisher keeps going
// until a while after every client is back.
//
// Every client must report socket.recovered === true, keep its socket id, and
// have every event from the first it received to the last published, once each
// and in order.
// The control runs the same with recovery off: no client recovers and every one
// misses events, which shows the checks can fail. "same node" only breaks the
// connections and lets the clients back to A, which is there all along: what one
// process's recovery gives, the baseline for the others. The "routed"
// scenarios run the nodes with -interest-routing: each reads only its own
// inbox, and a client restored on B gets what it missed from A's inbox, handed
// over to B's (cluster/handoff.go).
func TestRecoveryAcrossNodes(t *testing.T) {
	node := requireNode(t)
	bin := buildDurasock(t)
	for _, sc := range []recoveryScenario{
		{name: "A SIGTERM", recovery: "2m", fault: faultTerm},
		{name: "A SIGKILL", recovery: "2m", fault: faultKill},
		{name: "A SIGKILL and restart", recovery: "2m", fault: faultRestart},
		{name: "control: recovery off, A SIGKILL", recovery: "0s", fault: faultKill, control: true},
		{name: "same node: connections cut, A stays", recovery: "2m", fault: faultCut},
		// With interest routing each node reads only its own inbox: the
		// client's events come from A's inbox, then from B's (a handoff).
		{name: "routed: A SIGTERM", recovery: "2m", fault: faultTerm, routed: true},
		{name: "routed: A SIGKILL", recovery: "2m", fault: faultKill, routed: true},
		{name: "routed: A SIGKILL and restart", recovery: "2m", fault: faultRestart, routed: true},
	} {
		t.Run(sc.name, func(t *testing.T) {
			r := runRecovery(t, bin, node, sc)
			t.Logf("%s: %s", sc.name, r.summary())
			if sc.control {
				r.checkControl(t)
			} else {
				r.checkRecovered(t)
			}
		})
	}
}

const (
	recoveryClients = 10
	recoveryToken   = "interop-token"
	// publishInterval paces the publisher at ~100 events a second.
	publishInterval = 10 * time.Millisecond
	// eventsBeforeFault is about two seconds of publishing.
	eventsBeforeFault = 200
	// eventsAfterReconnect is about one second of publishing after every client
	// is back.
	eventsAfterReconnect = 100
	// outage is how long the proxy refuses connections after node A went away:
	// the events published then reach a client only through recovery.
	outage = 500 * time.Millisecond
)

type faultKind int

const (
	faultTerm faultKind = iota
	faultKill
	faultRestart
	faultCut // only the connections break; the proxy sends the clients back to A
)

type recoveryScenario struct {
	name     string
	recovery string // the -recovery flag
	fault    faultKind
	control  bool
	routed   bool // -interest-routing
}

// recoveryRun is what one scenario saw.
type recoveryRun struct {
	sc              recoveryScenario
	clients         []clientResult
	lastPublished   int
	publishedAtCut  int // last seq published before the proxy cut the clients
	publishedAtBack int // last seq published before the proxy let them in again
	// metrics is the /metrics text of the node the clients went back to.
	metrics  string
	problems []string
	logs     func() string
}

// clientResult is one client of js/recovery.mjs, as its RESULT line reports it.
type clientResult struct {
	Label         string   `json:"label"`
	FirstID       string   `json:"firstId"`
	FirstPid      string   `json:"firstPid"`
	ID            string   `json:"id"`
	Pid           string   `json:"pid"`
	Reconnects    int      `json:"reconnects"`
	Recovered     bool     `json:"recovered"`
	RecoveredEach []bool   `json:"recoveredEach"`
	Disconnects   []string `json:"disconnects"`
	Offsets       int      `json:"offsets"`
	Connected     bool     `json:"connected"`
	Seqs          []int    `json:"seqs"`

	stats seqStats
}

// Kinds of events the publisher sends, by seq modulo 3.
var eventKinds = [3]string{"to its id", "broadcast", "to its room"}

// emitBody is the POST /api/emit body of event n; ids are the clients' socket ids.
func emitBody(n int, ids []string) string {
	switch n % 3 {
	case 1:
		return fmt.Sprintf(`{"event":"seq","args":[{"n":%d}]}`, n)
	case 2:
		return fmt.Sprintf(`{"event":"seq","args":[{"n":%d}],"rooms":["room:lobby"]}`, n)
	default:
		rooms, err := json.Marshal(ids)
		if err != nil {
			panic(err) // strings always marshal
		}
		return fmt.Sprintf(`{"event":"seq","args":[{"n":%d}],"rooms":%s}`, n, rooms)
	}
}

// seqStats counts what a client's sequence numbers show against 1..last.
type seqStats struct {
	first, max         int
	lost, dup, reord   int
	firstLost          int // 0: none
	firstDup, firstReo int // 0: none
	lostByKind         [3]int
}

// analyzeSeqs counts, from the first seq received to last: the seqs never
// received (lost), those received more than once (dup, each extra copy), and
// those received after a higher one (reord).
func analyzeSeqs(seqs []int, last int) seqStats {
	var st seqStats
	if len(seqs) == 0 {
		st.lost, st.firstLost = last, 1
		return st
	}
	st.first = seqs[0]
	seen := make(map[int]bool, len(seqs))
	for _, n := range seqs {
		switch {
		case seen[n]:
			st.dup++
			if st.firstDup == 0 {
				st.firstDup = n
			}
		case n < st.max:
			st.reord++
			if st.firstReo == 0 {
				st.firstReo = n
			}
		}
		seen[n] = true
		st.max = max(st.max, n)
	}
	for n := st.first; n <= last; n++ {
		if !seen[n] {
			st.lost++
			st.lostByKind[n%3]++
			if st.firstLost == 0 {
				st.firstLost = n
			}
		}
	}
	return st
}

func (r *recoveryRun) totals() (recovered, lost, dup, reord int) {
	for _, c := range r.clients {
		if c.Recovered {
			recovered++
		}
		lost += c.stats.lost
		dup += c.stats.dup
		reord += c.stats.reord
	}
	return
}

func (r *recoveryRun) summary() string {
	rec, lost, dup, reord := r.totals()
	return fmt.Sprintf("%d/%d recovered, lost %d, dup %d, reord %d (published 1..%d; proxy cut after %d, let clients in after %d)",
		rec, recoveryClients, lost, dup, reord, r.lastPublished, r.publishedAtCut, r.publishedAtBack)
}

func (r *recoveryRun) details() string {
	var b strings.Builder
	for _, p := range r.problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	for _, c := range r.clients {
		st := c.stats
		fmt.Fprintf(&b, "%s: recovered=%v (each reconnect %v) reconnects=%d disconnects=%v id %s->%s pid %q->%q offsets=%d received=%d first=%d max=%d lost=%d",
			c.Label, c.Recovered, c.RecoveredEach, c.Reconnects, c.Disconnects, c.FirstID, c.ID, c.FirstPid, c.Pid,
			c.Offsets, len(c.Seqs), st.first, st.max, st.lost)
		if st.firstLost != 0 {
			fmt.Fprintf(&b, " (first missing %d; %s %d, %s %d, %s %d)", st.firstLost,
				eventKinds[1], st.lostByKind[1], eventKinds[2], st.lostByKind[2], eventKinds[0], st.lostByKind[0])
		}
		fmt.Fprintf(&b, " dup=%d", st.dup)
		if st.firstDup != 0 {
			fmt.Fprintf(&b, " (first %d)", st.firstDup)
		}
		fmt.Fprintf(&b, " reord=%d", st.reord)
		if st.firstReo != 0 {
			fmt.Fprintf(&b, " (first %d)", st.firstReo)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// checkRecovered requires every client to have recovered its session (same
// socket id), with every event once and in order, each with an offset (the
// client sends the last one when it reconnects).
func (r *recoveryRun) checkRecovered(t *testing.T) {
	t.Helper()
	ok := len(r.problems) == 0 && len(r.clients) == recoveryClients
	for _, c := range r.clients {
		if !c.Recovered || c.Reconnects == 0 || c.ID != c.FirstID || c.Offsets != len(c.Seqs) ||
			c.stats.lost+c.stats.dup+c.stats.reord > 0 {
			ok = false
		}
	}
	if !ok {
		t.Errorf("%s: want %d/%d recovered (same socket id, an offset on every event), lost 0, dup 0, reord 0; got %s\n%s%s",
			r.sc.name, recoveryClients, recoveryClients, r.summary(), r.details(), r.logs())
	}
	// The node counted them: an operator sees recoveries, and refusals.
	if rec, not := r.recoveryMetrics(); rec != strconv.Itoa(recoveryClients) || (not != "0" && not != "absent") {
		t.Errorf("%s: the node counted %s sessions recovered and %s not; want %d and 0", r.sc.name, rec, not, recoveryClients)
	}
}

// checkControl requires that with recovery off no client recovers and every
// client misses the events published while it was away: the checks of
// checkRecovered would fail.
func (r *recoveryRun) checkControl(t *testing.T) {
	t.Helper()
	ok := len(r.problems) == 0 && len(r.clients) == recoveryClients
	for _, c := range r.clients {
		if c.Recovered || c.Reconnects == 0 || c.stats.lost == 0 || c.stats.max <= r.publishedAtBack {
			ok = false
		}
	}
	if !ok {
		t.Errorf("%s: want 0/%d recovered, every client reconnected, missing events and receiving new ones; got %s\n%s%s",
			r.sc.name, recoveryClients, r.summary(), r.details(), r.logs())
	}
}

// runRecovery runs one scenario and returns what the clients saw. It fails the
// test only when the setup does not work (no nodes, no clients).
func runRecovery(t *testing.T, bin, node string, sc recoveryScenario) *recoveryRun {
	redis := redistest.Standalone(t, redistest.WithAOF())
	args := []string{"-recovery", sc.recovery}
	if sc.routed {
		args = append(args, "-interest-routing")
	}
	portA := redistest.FreePort(t)
	a := startNode(t, bin, portA, redis.URL(), args)
	b := startNode(t, bin, redistest.FreePort(t), redis.URL(), args)
	a.name, b.name = "A", "B"
	waitPeers(t, a.proc, b.proc)
	nodes := []*recNode{a, b}
	run := &recoveryRun{sc: sc}
	run.logs = func() string {
		var s strings.Builder
		for _, n := range nodes {
			fmt.Fprintf(&s, "--- node %s log (tail):\n%s\n", n.name, tail(n.proc.log.String(), 25))
		}
		return s.String()
	}

	proxy := startSwitchProxy(t, a.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	cmd := command(ctx, "http://"+proxy.addr(), node, "js/recovery.mjs")
	cmd.Env = append(cmd.Env, "CLIENTS="+strconv.Itoa(recoveryClients))
	script := startScript(t, cmd)

	ready, err := script.wait("READY ", 20*time.Second)
	if err != nil {
		t.Fatalf("clients did not connect: %v\n%s\n%s", err, script.output(), run.logs())
	}
	var ids []string
	if _, list, _ := strings.Cut(strings.TrimPrefix(ready, "READY "), " "); json.Unmarshal([]byte(list), &ids) != nil || len(ids) != recoveryClients {
		t.Fatalf("bad READY line %q", ready)
	}
	pub := startPublisher(t, b.proc.url, recoveryToken, ids)
	testwait.For(t, 20*time.Second, "the publisher's first events", pub.unfailed(t, func() bool { return pub.last() >= eventsBeforeFault }))

	// The fault: node A goes away, the proxy stops sending clients to it.
	switch sc.fault {
	case faultTerm:
		proxy.setTarget("")
		if err := a.term(15 * time.Second); err != nil {
			run.problems = append(run.problems, fmt.Sprintf("node A did not drain cleanly on SIGTERM: %v", err))
		}
	case faultKill, faultRestart:
		a.kill()
		proxy.setTarget("")
	case faultCut:
		proxy.setTarget("")
	}
	proxy.cut()
	run.publishedAtCut = pub.last()
	cutAt := time.Now()
	target := b.addr
	if sc.fault == faultCut {
		target = a.addr
	}
	if sc.fault == faultRestart {
		a2 := startNode(t, bin, portA, redis.URL(), args)
		a2.name = "A (restarted)"
		nodes = append(nodes, a2)
		if sc.routed {
			// A routing node is ready once it knows the interest of every
			// live node, A's earlier process included until it times out
			// (NodeTimeout, 15 s: 1 500 events here, more than a session
			// keeps). The clients go back to it before that: the handoff
			// does not wait for a node that does not answer its cut.
			waitCluster(t, a2.proc, b.proc, false)
		} else {
			waitPeers(t, a2.proc, b.proc)
		}
		target = a2.addr
	}
	time.Sleep(time.Until(cutAt.Add(outage)))
	run.publishedAtBack = pub.last()
	proxy.setTarget(target)

	if _, err := script.wait("RECONNECTED", 20*time.Second); err != nil {
		run.problems = append(run.problems, fmt.Sprintf("not every client reconnected: %v", err))
	}
	back := pub.last()
	testwait.For(t, 20*time.Second, "the publisher's events after the reconnect", pub.unfailed(t, func() bool {
		return pub.last() >= back+eventsAfterReconnect
	}))
	run.lastPublished = pub.stop()
	if err := pub.err(); err != nil {
		t.Fatalf("publisher: %v\n%s", err, run.logs())
	}

	script.send(fmt.Sprintf("END %d\n", run.lastPublished))
	line, err := script.wait("RESULT ", 30*time.Second)
	if err != nil {
		t.Fatalf("no result from recovery.mjs: %v\n%s\n%s", err, script.output(), run.logs())
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "RESULT ")), &run.clients); err != nil {
		t.Fatalf("bad RESULT line: %v\n%s", err, line)
	}
	for i := range run.clients {
		run.clients[i].stats = analyzeSeqs(run.clients[i].Seqs, run.lastPublished)
	}
	run.metrics = get(t, "http://"+target+"/metrics")
	return run
}

// recoveryMetrics returns the sessions recovered and not recovered in "/" that
// the node the clients went back to counted.
func (r *recoveryRun) recoveryMetrics() (recovered, not string) {
	find := func(name string) string {
		re := regexp.MustCompile(`(?m)^` + name + `\{namespace="/"\} (\S+)$`)
		if m := re.FindStringSubmatch(r.metrics); m != nil {
			return m[1]
		}
		return "absent"
	}
	return find("durasock_socketio_sessions_recovered_total"), find("durasock_socketio_sessions_not_recovered_total")
}

// recNode is one cmd/durasock process that the test may stop at any time.
type recNode struct {
	name   string
	addr   string
	proc   *durasockProc
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // Wait's result, set before exited is closed
}

// startNode runs cmd/durasock in cluster mode on port with extra flags. Unless the
// test stopped it, it gets SIGTERM at the end and must drain cleanly.
func startNode(t *testing.T, bin string, port int, redisURL string, extra []string) *recNode {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	n := &recNode{addr: addr, proc: &durasockProc{url: "http://" + addr, log: &syncBuffer{}}, exited: make(chan struct{})}
	args := append([]string{
		"-addr", addr,
		"-redis", redisURL,
		"-emit-token", recoveryToken,
		"-drain-timeout", "5s",
		"-log-level", "info",
	}, extra...)
	n.cmd = exec.Command(bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = n.proc.log, n.proc.log
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start durasock: %v", err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-n.exited:
			return // the test stopped it
		default:
		}
		if err := n.term(15 * time.Second); err != nil {
			t.Errorf("durasock on %s: %v\n%s", addr, err, n.proc.log.String())
		}
	})
	return n
}

// term sends SIGTERM and waits for the drain; after d it kills the process.
func (n *recNode) term(d time.Duration) error {
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-n.exited:
		if n.err != nil {
			return fmt.Errorf("exit after SIGTERM: %w", n.err)
		}
		return nil
	case <-time.After(d):
		n.kill()
		return fmt.Errorf("did not exit within %v of SIGTERM (drain timeout 5s)", d)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (n *recNode) kill() {
	// An error means it has exited already; exited is closed then.
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

func tail(s string, lines int) string {
	s = strings.TrimRight(s, "\n")
	for i, idx := 0, len(s); i < lines; i++ {
		idx = strings.LastIndexByte(s[:idx], '\n')
		if idx < 0 {
			return s
		}
		if i == lines-1 {
			return s[idx+1:]
		}
	}
	return s
}

// publisher posts event "seq" with {"n":N} (emitBody) to POST /api/emit, N = 1,
// 2, ... one after the other, about every publishInterval. Asked to stop, it
// stops after the next broadcast (N%3 == 1).
type publisher struct {
	mu      sync.Mutex
	n       int // last seq the API accepted
	failure error
	stopped chan struct{}
	done    chan struct{}
}

func startPublisher(t *testing.T, url, token string, ids []string) *publisher {
	p := &publisher{stopped: make(chan struct{}), done: make(chan struct{})}
	tr := &http.Transport{}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		defer tr.CloseIdleConnections()
		tick := time.NewTicker(publishInterval)
		defer tick.Stop()
		for n := 1; ; n++ {
			<-tick.C
			select {
			case <-p.stopped:
				if n%3 == 2 {
					// The last event was a broadcast, which every client gets
					// after reconnecting, recovered or not.
					return
				}
			default:
			}
			if err := postEmit(client, url, token, emitBody(n, ids)); err != nil {
				p.mu.Lock()
				p.failure = fmt.Errorf("event %d: %w", n, err)
				p.mu.Unlock()
				return
			}
			p.mu.Lock()
			p.n = n
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

func postEmit(client *http.Client, url, token, body string) error {
	req, err := http.NewRequest(http.MethodPost, url+"/api/emit", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	reply, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode/100 != 2 {
		return fmt.Errorf("POST /api/emit: HTTP %d %s", res.StatusCode, bytes.TrimSpace(reply))
	}
	return nil
}

func (p *publisher) last() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// unfailed returns cond for testwait.For, failing t as soon as the publisher
// failed instead of waiting out the deadline.
func (p *publisher) unfailed(t *testing.T, cond func() bool) func() bool {
	return func() bool {
		if err := p.err(); err != nil {
			t.Fatalf("publisher: %v", err)
		}
		return cond()
	}
}

func (p *publisher) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failure
}

// stop ends publishing and returns the last seq published. It may be called again.
func (p *publisher) stop() int {
	select {
	case <-p.stopped:
	default:
		close(p.stopped)
	}
	<-p.done
	return p.last()
}

// script is a running client script whose stdout lines the test waits for.
type script struct {
	stdin io.WriteCloser
	out   syncBuffer
	lines chan string
}

func startScript(t *testing.T, cmd *exec.Cmd) *script {
	t.Helper()
	s := &script{lines: make(chan string, 1024)}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &s.out
	s.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		defer close(s.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 16<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "RESULT ") {
				fmt.Fprintln(&s.out, line)
			}
			select {
			case s.lines <- line:
			default: // nobody waits for it
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		<-read
		if err := cmd.Wait(); err != nil {
			t.Logf("recovery.mjs: %v\n%s", err, s.output())
		}
	})
	return s
}

// wait returns the next line that starts with prefix, skipping others.
func (s *script) wait(prefix string, d time.Duration) (string, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				return "", fmt.Errorf("the script ended before printing %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-timer.C:
			return "", fmt.Errorf("no %q within %v", prefix, d)
		}
	}
}

func (s *script) send(line string) {
	// A failed write shows as a missing RESULT.
	_, _ = io.WriteString(s.stdin, line)
}

func (s *script) output() string { return s.out.String() }

// switchProxy is a TCP proxy standing for a load balancer: it forwards each new
// connection to its current target, refuses connections while it has none, and
// can cut every connection it forwards.
type switchProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	gen    int // changes with the target and at every cut
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

func startSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.close)
	return p
}

func (p *switchProxy) addr() string { return p.ln.Addr().String() }

// setTarget sends new connections to addr; "" refuses them.
func (p *switchProxy) setTarget(addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target = addr
	p.gen++
}

// cut closes every connection the proxy forwards.
func (p *switchProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	for c := range p.conns {
		c.Close()
	}
}

func (p *switchProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.cut()
	p.wg.Wait()
}

func (p *switchProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *switchProxy) serve(down net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	target, gen := p.target, p.gen
	p.mu.Unlock()
	if target == "" {
		down.Close()
		return
	}
	up, err := net.DialTimeout("tcp", target, 2*time.Second)
	if err != nil {
		down.Close()
		return
	}
	p.mu.Lock()
	if p.closed || p.gen != gen {
		// Cut or switched while dialing: this connection belongs to the old target.
		p.mu.Unlock()
		down.Close()
		up.Close()
		return
	}
	p.conns[down], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()

	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src) // ends when either side closes
		dst.Close()
		src.Close()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		pipe(up, down)
	}()
	pipe(down, up)

	p.mu.Lock()
	delete(p.conns, down)
	delete(p.conns, up)
	p.mu.Unlock()
}

func TestAnalyzeSeqs(t *testing.T) {
	for _, tc := range []struct {
		name string
		seqs []int
		last int
		want seqStats
	}{
		{"complete", []int{1, 2, 3, 4}, 4, seqStats{first: 1, max: 4}},
		{"from the first received", []int{3, 4, 5}, 5, seqStats{first: 3, max: 5}},
		{"gap and lost tail", []int{1, 2, 5, 6}, 8, seqStats{first: 1, max: 6, lost: 4, firstLost: 3,
			lostByKind: [3]int{1, 2, 1}}},
		{"duplicates", []int{1, 2, 2, 3, 1}, 3, seqStats{first: 1, max: 3, dup: 2, firstDup: 2}},
		{"reordered", []int{1, 3, 2, 4}, 4, seqStats{first: 1, max: 4, reord: 1, firstReo: 2}},
		{"nothing", nil, 3, seqStats{lost: 3, firstLost: 1}},
	} {
		if got := analyzeSeqs(tc.seqs, tc.last); got != tc.want {
			t.Errorf("%s: analyzeSeqs(%v, %d) = %+v, want %+v", tc.name, tc.seqs, tc.last, got, tc.want)
		}
	}
}
