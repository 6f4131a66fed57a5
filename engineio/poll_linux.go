//go:build linux

package engineio

import (
	"fmt"
	"os"
	"sync"
	"syscall"
)

// poller watches idle WebSocket connections with one epoll instance, so that an
// idle connection has no goroutine (and no goroutine stack) waiting in a read.
//
// A connection is armed with EPOLLONESHOT and level-triggered readiness: arming
// a connection that already has bytes in the kernel reports it at once, and one
// report disarms it until its reader parks it again. The Go runtime's own
// netpoller keeps its registration of the same descriptor; both are legal.
//
// The epoll descriptor itself is waited for through the runtime netpoller (an
// epoll descriptor is readable while it has events), so the poller goroutine
// blocks like any network read and Close ends it by closing the descriptor.
// The descriptor numbers used with epoll_ctl are valid: a connection's
// descriptor is not closed while it is armed (wsConn.fdmu), and the epoll
// descriptor not while mu is read-locked.
type poller struct {
	srv  *Server
	file *os.File
	rc   syscall.RawConn
	epfd int
	done chan struct{}

	mu     sync.RWMutex
	closed bool
}

// pollEvents are the events a parked connection waits for. EPOLLHUP and
// EPOLLERR are always reported; each of them wakes the reader, whose read then
// sees the end of the connection.
const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// pollBatch is how many events one epoll_wait returns at most.
const pollBatch = 128

func newPoller(srv *Server) (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("engineio: epoll_create1: %w", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		_ = syscall.Close(fd) // not handed out yet; the SetNonblock error is what matters
		return nil, fmt.Errorf("engineio: epoll nonblock: %w", err)
	}
	// A non-blocking descriptor makes os.NewFile register it with the runtime
	// netpoller.
	f := os.NewFile(uintptr(fd), "engineio-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		_ = f.Close() // unusable; the SyscallConn error is what matters
		return nil, fmt.Errorf("engineio: epoll raw conn: %w", err)
	}
	p := &poller{srv: srv, file: f, rc: rc, epfd: fd, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// arm registers the descriptor fd (add) or re-arms it (mod) for one
// readiness report, which wakes the connection with the given id. The caller
// keeps fd open meanwhile.
func (p *poller) arm(fd int, id uint64, add bool) error {
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return errServerClosing
	}
	if err := syscall.EpollCtl(p.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("engineio: epoll_ctl: %w", err)
	}
	return nil
}

// run dispatches readiness reports until the poller is closed.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, pollBatch)
	ids := make([]uint64, 0, pollBatch)
	conns := make([]*wsConn, 0, pollBatch)
	var n int
	var waitErr error
	wait := func(fd uintptr) bool {
		n, waitErr = syscall.EpollWait(int(fd), events, 0)
		if waitErr == syscall.EINTR {
			n, waitErr = 0, nil
			return true // try again at once
		}
		return waitErr != nil || n > 0
	}
	for {
		if err := p.rc.Read(wait); err != nil {
			return // closed
		}
		if waitErr != nil {
			// Cannot happen with a valid descriptor and buffer. Parked
			// connections would never wake: cut them, so that their readers see
			// the end and release them.
			p.srv.log.Error("engineio: epoll_wait failed", "err", waitErr)
			p.srv.cutParked()
			return
		}
		ids = ids[:0]
		for _, ev := range events[:n] {
			ids = append(ids, uint64(uint32(ev.Fd))|uint64(uint32(ev.Pad))<<32)
		}
		conns = p.srv.wakeConns(ids, conns[:0])
	}
}

// close stops the poller and waits for its goroutine. Connections still armed
// are forgotten by the kernel with the descriptor.
func (p *poller) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.file.Close() // ends run; closing twice is not possible here
	<-p.done
}
