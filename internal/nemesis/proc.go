package nemesis

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// nodeProc is one node process (an instance of a node slot).
type nodeProc struct {
	hist   *instHist
	cmd    *exec.Cmd
	addr   string
	exited chan struct{}
	logs   *tail

	mu       sync.Mutex
	paused   bool
	draining bool
}

var statusClient = &http.Client{Timeout: 2 * time.Second}

// startNodeProc starts this executable again as a node (NodeMain must run
// first in its main or TestMain) and waits until it listens.
func startNodeProc(ctx context.Context, cfg nodeConfig, hist *instHist, clk clock) (*nodeProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("nemesis: own executable: %w", err)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, fmt.Errorf("nemesis: node config: %w", err)
	}
	// -test.run matches nothing in case NodeMain is missing from a test binary.
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), nodeEnv+"="+string(raw))
	p := &nodeProc{hist: hist, cmd: cmd, exited: make(chan struct{}), logs: newTail(32 << 10)}
	cmd.Stderr = p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nemesis: start node: %w", err)
	}
	hist.PID = cmd.Process.Pid
	hist.Start = clk.now()
	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var r report
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				p.logs.Write([]byte("nemesis: bad report: " + sc.Text() + "\n"))
				continue
			}
			hist.mu.Lock()
			switch r.Kind {
			case "listening":
				listening <- r.Addr
			case "gap":
				hist.Gaps = append(hist.Gaps, r)
			case "drop":
				hist.Drops = append(hist.Drops, r)
			case "late":
				r.At = clk.now()
				hist.Late = append(hist.Late, r)
			case "state":
				hist.States = append(hist.States, stateAt{At: clk.now(), State: r.State, Err: r.Err})
			case "drained":
				if r.Err != "" {
					hist.ExitErr = "drain: " + r.Err
				}
			}
			hist.mu.Unlock()
		}
		err := cmd.Wait()
		hist.mu.Lock()
		hist.Exit = clk.now()
		if err != nil && hist.ExitErr == "" {
			hist.ExitErr = err.Error()
		}
		hist.mu.Unlock()
		close(p.exited)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case p.addr = <-listening:
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("nemesis: node %s exited at start: %s", cfg.NodeID, p.logs.String())
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, errors.Join(fmt.Errorf("nemesis: node %s did not listen: %s", cfg.NodeID, p.logs.String()), p.kill())
}

func (p *nodeProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// usable reports whether clients can talk to the process: running, not
// paused, not draining.
func (p *nodeProc) usable() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.paused && !p.draining && p.running()
}

func (p *nodeProc) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("nemesis: signal %v to pid %d: %w", sig, p.cmd.Process.Pid, err)
	}
	return nil
}

func (p *nodeProc) waitExit(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *nodeProc) kill() error {
	if !p.running() {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	if !p.waitExit(30 * time.Second) {
		return fmt.Errorf("nemesis: pid %d alive 30s after SIGKILL", p.cmd.Process.Pid)
	}
	return nil
}

// term sends SIGTERM (after SIGCONT, should it be paused) and waits for the
// drain, at most d, then kills.
func (p *nodeProc) term(d time.Duration) error {
	if !p.running() {
		return nil
	}
	if err := p.cont(); err != nil {
		return err
	}
	p.mu.Lock()
	p.draining = true // clients and publishers look elsewhere
	p.mu.Unlock()
	if err := p.signal(syscall.SIGTERM); err != nil {
		return err
	}
	if p.waitExit(d) {
		return nil
	}
	return errors.Join(fmt.Errorf("nemesis: pid %d did not drain within %v", p.cmd.Process.Pid, d), p.kill())
}

func (p *nodeProc) pause() error {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	return p.signal(syscall.SIGSTOP)
}

func (p *nodeProc) cont() error {
	p.mu.Lock()
	was := p.paused
	p.paused = false
	p.mu.Unlock()
	if !was {
		return nil
	}
	return p.signal(syscall.SIGCONT)
}

// status reads GET /status.
func (p *nodeProc) status(ctx context.Context) (*nodeStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/status", nil)
	if err != nil {
		return nil, fmt.Errorf("nemesis: %w", err)
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("nemesis: status of %s: %w", p.addr, err)
	}
	defer resp.Body.Close()
	var st nodeStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("nemesis: status of %s: %w", p.addr, err)
	}
	return &st, nil
}

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
