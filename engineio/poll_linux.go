//go:build linux

package engineio

import (
	"fmt"
	"os"
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
// Every epoll_ctl runs inside the RawConn.Control of both descriptors, which
// keeps them from being closed, and their numbers from being reused, meanwhile.
type poller struct {
	srv  *Server
	file *os.File
	rc   syscall.RawConn
	done chan struct{}
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
	p := &poller{srv: srv, file: f, rc: rc, done: make(chan struct{})}
	go p.run()
	return p, nil
}

// arm registers c (add) or re-arms it (mod) for one readiness report, which
// wakes c under its id.
func (p *poller) arm(c *wsConn, add bool) error {
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
	var ctlErr error
	err := c.rc.Control(func(fd uintptr) {
		ctlErr = p.rc.Control(func(epfd uintptr) {
			ctlErr = syscall.EpollCtl(int(epfd), op, int(fd), &ev)
		})
	})
	if err != nil {
		return err
	}
	return ctlErr
}

// run dispatches readiness reports until the poller is closed.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, pollBatch)
	ids := make([]uint64, 0, pollBatch)
	for {
		var n int
		var waitErr error
		err := p.rc.Read(func(fd uintptr) bool {
			n, waitErr = syscall.EpollWait(int(fd), events, 0)
			if waitErr == syscall.EINTR {
				n, waitErr = 0, nil
				return true // try again at once
			}
			return waitErr != nil || n > 0
		})
		if err != nil {
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
		p.srv.wakeConns(ids)
	}
}

// close stops the poller and waits for its goroutine. Connections still armed
// are forgotten by the kernel with the descriptor.
func (p *poller) close() {
	_ = p.file.Close() // ends run; closing twice is not possible here
	<-p.done
}
