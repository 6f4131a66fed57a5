package bus

import (
	"bytes"
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

// stream is what a receiver knows of one sequence space.
type stream struct {
	// hwm is the highest seq delivered, or accounted for as lost (a gap), when
	// known; before, the next data envelope or announcement sets the baseline.
	hwm   uint64
	known bool
	// provisional: the baseline was taken from the first data envelope
	// (seq base+1) or announcement (last base) seen, not known to be the
	// start of the stream; an announcement that carries the time of the
	// stream's first message settles it (receiver.probe).
	provisional bool
	base        uint64
	// announced is the highest last seq announced by the origin's probes.
	announced uint64
	inst      *instance
}

// maxInstances bounds the runs of one origin a receiver keeps apart at once; the
// least recently heard is forgotten for a newer one.
const maxInstances = 4

// instance is one run (process start) of another node, or of a process that
// shares this node's id.
type instance struct {
	origin string
	id     uint64
	// last is when it was last heard (wall clock, for Status.Nodes); lastConn the
	// connected time of this bus then (for silence, which counts only time the
	// bus was connected).
	last     time.Time
	lastConn time.Duration
	// probed: it sends probes, so silence means it stopped.
	probed bool
	// promise is until when (this node's clock) it promised to announce every
	// round (probeLive): silence while the promise holds means it stopped too.
	// promises: it sent such a promise once, so it keeps one after each write.
	promise  time.Time
	promises bool
	// closed: it published its final announcement (it closed its bus).
	closed bool
	// gone: reported as stopped (reason goneReason), until it is heard again.
	gone       bool
	goneReason string
	partitions []int // of its streams
}

// origin is every run of one node id that a receiver keeps.
type originRuns struct {
	runs []*instance // at most maxInstances
}

// Reasons of durasock_bus_nodes_gone_total.
const (
	goneSilent   = "silent"   // no frame within the liveness window
	goneReplaced = "replaced" // silent, and a newer run of the same id speaks
	goneClosed   = "closed"   // silent after its final announcement (Close)
)

// receiver keeps the high-water marks: per stream the highest seq delivered.
type receiver struct {
	r       *Reliable
	once    sync.Once
	handler Handler
	started chan struct{} // closed by the first Receive

	// progress counts frames delivered by the transport, for the prober, and
	// partProgress those of each partition of the reliable plane;
	// subscriptions counts the Subscribe calls that ended, subscribes those
	// that started.
	progress      atomic.Uint64
	partProgress  []atomic.Uint64
	subscriptions atomic.Uint64
	subscribes    atomic.Uint64
	// handling is set while the handler runs, for the prober: a handler that
	// waits (a cluster node pacing a backlog to a slow client) holds up the
	// transport, which is then behind, not dead.
	handling atomic.Bool

	mu       sync.Mutex
	streams  map[streamKey]*stream
	nodes    map[string]*originRuns
	lastPrun time.Duration // connected time of the last prune

	// rebuild is set by the prober before it cancels the subscription.
	rebuild   atomic.Bool
	subMu     sync.Mutex
	subCancel context.CancelFunc

	names       map[string]string // interned origins, owned by the receive goroutine
	decodeLog   rateLimit
	conflictLog rateLimit
	peerLog     rateLimit

	// conflictAt is when (Unix nanoseconds) a frame of another process with this
	// node's id was last received; conflictInstance is that process's instance.
	conflictAt       atomic.Int64
	conflictInstance atomic.Uint64

	// readingSince is a time (Unix nanoseconds) after the start of what
	// this node reads was fixed: MarkStart returned, or the first frame of
	// the reliable plane arrived. Every entry written later to a partition
	// it reads is delivered or reported lost (a transport that keeps a log
	// resumes where it stopped). 0: not reading yet.
	readingSince atomic.Int64
	// forgotAt is when (Unix nanoseconds) the receiver last forgot a run
	// (prune, maxInstances): a stream heard again after that may have been
	// delivered before. Guarded by mu.
	forgotAt int64
}

// baselineSkew is the margin of the baseline rule for clock differences
// between nodes: a receiver takes seq 0 as the baseline of a stream whose
// first message was published at first (the writer's clock) only when it
// has been reading since before first minus baselineSkew (its own clock).
// Clocks further apart than that make a receiver whose clock is behind
// report as lost messages written before it started reading, and one whose
// clock is ahead not report the loss of the first messages.
const baselineSkew = time.Second

// noteReading records that this node reads the reliable plane from now on
// (the first call counts).
func (rv *receiver) noteReading(now time.Time) {
	if rv.readingSince.Load() == 0 {
		rv.readingSince.CompareAndSwap(0, now.UnixNano())
	}
}

// readFromBeforeLocked reports whether this node has been reading, without
// forgetting any run, since before first minus baselineSkew: every entry a
// writer wrote after first to a partition this node reads reached it or is
// reported lost.
func (rv *receiver) readFromBeforeLocked(first int64) bool {
	since := rv.readingSince.Load()
	if since == 0 {
		return false
	}
	since = max(since, rv.forgotAt)
	return since < first-baselineSkew.Nanoseconds()
}

func (rv *receiver) init(r *Reliable) {
	rv.r = r
	rv.started = make(chan struct{})
	rv.streams = make(map[streamKey]*stream)
	rv.nodes = make(map[string]*originRuns)
	rv.names = make(map[string]string)
	rv.partProgress = make([]atomic.Uint64, r.partitions)
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
		rv.subscribes.Add(1)
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
		rv.subscriptions.Add(1)
		cancel()
		if ctx.Err() != nil {
			return
		}
		// A subscription that failed, or that the prober found dead, may be
		// to a broker that restarted or failed over and lost writes.
		r.connectionBroke()
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
			r.recv.noteReading(time.Now())
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
	r.deliverFrame(f)
	if f.Partition >= 0 && f.ID != "" {
		r.pos.set(f.Partition, f.ID) // after the handler: see Position
	}
}

func (r *Reliable) deliverFrame(f Frame) {
	rv := &r.recv
	rv.progress.Add(1)
	if f.Partition >= 0 && f.Partition < len(rv.partProgress) {
		rv.partProgress[f.Partition].Add(1)
		rv.noteReading(time.Now())
	}
	r.sm.ok(compSubscribe)
	if len(f.Data) > len(r.prefix) && bytes.HasPrefix(f.Data, r.prefix) {
		// This run's own data frame, read back from the shared log: it was
		// applied locally at Publish. Skipped before decoding.
		return
	}
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
		if e.Instance == r.instance {
			if e.Kind == kindProbe {
				r.probes.ack(e.Seq, e.Partition)
			}
			return
		}
		if r.ownInstances[e.Instance] {
			return // an earlier run's message, published again from the disk outbox
		}
		if e.Time < r.startNanos {
			// Written before this process started: the history of an earlier run
			// of this node, not a live conflict. This node applied it then.
			return
		}
		// Another process uses this node's id. Its reliable-plane messages are
		// real events for this node's clients: they are delivered like another
		// node's. Its direct messages (requests, replies, heartbeats) are not: no
		// reply could be addressed to it.
		r.nodeIDConflict(&e)
		if e.Kind == kindDirect {
			return
		}
	}
	switch e.Kind {
	case kindProbe:
		rv.probe(r, &e)
	case kindDirect:
		rv.touch(r, e.Origin, e.Instance, time.Now())
		r.c.received.Add(1)
		r.handle(Message{Origin: e.Origin, Payload: e.Payload, Instance: e.Instance})
	case kindData:
		if !rv.accept(r, &e) {
			return
		}
		r.c.received.Add(1)
		r.handle(Message{Origin: e.Origin, Seq: e.Seq, Partition: e.Partition, Payload: e.Payload, ID: f.ID, Instance: e.Instance})
	}
}

// nodeIDConflict counts and logs (at most once a minute) a frame of another
// process that uses this node's id, and marks the conflict for Status.
func (r *Reliable) nodeIDConflict(e *envelope) {
	now := time.Now()
	r.c.nodeIDConflicts.Add(1)
	r.recv.conflictAt.Store(now.UnixNano())
	r.recv.conflictInstance.Store(e.Instance)
	if ok, suppressed := r.recv.conflictLog.allow(now, time.Minute); ok {
		r.log.Error("bus: another process uses this node id; node ids must be unique among running processes "+
			"(its broadcasts are delivered here as another node's, its requests and replies are dropped)",
			"instance", r.instance, "other_instance", e.Instance, "kind", e.Kind.String(), "suppressed_since_last", suppressed)
	}
}

// conflictWindow is how long after the last frame of another process with this
// node's id Status.NodeIDConflict stays set.
const conflictWindow = time.Minute

// nodeIDConflictNow reports whether another process used this node's id within
// conflictWindow, and its instance.
func (rv *receiver) nodeIDConflictNow(now time.Time) (bool, uint64) {
	at := rv.conflictAt.Load()
	if at == 0 || now.Sub(time.Unix(0, at)) > conflictWindow {
		return false, 0
	}
	return true, rv.conflictInstance.Load()
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
	if s, ok := rv.names[string(b)]; ok {
		return s
	}
	if len(rv.names) >= maxInterned {
		clear(rv.names) // many short-lived origins: start over
	}
	s := string(b)
	rv.names[s] = s
	return s
}

// maxInterned bounds the origin strings a receiver keeps.
const maxInterned = 4096

// accept applies the high-water mark of e's stream: false for a duplicate; a gap is
// counted, logged and reported, and the message is delivered.
func (rv *receiver) accept(r *Reliable, e *envelope) bool {
	k := streamKey{origin: e.Origin, instance: e.Instance, partition: e.Partition}
	now := time.Now()
	var gone []goneReport
	rv.mu.Lock()
	st := rv.streamLocked(r, k, now, &gone)
	hwm, known := st.hwm, st.known
	if known && e.Seq <= hwm {
		rv.mu.Unlock()
		r.reportGone(gone)
		r.c.duplicates.Add(1)
		return false
	}
	st.hwm, st.known = e.Seq, true
	if st.inst.promises {
		// A writer that promises announces after each write every round for
		// liveFor, at least two liveness windows (writtenAnnouncements): a
		// crash right after this write, before its next announcement, is
		// reported too. A writer never heard promising (probes disabled, or
		// none of its announcements reached this node yet) gets no promise.
		if u := now.Add(2 * r.livenessWindow()); u.After(st.inst.promise) {
			st.inst.promise = u
		}
	}
	if !known && e.Seq > 1 {
		// Messages 1..Seq-1 were lost, or written before this node read
		// the partition: an announcement with the stream's first time tells.
		st.provisional, st.base = true, e.Seq-1
	}
	rv.mu.Unlock()
	r.reportGone(gone)
	if known && e.Seq > hwm+1 {
		r.reportGap(Gap{Origin: e.Origin, Partition: e.Partition, After: hwm, Next: e.Seq, Missing: e.Seq - hwm - 1})
	}
	return true
}

// probe applies a probe of another process: it is alive, and (when the probe
// announces one) every seq of its partition up to the announced last was
// published before the probe. A high-water mark below last means the broker lost
// the rest: it is reported as a tail gap at once, and the mark is raised, so that
// a frame that still arrives is a duplicate. The first announcement of a stream
// sets its baseline, like a first data envelope, except under the baseline
// rule (an announcement with the time of the stream's first message, which
// this node has been reading since before: the baseline is 0).
func (rv *receiver) probe(r *Reliable, e *envelope) {
	now := time.Now()
	last, announces := e.probeLast()
	var gone []goneReport
	var gap Gap
	rv.mu.Lock()
	// Round 0 is an announcement of a node that does not receive: it comes only
	// when something changed, so its absence says nothing about liveness.
	probed := e.Seq != 0
	final := e.Seq == finalRound
	if !announces {
		inst := rv.instanceLocked(r, e.Origin, e.Instance, now, &gone)
		inst.probed = inst.probed || probed
		rv.mu.Unlock()
		r.reportGone(gone)
		return
	}
	st := rv.streamLocked(r, streamKey{origin: e.Origin, instance: e.Instance, partition: e.Partition}, now, &gone)
	st.inst.probed = st.inst.probed || probed
	st.inst.closed = st.inst.closed || final
	if live := e.probeLive(); live > 0 {
		st.inst.promises = true
		if u := now.Add(live); u.After(st.inst.promise) {
			st.inst.promise = u
		}
	}
	st.announced = max(st.announced, last)
	// The baseline rule: an announcement that carries the time of the
	// stream's first message (inbox partitions) tells a receiver that has
	// been reading since before it that the stream starts at seq 1, so that
	// the loss of its first messages is reported, not taken as a baseline.
	first, hasFirst := e.probeFirst()
	fromStart := hasFirst && rv.readFromBeforeLocked(first)
	var head Gap
	switch {
	case !st.known && fromStart:
		st.hwm, st.known = 0, true
	case !st.known:
		st.hwm, st.known = last, true
		st.provisional, st.base = !hasFirst && last > 0, last
	case st.provisional && hasFirst:
		st.provisional = false
		if fromStart {
			head = Gap{Origin: e.Origin, Partition: e.Partition, After: 0, Next: st.base + 1, Missing: st.base}
		}
	}
	if last > st.hwm {
		gap = Gap{Origin: e.Origin, Partition: e.Partition, After: st.hwm, Next: last + 1, Missing: last - st.hwm, Tail: true}
		st.hwm = last
	}
	rv.mu.Unlock()
	r.reportGone(gone)
	if head.Missing > 0 {
		r.reportGap(head)
	}
	if gap.Missing > 0 {
		r.reportGap(gap)
	}
}

// reportGap counts, logs and hands to OnGap the messages of g.
func (r *Reliable) reportGap(g Gap) {
	r.c.gaps.Add(1)
	r.c.gapMessages.Add(g.Missing)
	if g.Tail {
		r.c.tailGaps.Add(1)
		r.log.Warn("bus lost the last messages of another node: its probe announced more than arrived", "origin", g.Origin,
			"partition", g.Partition, "received_through", g.After, "announced_through", g.Next-1, "missing", g.Missing)
	} else {
		r.log.Warn("bus sequence gap: messages of another node were lost", "origin", g.Origin,
			"partition", g.Partition, "after", g.After, "next", g.Next, "missing", g.Missing)
	}
	if r.cfg.OnGap != nil {
		r.cfg.OnGap(g)
	}
}

// streamLocked returns the stream of k, creating it (and its instance) if new,
// and records that its instance was heard at now.
func (rv *receiver) streamLocked(r *Reliable, k streamKey, now time.Time, gone *[]goneReport) *stream {
	st := rv.streams[k]
	if st == nil {
		inst := rv.instanceLocked(r, k.origin, k.instance, now, gone)
		st = &stream{inst: inst}
		rv.streams[k] = st
		inst.partitions = append(inst.partitions, k.partition)
		return st
	}
	rv.heardLocked(r, st.inst, now)
	return st
}

// instanceLocked returns the run instance of origin, creating it if new (and
// forgetting the least recently heard run beyond maxInstances), and records that
// it was heard at now. Other runs of the origin are kept: two runs whose frames
// interleave (a lagging reader during a restart, two processes with one id)
// neither duplicate nor hide a gap.
func (rv *receiver) instanceLocked(r *Reliable, origin string, id uint64, now time.Time, gone *[]goneReport) *instance {
	o := rv.nodes[origin]
	if o == nil {
		o = &originRuns{}
		rv.nodes[origin] = o
	}
	for _, inst := range o.runs {
		if inst.id == id {
			rv.heardLocked(r, inst, now)
			return inst
		}
	}
	if len(o.runs) >= maxInstances {
		oldest := 0
		for i, inst := range o.runs {
			if inst.last.Before(o.runs[oldest].last) {
				oldest = i
			}
		}
		old := o.runs[oldest]
		if !old.gone {
			*gone = append(*gone, rv.goneLocked(old, goneReplaced))
		}
		rv.forgetLocked(old)
		o.runs = slices.Delete(o.runs, oldest, oldest+1)
	}
	inst := &instance{origin: origin, id: id, last: now, lastConn: r.sm.connectedTime(now)}
	o.runs = append(o.runs, inst)
	return inst
}

// heardLocked records that inst was heard at now. A run reported as replaced
// that speaks again shares its id with a live newer run: an error of the
// cluster's configuration, logged (at most once a minute) and counted.
func (rv *receiver) heardLocked(r *Reliable, inst *instance, now time.Time) {
	inst.last = now
	inst.lastConn = r.sm.connectedTime(now)
	if !inst.gone {
		return
	}
	inst.gone = false
	if inst.goneReason == goneReplaced {
		r.c.peerIDConflicts.Add(1)
		if ok, suppressed := rv.peerLog.allow(now, time.Minute); ok {
			r.log.Error("bus: two running processes use one node id; node ids must be unique among running processes",
				"origin", inst.origin, "instance", inst.id, "suppressed_since_last", suppressed)
		}
	} else {
		r.log.Info("bus: a node reported gone is heard again", "origin", inst.origin, "instance", inst.id)
	}
}

// forgetLocked drops the streams of inst.
func (rv *receiver) forgetLocked(inst *instance) {
	rv.forgotAt = time.Now().UnixNano()
	for _, p := range inst.partitions {
		delete(rv.streams, streamKey{origin: inst.origin, instance: inst.id, partition: p})
	}
}

// goneReport is what a receiver knows of a run that stopped.
type goneReport struct {
	origin   string
	instance uint64
	reason   string
	silent   time.Duration
	// received and announced are, per partition, the last seq received (or
	// accounted for as lost) and the last seq announced by its probes.
	partitions          []int
	received, announced []uint64
}

// goneLocked marks inst gone for reason and returns its report.
func (rv *receiver) goneLocked(inst *instance, reason string) goneReport {
	inst.gone, inst.goneReason = true, reason
	g := goneReport{origin: inst.origin, instance: inst.id, reason: reason}
	ps := slices.Clone(inst.partitions)
	slices.Sort(ps)
	for _, p := range ps {
		st := rv.streams[streamKey{origin: inst.origin, instance: inst.id, partition: p}]
		if st == nil {
			continue
		}
		g.partitions = append(g.partitions, p)
		g.received = append(g.received, st.hwm)
		g.announced = append(g.announced, st.announced)
	}
	return g
}

// reportGone logs and counts the runs in gone.
func (r *Reliable) reportGone(gone []goneReport) {
	for _, g := range gone {
		switch g.reason {
		case goneClosed:
			r.c.goneClosed.Add(1)
			r.log.Info("bus: a node closed", "origin", g.origin, "instance", g.instance,
				"partitions", g.partitions, "last_received", g.received, "last_announced", g.announced)
			continue
		case goneReplaced:
			r.c.goneReplaced.Add(1)
		default:
			r.c.goneSilent.Add(1)
		}
		// Every announced seq above the received one was reported as a tail gap
		// when the probe arrived; what the node published after its last probe is
		// unknown.
		r.log.Warn("bus: a node stopped; what it published after its last probe is unknown",
			"origin", g.origin, "instance", g.instance, "reason", g.reason, "silent_for", g.silent.Round(time.Millisecond),
			"partitions", g.partitions, "last_received", g.received, "last_announced", g.announced)
	}
}

// touch records that a run of origin is alive.
func (rv *receiver) touch(r *Reliable, origin string, id uint64, now time.Time) {
	var gone []goneReport
	rv.mu.Lock()
	rv.instanceLocked(r, origin, id, now, &gone)
	rv.mu.Unlock()
	r.reportGone(gone)
}

// checkGone reports the runs that sent probes, or promised to announce every
// round for at least window past the last frame heard (probeLive), and then
// nothing for longer than window of connected time (reason silent), and the runs silent that long while a
// newer run of their id speaks (reason replaced, also for runs without probes).
// The prober calls it only after its own probe round came back, so that this
// node's subscription is current and a backlog cannot make a node look silent.
func (rv *receiver) checkGone(r *Reliable, now time.Time, window time.Duration) []goneReport {
	conn := r.sm.connectedTime(now)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []goneReport
	for _, o := range rv.nodes {
		for _, inst := range o.runs {
			silent := min(now.Sub(inst.last), conn-inst.lastConn)
			if inst.gone || silent <= window {
				continue
			}
			reason := goneSilent
			for _, other := range o.runs {
				if other.last.After(inst.last) {
					reason = goneReplaced
				}
			}
			if inst.closed {
				reason = goneClosed
			}
			if reason == goneSilent && !inst.probed && inst.last.Add(window).After(inst.promise) {
				// A quiet publisher without probes, or one whose every-round
				// announcements could end within the window: silence says
				// nothing.
				continue
			}
			g := rv.goneLocked(inst, reason)
			g.silent = silent
			out = append(out, g)
		}
	}
	return out
}

// prune forgets the runs not heard from for idle of connected time, so that
// restarts with fresh node ids do not grow the maps forever. It does nothing
// while the bus is not Connected: an outage of this node's link silences every
// other node, and forgetting them would turn what they dropped meanwhile into a
// new baseline instead of a reported gap. A forgotten run that speaks again sets
// a new baseline.
func (rv *receiver) prune(r *Reliable, now time.Time, idle time.Duration) {
	if r.sm.current() != Connected {
		return
	}
	conn := r.sm.connectedTime(now)
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if conn-rv.lastPrun < idle/10 {
		return
	}
	rv.lastPrun = conn
	for origin, o := range rv.nodes {
		o.runs = slices.DeleteFunc(o.runs, func(inst *instance) bool {
			if conn-inst.lastConn < idle {
				return false
			}
			rv.forgetLocked(inst)
			return true
		})
		if len(o.runs) == 0 {
			delete(rv.nodes, origin)
		}
	}
}

// aliveNodes returns the other nodes heard from within window, sorted (not
// this node's id, also when another process uses it: Status.NodeIDConflict says
// that).
func (rv *receiver) aliveNodes(now time.Time, window time.Duration) []string {
	rv.mu.Lock()
	defer rv.mu.Unlock()
	var out []string
	for origin, o := range rv.nodes {
		if origin == rv.r.nodeID {
			continue
		}
		for _, inst := range o.runs {
			if now.Sub(inst.last) <= window {
				out = append(out, origin)
				break
			}
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
