package socketio

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// runner runs the handler calls of one connection one after the other, on a
// goroutine that exists only while there is work. The queue of bounded tasks
// (incoming packets) is limited: the reader waits for room, which slows a client
// that sends faster than its handlers run instead of growing memory.
type runner struct {
	srv     *Server
	mu      sync.Mutex
	queue   []task
	bytes   int // of the queued tasks
	running bool
	space   chan struct{} // closed when a waiting producer may retry
}

// task is a queued call and the bytes of the packet it holds.
type task struct {
	f    func()
	size int
}

// push queues f, which holds size bytes of an incoming packet. A bounded push
// waits while the queue is full (EventQueueSize tasks, or EventQueueBytes
// bytes unless the queue is empty), until done is closed; it reports whether
// f was queued.
func (r *runner) push(done <-chan struct{}, bounded bool, size int, f func()) bool {
	r.mu.Lock()
	for bounded && r.fullLocked(size) {
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
	r.queue = append(r.queue, task{f: f, size: size})
	r.bytes += size
	if !r.running {
		r.running = true
		r.srv.handlers.Add()
		go r.work()
	}
	r.mu.Unlock()
	return true
}

func (r *runner) work() {
	defer r.srv.handlers.Done()
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.running = false
			r.queue = nil
			r.mu.Unlock()
			return
		}
		t := r.queue[0]
		r.queue[0] = task{}
		r.queue = r.queue[1:]
		r.bytes -= t.size
		if r.space != nil {
			close(r.space)
			r.space = nil
		}
		r.mu.Unlock()
		r.call(t.f)
	}
}

// fullLocked reports whether a task of size bytes must wait.
func (r *runner) fullLocked(size int) bool {
	if len(r.queue) >= r.srv.opts.EventQueueSize {
		return true
	}
	limit := r.srv.opts.EventQueueBytes
	return limit > 0 && len(r.queue) > 0 && r.bytes+size > limit
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
