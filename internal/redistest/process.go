package redistest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Bounds for waiting on a process to exit.
const (
	termWait = 10 * time.Second
	killWait = 10 * time.Second
)

// process is one running redis-server. The goroutine started by startProcess is its
// only goroutine; it ends when the process exits (Kill guarantees that).
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // exit status, valid after done is closed
}

func startProcess(bin string, args []string, dir, stdoutPath string) (*process, error) {
	out, err := os.OpenFile(stdoutPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("redistest: open %s: %w", stdoutPath, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = out.Close()
		return nil, fmt.Errorf("redistest: start %s: %w", bin, err)
	}
	// The child holds its own copy of the file descriptor.
	_ = out.Close()
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to d for the process to exit.
func (p *process) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.done:
		return true
	case <-t.C:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *process) kill() error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil && !p.exited() {
		return fmt.Errorf("redistest: kill pid %d: %w", p.pid(), err)
	}
	if !p.wait(killWait) {
		return fmt.Errorf("redistest: pid %d did not exit %v after SIGKILL", p.pid(), killWait)
	}
	return nil
}

// term sends SIGTERM, waits up to termWait, then kills.
func (p *process) term() error {
	if p.exited() {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !p.exited() {
		return fmt.Errorf("redistest: terminate pid %d: %w", p.pid(), err)
	}
	// A suspended process handles SIGTERM only once it runs again.
	if err := p.signal(syscall.SIGCONT); err != nil {
		return err
	}
	if p.wait(termWait) {
		return nil
	}
	return p.kill()
}

// signal sends sig unless the process has exited.
func (p *process) signal(sig syscall.Signal) error {
	if err := p.cmd.Process.Signal(sig); err != nil && !p.exited() {
		return fmt.Errorf("redistest: signal %v to pid %d: %w", sig, p.pid(), err)
	}
	return nil
}

// tailFile returns up to the last max bytes of a file, for failure reports.
func tailFile(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(cannot stat %s: %v)", path, err)
	}
	off := int64(0)
	if st.Size() > max {
		off = st.Size() - max
	}
	b, err := io.ReadAll(io.NewSectionReader(f, off, st.Size()-off))
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
		b = append([]byte("...\n"), b...)
	}
	return string(b)
}
