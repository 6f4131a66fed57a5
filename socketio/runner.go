package socketio

import (
	"fmt"
	"runtime/debug"
	"sync"
)

// runner runs handler calls one after the other, on a goroutine that exists
// only while there is work: a connection has one per namespace, so that the
// handlers of one namespace run in order and a slow one does not hold up the
// others. The bounded tasks (incoming packets) of all the runners of a
// connection share one budget: the reader waits for room, which slows a
// client that sends faster than its handlers run instead of growing memory.
type runner struct {
	srv     *Server
	nsp     string  // the namespace whose handlers it runs (connection runners)
	budget  *budget // shared by the runners of a connection; nil: one of its own
	mu      sync.Mutex
	queue   []task
	running bool
}

// budget bounds the queued incoming packets of a connection: at most
// EventQueueSize of them and EventQueueBytes bytes (a packet larger than
// that is taken when nothing else waits).
type budget struct {
	mu    sync.Mutex
	tasks int
	bytes int
	space chan struct{} // closed when a waiting producer may retry
}

// task is a queued call and the bytes of the packet it holds; counted tasks
// are in the budget.
type task struct {
	f       func()
	size    int
	counted bool
}

// ender is what a bounded push waits on: the connection's transport. Its Done
// channel is asked for only when the push has to wait, so that a session
// whose client never fills the budget never makes one.
type ender interface{ Done() <-chan struct{} }

// push queues f, which holds size bytes of an incoming packet. A bounded push
// waits while the budget is full, until end is done; it reports whether f was
// queued.
func (r *runner) push(end ender, bounded bool, size int, f func()) bool {
	if bounded {
		b := r.budget
		if b == nil {
			b = r.ownBudget()
		}
		if !b.take(r.srv, end, size) {
			return false
		}
	}
	r.mu.Lock()
	r.queue = append(r.queue, task{f: f, size: size, counted: bounded})
	if !r.running {
		r.running = true
		r.srv.handlers.Add()
		go r.work()
	}
	r.mu.Unlock()
	return true
}

// ownBudget gives a runner that belongs to no connection a budget of its own.
func (r *runner) ownBudget() *budget {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.budget == nil {
		r.budget = new(budget)
	}
	return r.budget
}

// take waits for room for a task of size bytes and counts it.
func (b *budget) take(srv *Server, end ender, size int) bool {
	b.mu.Lock()
	var done <-chan struct{}
	for b.fullLocked(srv, size) {
		if done == nil {
			b.mu.Unlock()
			done = end.Done()
			b.mu.Lock()
			continue // the budget may have room by now
		}
		if b.space == nil {
			b.space = make(chan struct{})
		}
		space := b.space
		b.mu.Unlock()
		select {
		case <-space:
		case <-done:
			return false
		}
		b.mu.Lock()
	}
	b.tasks++
	b.bytes += size
	b.mu.Unlock()
	return true
}

// release uncounts a task that is about to run.
func (b *budget) release(size int) {
	b.mu.Lock()
	b.tasks--
	b.bytes -= size
	if b.space != nil {
		close(b.space)
		b.space = nil
	}
	b.mu.Unlock()
}

// fullLocked reports whether a task of size bytes must wait.
func (b *budget) fullLocked(srv *Server, size int) bool {
	if b.tasks >= srv.opts.EventQueueSize {
		return true
	}
	limit := srv.opts.EventQueueBytes
	return limit > 0 && b.tasks > 0 && b.bytes+size > limit
}

// idle reports whether the runner has nothing to run.
func (r *runner) idle() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.running && len(r.queue) == 0
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
		b := r.budget
		r.mu.Unlock()
		if t.counted {
			b.release(t.size)
		}
		r.call(t.f)
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
