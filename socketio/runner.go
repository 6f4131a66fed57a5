package socketio

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// runner runs the handler calls of one namespace of a connection one after the other, on a
// goroutine that exists only while there is work. The queue of bounded tasks
// (incoming packets) is limited: the reader waits for room, which slows a client
// that sends faster than its handlers run instead of growing memory.
type runner struct {
	srv     *Server
	nsp     string // the namespace whose handlers it runs (connection runners)
	mu      sync.Mutex
	queue   []func()
	running bool
	space   chan struct{} // closed when a waiting producer may retry
}

// push queues f. A bounded push waits while the queue is full, until done is
// closed; it reports whether f was queued.
func (r *runner) push(done <-chan struct{}, bounded bool, f func()) bool {
	r.mu.Lock()
	for bounded && len(r.queue) >= r.srv.opts.EventQueueSize {
		if r.space == nil {
			r.space = make(chan struct{})
		}
		space := r.space
		r.mu.Unlock()
		select {
		case <-space:
		case <-done:
			return false
		}
		r.mu.Lock()
	}
	r.queue = append(r.queue, f)
	if !r.running {
		r.running = true
		r.srv.handlers.add()
		go r.work()
	}
	r.mu.Unlock()
	return true
}

// idle reports whether the runner has nothing to run.
func (r *runner) idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.running && len(r.queue) == 0
}

func (r *runner) work() {
	defer r.srv.handlers.done()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.running = false
			r.queue = nil
			r.mu.Unlock()
			return
		}
		f := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		if r.space != nil {
			close(r.space)
			r.space = nil
		}
		r.mu.Unlock()
		r.call(f)
	}
}

// call runs f; a panic in an application handler is logged and does not take the
// process down.
func (r *runner) call(f func()) {
	defer func() {
		if v := recover(); v != nil {
			r.srv.log.Error("socketio: handler panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	f()
}
