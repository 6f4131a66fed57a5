package bus

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// errSubscriptionEnded is the failure recorded when a Subscribe call returns nil
// although nobody asked it to stop.
var errSubscriptionEnded = errors.New("bus: subscription ended")

// subscribeSettle is how long a Subscribe call must run without error to count
// as established when probes are disabled.
const subscribeSettle = time.Second

// streamKey identifies one sequence space: one run of one origin on one partition.
type streamKey struct {
	origin    string
	instance  uint64
	partition int
}

// nodeSeen is what a receiver knows about another node.
type nodeSeen struct {
	instance uint64
	last     time.Time
}

// receiver keeps the high-water marks: per stream the highest seq delivered.
type receiver struct {
	r       *Reliable
	once    sync.Once
	handler Handler
	started chan struct{} // closed by the first Receive

	// progress counts frames delivered by the transport, for the prober.
	progress atomic.Uint64
	// handling is set while the handler runs, for the prober: a handler that
	// waits (a cluster node pacing a backlog to a slow client) holds up the
	// transport, which is then behind, not dead.
	handling atomic.Bool

	mu       sync.Mutex
	hwm      map[streamKey]uint64
	seen     map[string]nodeSeen
	lastPrun time.Time

	// rebuild is set by the prober before it cancels the subscription.
	rebuild   atomic.Bool
	subMu     sync.Mutex
	subCancel context.CancelFunc

	origins     map[string]string // owned by the receive goroutine
	decodeLog   rateLimit
	conflictLog rateLimit
}

func (rv *receiver) init(r *Reliable) {
	rv.r = r
	rv.started = make(chan struct{})
	rv.hwm = make(map[streamKey]uint64)
	rv.seen = make(map[string]nodeSeen)
	rv.origins = make(map[string]string)
}

func (rv *receiver) start(h Handler, log *slog.Logger) {
	first := false
	rv.once.Do(func() {
		rv.handler = h
		first = true
		close(rv.started)
	})
	if !first {
		log.Error("bus: Receive called again; the first handler stays")
	}
}

func (rv *receiver) receiving() bool {
	select {
	case <-rv.started:
		return true
	default:
		return false
	}
}

// rebuildSubscription ends the current Subscribe call; recvLoop starts a new one
// at once.
// It reports false when no subscription is running (the receiver is waiting to
// retry after an error).
func (rv *receiver) rebuildSubscription() bool {
	rv.subMu.Lock()
	defer rv.subMu.Unlock()
	if rv.subCancel == nil {
		return false
	}
	rv.rebuild.Store(true)
	rv.subCancel()
	return true
}

// recvLoop runs Transport.Subscribe from the first Receive until ctx is done,
// again after every failure (with backoff) or probe-requested rebuild (at once).
func (r *Reliable) recvLoop(ctx context.Context) {
	defer r.background.Done()
	rv := &r.recv
	if m, ok := r.t.(StartMarker); ok && !r.markStart(ctx, m) {
		return
	}
	select {
	case <-ctx.Done():
		return
	case <-rv.started:
	}
	attempt := 0
	for {
		back := r.recovered.wait()
		subCtx, cancel := context.WithCancel(ctx)
		rv.subMu.Lock()
		rv.subCancel = cancel
		rv.subMu.Unlock()
		before := rv.progress.Load()
		var established *time.Timer
		if r.cfg.ProbeInterval < 0 {
			// Without probes, a subscription that has not failed for a while counts
			// as established even when no frame arrived.
			established = time.AfterFunc(subscribeSettle, func() {
				// Under subMu, so that it cannot land after the loop recorded the
				// end of this subscription.
				rv.subMu.Lock()
				defer rv.subMu.Unlock()
				if rv.subCancel != nil && subCtx.Err() == nil {
					r.sm.ok(compSubscribe)
				}
			})
		}
		err := r.t.Subscribe(subCtx, r.nodeID, r.deliver)
		if established != nil {
			established.Stop()
		}
		rv.subMu.Lock()
		rv.subCancel = nil
		rv.subMu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return
		}
		if rv.rebuild.Swap(false) {
			r.c.reconnects.Add(1)
			continue
		}
		if rv.progress.Load() > before {
			attempt = 0 // it worked for a while: start the backoff over
		}
		if err == nil {
			err = errSubscriptionEnded
		}
		attempt++
		d := r.bo.delay(attempt)
		r.sm.fail(compSubscribe, err, attempt, d)
		if !r.retryWait(ctx, d, back, 0, nil, nil) {
			return
		}
		r.c.reconnects.Add(1)
	}
}

// markStart fixes the start of the reliable plane at New, so that what other
// nodes publish between New and Receive is delivered. While the broker is
// unreachable it retries with backoff (a broker return ends the wait), and it
// stops trying once Receive was called: the first Subscribe fixes the start
// then. A failure here changes no state (the prober reports an unreachable
// broker; Subscribe reports any other error). It reports whether ctx is live.
func (r *Reliable) markStart(ctx context.Context, m StartMarker) bool {
	for attempt := 1; ; attempt++ {
		back := r.recovered.wait()
		mctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
		err := m.MarkStart(mctx)
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		d := r.bo.delay(attempt)
		r.log.Debug("bus: fixing the start position failed", "attempt", attempt, "next_retry", d, "error", err)
		if !r.retryWait(ctx, d, back, 0, r.recv.started, nil) {
			return false
		}
		if r.recv.receiving() {
			return true
		}
	}
}

// deliver handles one frame from the transport. Transport calls are sequential.
func (r *Reliable) deliver(f Frame) {
	rv := &r.recv
	rv.progress.Add(1)
	r.sm.ok(compSubscribe)
	e, err := decodeEnvelope(f.Data, rv.intern)
	if err != nil {
		r.c.decodeErrors.Add(1)
		if ok, suppressed := rv.decodeLog.allow(time.Now(), 10*time.Second); ok {
			r.log.Warn("bus dropped an undecodable frame", "error", err, "partition", f.Partition,
				"bytes", len(f.Data), "suppressed_since_last", suppressed)
		}
		return
	}
	if e.Origin == r.nodeID {
		if e.Instance != r.instance {
			if ok, _ := rv.conflictLog.allow(time.Now(), time.Minute); ok && e.Kind == KindProbe {
				r.log.Error("bus: another process uses this node id; node ids must be unique", "other_instance", e.Instance)
			}
			return
		}
		if e.Kind == KindProbe {
			r.probes.ack(e.Seq, e.Partition)
		}
		return
	}
	switch e.Kind {
	case KindProbe:
		rv.touch(e.Origin, e.Instance, time.Now())
	case KindDirect:
		rv.touch(e.Origin, e.Instance, time.Now())
		r.c.received.Add(1)
		r.handle(Message{Origin: e.Origin, Payload: e.Payload})
	case KindData:
		if !rv.accept(r, &e) {
			return
		}
		r.c.received.Add(1)
		r.handle(Message{Origin: e.Origin, Seq: e.Seq, Partition: e.Partition, Payload: e.Payload})
	}
}

// handle calls the handler. A panic in it is recovered, logged with its stack
// and counted, so that one bad message cannot stop a node's cluster traffic.
func (r *Reliable) handle(m Message) {
	defer func() {
		if p := recover(); p != nil {
			r.c.handlerPanics.Add(1)
			r.log.Error("bus handler panicked; message skipped", "origin", m.Origin, "seq", m.Seq,
				"partition", m.Partition, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	r.recv.handling.Store(true)
	defer r.recv.handling.Store(false)
	r.recv.handler(m)
}

// intern returns the origin as a string, allocating only for a new origin. Only
// the receive goroutine calls it.
func (rv *receiver) intern(b []byte) string {
	if s, ok := rv.origins[string(b)]; ok {
		return s
	}
	if len(rv.origins) >= maxInterned {
		clear(rv.origins) // many short-lived origins: start over
	}
	s := string(b)
	rv.origins[s] = s
	return s
}

// maxInterned bounds the origin strings a receiver keeps.
const maxInterned = 4096

// accept applies the high-water mark of e's stream: false for a duplicate; a gap is
// counted, logged and reported, and the message is delivered.
func (rv *receiver) accept(r *Reliable, e *Envelope) bool {
	k := streamKey{origin: e.Origin, instance: e.Instance, partition: e.Partition}
	now := time.Now()
	rv.mu.Lock()
	rv.touchLocked(e.Origin, e.Instance, now)
	hwm, known := rv.hwm[k]
	if known && e.Seq <= hwm {
		rv.mu.Unlock()
		r.c.duplicates.Add(1)
		return false
	}
	rv.hwm[k] = e.Seq
	rv.mu.Unlock()
	if known && e.Seq > hwm+1 {
		g := Gap{Origin: e.Origin, Partition: e.Partition, After: hwm, Next: e.Seq, Missing: e.Seq - hwm - 1}
		r.c.gaps.Add(1)
		r.c.gapMessages.Add(g.Missing)
		r.log.Warn("bus sequence gap: messages of another node were lost", "origin", g.Origin,
			"partition", g.Partition, "after", g.After, "next", g.Next, "missing", g.Missing)
		if r.cfg.OnGap != nil {
			r.cfg.OnGap(g)
		}
	}
	return true
}

func (rv *receiver) touch(origin string, instance uint64, now time.Time) {
	rv.mu.Lock()
	rv.touchLocked(origin, instance, now)
	rv.mu.Unlock()
}

// touchLocked records that origin is alive; a new instance of an origin (the node
// restarted with the same id) forgets the streams of the old one.
func (rv *receiver) touchLocked(origin string, instance uint64, now time.Time) {
	s, ok := rv.seen[origin]
	if ok && s.instance != instance {
		for k := range rv.hwm {
			if k.origin == origin && k.instance == s.instance {
				delete(rv.hwm, k)
			}
		}
	}
	rv.seen[origin] = nodeSeen{instance: instance, last: now}
}

// prune forgets nodes not heard from for idle, so that restarts with fresh node
// ids do not grow the maps forever. A forgotten node that speaks again sets a new
// baseline.
func (rv *receiver) prune(now time.Time, idle time.Duration) {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if now.Sub(rv.lastPrun) < idle/10 {
		return
	}
	rv.lastPrun = now
	for origin, s := range rv.seen {
		if now.Sub(s.last) < idle {
			continue
		}
		delete(rv.seen, origin)
		for k := range rv.hwm {
			if k.origin == origin {
				delete(rv.hwm, k)
			}
		}
	}
}

// nodes returns the other nodes heard from within window, sorted.
func (rv *receiver) nodes(now time.Time, window time.Duration) []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []string
	for origin, s := range rv.seen {
		if now.Sub(s.last) <= window {
			out = append(out, origin)
		}
	}
	slices.Sort(out)
	return out
}

// rateLimit lets one event through per interval and counts the others.
type rateLimit struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (l *rateLimit) allow(now time.Time, every time.Duration) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return true, n
}
