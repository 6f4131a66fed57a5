package engineio

import (
	"container/heap"
	"sync"
	"time"
)

// heartbeats runs the heartbeat deadlines of every session of a server on
// one timer: a min-heap of sessions by Session.due, and one time.Timer armed
// for the earliest. A session costs a slot in the heap instead of a timer of
// its own (about 150 bytes, for each of many idle connections).
//
// A session's due is written with both its mu and h.mu held, so the heap
// reads it under h.mu alone. Lock order: Session.mu, then h.mu; fire never
// holds h.mu while it calls into a session.
type heartbeats struct {
	srv   *Server
	mu    sync.Mutex
	q     sessionHeap
	timer *time.Timer   // made by the first arm
	at    time.Duration // when timer fires, on the server's clock, while armed
	armed bool
}

// schedule sets the session's deadline to d from now, when onTimer runs. The
// caller holds s.mu.
func (h *heartbeats) schedule(s *Session, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.due = h.srv.now() + d
	if s.hbPos == 0 {
		heap.Push(&h.q, s)
	} else {
		heap.Fix(&h.q, int(s.hbPos-1))
	}
	h.armLocked()
}

// unschedule forgets the session's deadline.
func (h *heartbeats) unschedule(s *Session) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.hbPos != 0 {
		heap.Remove(&h.q, int(s.hbPos-1))
	}
}

// armLocked arms the timer for the earliest deadline, unless it fires
// before that already; firing early is harmless (see fire).
func (h *heartbeats) armLocked() {
	if len(h.q) == 0 {
		return
	}
	due := h.q[0].due
	if h.armed && h.at <= due {
		return
	}
	h.armed, h.at = true, due
	d := max(due-h.srv.now(), 0)
	if h.timer == nil {
		h.timer = time.AfterFunc(d, h.fire)
		return
	}
	h.timer.Reset(d)
}

// fire runs the deadlines that are due, each on a goroutine of its own as a
// timer of the session's own would (onTimer may close the session, and
// OnClose is the application's code), and arms the timer for the next.
func (h *heartbeats) fire() {
	h.mu.Lock()
	h.armed = false
	now := h.srv.now()
	var due []*Session
	for len(h.q) > 0 && h.q[0].due <= now {
		due = append(due, heap.Pop(&h.q).(*Session))
	}
	h.armLocked()
	h.mu.Unlock()
	for _, s := range due {
		go s.onTimer()
	}
}

// sessionHeap orders sessions by due; Session.hbPos is the index + 1 of a
// session in it, 0 when it is not in it.
type sessionHeap []*Session

func (q sessionHeap) Len() int           { return len(q) }
func (q sessionHeap) Less(i, j int) bool { return q[i].due < q[j].due }
func (q sessionHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].hbPos = int32(i + 1)
	q[j].hbPos = int32(j + 1)
}

func (q *sessionHeap) Push(x any) {
	s := x.(*Session)
	s.hbPos = int32(len(*q) + 1)
	*q = append(*q, s)
}

func (q *sessionHeap) Pop() any {
	old := *q
	n := len(old) - 1
	s := old[n]
	old[n] = nil
	s.hbPos = 0
	*q = old[:n]
	if cap(*q) > 64 && len(*q) < cap(*q)/4 {
		*q = append(sessionHeap(nil), *q...) // give back what a crowd left
	}
	return s
}
