package bus

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// component is a part of the bus that talks to the broker and can fail on its own.
type component int

const (
	compPublish component = iota
	compSubscribe
	compPing
	numComponents
)

func (c component) String() string {
	return [...]string{"publish", "subscribe", "ping"}[c]
}

type health struct {
	failing bool
	attempt int
	next    time.Duration
	err     error
	at      time.Time
}

// stateMachine derives the bus state from the health of its components: Connected
// when none is failing (and the broker answered at least once), Reconnecting when
// one is, Failed when one reached the maximum of attempts, Closed after Close.
type stateMachine struct {
	mu            sync.Mutex
	comps         [numComponents]health
	failing       [numComponents]atomic.Bool // mirrors comps[i].failing for lock-free ok
	connectedOnce atomic.Bool
	closed        bool
	state         State
	since         time.Time
	changed       chan struct{}
	maxAttempts   int
	log           *slog.Logger
	onChange      func(stateSnapshot) // called under mu, must only enqueue
	transitions   atomic.Uint64
	// clock is the connected clock: how long the bus has been Connected in all.
	clock atomic.Pointer[connClock]
}

// connClock is a reading of the connected clock: accum connected time before
// since, and, when running, the time since then on top.
type connClock struct {
	accum   time.Duration
	since   time.Time
	running bool
}

// at returns the connected time up to now.
func (c *connClock) at(now time.Time) time.Duration {
	if !c.running {
		return c.accum
	}
	return c.accum + max(0, now.Sub(c.since))
}

// connectedTime returns how long the bus has been Connected since New, in all.
// Receivers measure the silence of other nodes with it, so that an outage of
// this node's own link makes no other node look silent.
func (sm *stateMachine) connectedTime(now time.Time) time.Duration {
	return sm.clock.Load().at(now)
}

// stateSnapshot is the state part of a Status.
type stateSnapshot struct {
	State     State
	Since     time.Time
	Attempt   int
	NextRetry time.Duration
	LastError string
}

func newStateMachine(initial State, maxAttempts int, log *slog.Logger, onChange func(stateSnapshot)) *stateMachine {
	sm := &stateMachine{
		state:       initial,
		since:       time.Now(),
		changed:     make(chan struct{}),
		maxAttempts: maxAttempts,
		log:         log,
		onChange:    onChange,
	}
	if initial == Connected {
		sm.connectedOnce.Store(true)
	}
	sm.clock.Store(&connClock{since: sm.since, running: initial == Connected})
	return sm
}

// ok records a success of c.
func (sm *stateMachine) ok(c component) {
	if !sm.failing[c].Load() && sm.connectedOnce.Load() {
		return
	}
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.connectedOnce.Store(true)
	sm.comps[c] = health{}
	sm.failing[c].Store(false)
	sm.recomputeLocked()
}

// fail records the attempt-th consecutive failure of c, retried after next.
func (sm *stateMachine) fail(c component, err error, attempt int, next time.Duration) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.comps[c] = health{failing: true, attempt: attempt, next: next, err: err, at: time.Now()}
	sm.failing[c].Store(true)
	sm.log.Debug("bus attempt failed", "component", c.String(), "attempt", attempt, "next_retry", next, "error", err)
	sm.recomputeLocked()
}

func (sm *stateMachine) close() {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	sm.closed = true
	sm.recomputeLocked()
}

// worstLocked returns the failing component with the most attempts (the latest
// failure on a tie), or -1.
func (sm *stateMachine) worstLocked() component {
	worst := component(-1)
	for c := range numComponents {
		h := &sm.comps[c]
		if !h.failing {
			continue
		}
		if worst < 0 || h.attempt > sm.comps[worst].attempt ||
			(h.attempt == sm.comps[worst].attempt && h.at.After(sm.comps[worst].at)) {
			worst = c
		}
	}
	return worst
}

func (sm *stateMachine) recomputeLocked() {
	next := Connected
	worst := sm.worstLocked()
	switch {
	case sm.closed:
		next = Closed
	case worst >= 0:
		next = Reconnecting
		if sm.maxAttempts > 0 && sm.comps[worst].attempt >= sm.maxAttempts {
			next = Failed
		}
	case !sm.connectedOnce.Load():
		next = Reconnecting
	}
	if next == sm.state {
		return
	}
	prev, prevSince := sm.state, sm.since
	sm.state = next
	sm.since = time.Now()
	if prev == Connected || next == Connected {
		c := *sm.clock.Load()
		c.accum = c.at(sm.since)
		c.since, c.running = sm.since, next == Connected
		sm.clock.Store(&c)
	}
	sm.transitions.Add(1)
	close(sm.changed)
	sm.changed = make(chan struct{})
	snap := sm.snapshotLocked()

	// Exactly one line per transition.
	switch next {
	case Connected:
		sm.log.Info("bus connected", "previous", prev.String(), "down_for", sm.since.Sub(prevSince).Round(time.Millisecond))
	case Reconnecting:
		sm.log.Warn("bus reconnecting", "component", worst.String(), "attempt", snap.Attempt,
			"next_retry", snap.NextRetry, "error", snap.LastError)
	case Failed:
		sm.log.Error("bus failed: reconnect attempts exhausted; still buffering within the outbox bounds and retrying at the backoff cap",
			"component", worst.String(), "attempt", snap.Attempt, "error", snap.LastError)
	case Closed:
		sm.log.Info("bus closed")
	}
	if sm.onChange != nil {
		sm.onChange(snap)
	}
}

func (sm *stateMachine) snapshotLocked() stateSnapshot {
	s := stateSnapshot{State: sm.state, Since: sm.since}
	if w := sm.worstLocked(); w >= 0 && !sm.closed {
		h := &sm.comps[w]
		s.Attempt, s.NextRetry = h.attempt, h.next
		if h.err != nil {
			s.LastError = h.err.Error()
		}
	}
	return s
}

func (sm *stateMachine) snapshot() stateSnapshot {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.snapshotLocked()
}

func (sm *stateMachine) current() State {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.state
}

func (sm *stateMachine) changedChan() <-chan struct{} {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	return sm.changed
}

// notifier calls OnStateChange in transition order on its own goroutine, so that
// a hook may call back into the bus (Status, even Close) without deadlock.
type notifier struct {
	mu      sync.Mutex
	queue   []stateSnapshot
	wake    chan struct{}
	stopped bool
}

func (n *notifier) push(s stateSnapshot) {
	n.mu.Lock()
	if !n.stopped {
		n.queue = append(n.queue, s)
	}
	n.mu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// run calls hook for every queued snapshot until done is closed and the queue is
// empty.
func (n *notifier) run(done <-chan struct{}, hook func(stateSnapshot)) {
	for {
		n.mu.Lock()
		q := n.queue
		n.queue = nil
		n.mu.Unlock()
		for _, s := range q {
			hook(s)
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-n.wake:
		case <-done:
			n.mu.Lock()
			n.stopped = true
			q := n.queue
			n.queue = nil
			n.mu.Unlock()
			for _, s := range q {
				hook(s)
			}
			return
		}
	}
}
