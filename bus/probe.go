package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// errProbeTimeout is the failure recorded when a liveness probe did not come back
// through the node's own subscription in time.
var errProbeTimeout = errors.New("bus: liveness probe not received")

// maxProbeExtensions bounds how often a probe's wait is extended because the
// subscription is busy delivering a backlog or its handler is running (alive,
// just behind): 10 ProbeTimeouts, 30 s by default, well above the 10 s a
// cluster node waits at most for a slow client.
const maxProbeExtensions = 10

// prober tracks the probe round in flight.
type prober struct {
	mu      sync.Mutex
	round   uint64
	pending []bool // per partition: probe not back yet
	left    int
	done    chan struct{}
}

// begin starts round with one probe on each of parts (of partitions) and
// returns the channel closed when all came back.
func (p *prober) begin(round uint64, partitions int, parts []int) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.round = round
	if len(p.pending) != partitions {
		p.pending = make([]bool, partitions)
	}
	clear(p.pending)
	for _, i := range parts {
		p.pending[i] = true
	}
	p.left = len(parts)
	p.done = make(chan struct{})
	if p.left == 0 {
		close(p.done)
	}
	return p.done
}

// ack records a probe of this node that came back.
func (p *prober) ack(round uint64, partition int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if round != p.round || partition < 0 || partition >= len(p.pending) || !p.pending[partition] {
		return // an old round, delivered again after a rebuild
	}
	p.pending[partition] = false
	p.left--
	if p.left == 0 {
		close(p.done)
	}
}

// missing returns the partitions whose probe has not come back.
func (p *prober) missing() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for i, pending := range p.pending {
		if pending {
			out = append(out, i)
		}
	}
	return out
}

// probeLoop checks the broker every ProbeInterval: a Ping, then, once receiving,
// a probe per partition it reads through the reliable plane that must come back through
// this node's own subscription within ProbeTimeout. A missing probe means the
// subscription is silently dead (a half-open connection, a broker that switched
// roles, a client the broker killed): it is rebuilt. Failed pings back off like
// any attempt; while the bus is not Connected, readiness pings run every
// readinessInterval in between (pause), and the first one that answers after a
// failure ends the backoff waits of the sender and the receiver (notePing).
//
// With inboxes (Inboxer), the round-trip probe goes only to this node's
// inbox, which only it (and the nodes that share its inbox) reads: one
// reader covers every partition of a node on one Redis, and on a Redis
// Cluster each reader checks its own connection (block timeouts, position
// checks). Probes then cost O(nodes) in the cluster, not O(nodes ×
// nodes × shared partitions).
//
// Probes also announce, per partition, the last seq that left the outbox, so
// that receivers report a lost tail (probeFrames); a bus that does not receive
// publishes them without waiting for them when they changed (announce), and
// every bus announces so on the partitions it writes to and sends no
// round-trip probe to (writtenAnnouncements). After a round
// that came back, the runs of other nodes silent past the liveness window are
// reported (checkGone). Every iteration prunes what receivers keep of runs
// silent for pruneAfter, while Connected.
func (r *Reliable) probeLoop(ctx context.Context) {
	defer r.background.Done()
	var round uint64
	var ann announcer
	attempt, misses := 0, 0
	var prevGen uint64      // the subscription the last round began under
	prevRound := false      // a round began before
	var warmSince time.Time // the warm-up of the current subscription began (zero: it ended)
	var warmWait time.Duration
	verified := false   // a round came back under the current subscription
	pingFailed := false // the last failure recorded was a ping's (not a probe publish's)
	for {
		start := time.Now()
		r.recv.prune(r, start, r.pruneAfter())
		err := r.ping(ctx)
		r.notePing(err)
		if err == nil && pingFailed {
			// The broker answers again: say so now, not after the probe round,
			// which takes several ProbeTimeouts while a backlog is delivered.
			pingFailed = false
			r.c.reconnects.Add(1)
			attempt = 0
			r.sm.ok(compPing)
		}
		pingErr := err
		if err == nil && r.recv.receiving() {
			round++
			// The first round under a subscription is a warm-up: its probes may
			// have been published before the broker had the subscription (pub/sub
			// keeps nothing for a subscriber that does not exist yet).
			// Warm-up rounds wait briefly and begin again (25 ms, doubling),
			// so that a subscription that goes live soon after its probes
			// left is Connected soon, until a round comes back or the
			// warm-up has lasted ProbeTimeout.
			gen := r.recv.subscribes.Load()
			if !prevRound || gen != prevGen {
				warmSince, warmWait = start, warmUpFirstWait
				verified = false
			}
			prevGen, prevRound = gen, true
			warmUp := !warmSince.IsZero() && start.Sub(warmSince) < r.cfg.ProbeTimeout
			wait := r.cfg.ProbeTimeout
			if warmUp {
				wait = min(warmWait, r.cfg.ProbeTimeout-start.Sub(warmSince))
				warmWait *= 2
			}
			var missed, lost bool
			missed, lost, err = r.probeRound(ctx, round, warmUp, wait, &ann.written)
			if !missed && !lost && err == nil {
				warmSince = time.Time{}
			}
			if ctx.Err() != nil {
				return
			}
			if missed && (warmUp || r.recv.subscribes.Load() != gen) {
				// Not a dead subscription: one that did not exist yet when the
				// probes left. A rebuild would lose, on pub/sub, what is published
				// meanwhile; the next round, at once, tells.
				r.log.Debug("bus probe round missed while the subscription started", "round", round,
					"partitions", r.probes.missing())
				continue
			}
			if lost && warmUp {
				continue // the subscription it began under was replaced: a new warm-up, at once
			}
			if lost {
				// The broker lost the probes (it restarted or failed over while
				// they were on their way): the next round tells.
				r.log.Debug("bus probe round lost with a broken subscription", "round", round)
			} else if missed {
				misses++
				r.c.probeFailures.Add(1)
				r.log.Warn("bus liveness probe missed; rebuilding the subscription",
					"timeout", r.cfg.ProbeTimeout, "partitions", r.probes.missing(), "consecutive", misses)
				if r.recv.rebuildSubscription() {
					r.sm.fail(compSubscribe, fmt.Errorf("%w within %v", errProbeTimeout, r.cfg.ProbeTimeout), misses, 0)
				}
				// The next round may begin before the receiver subscribes
				// again: it is a warm-up whichever subscription it finds.
				prevRound = false
			} else if err == nil {
				misses = 0
				// This node's subscription is current: a node silent now is gone.
				// Not on the first round under a subscription: the nodes
				// it missed while the last one was silently dead have had
				// no probe interval yet to be heard on it.
				if verified {
					r.reportGone(r.recv.checkGone(r, time.Now(), r.livenessWindow()))
				}
				verified = true
			}
		} else if err == nil {
			// A node that only publishes still announces what it published, so
			// that receivers find a lost tail; nothing waits for these probes.
			err = r.announce(ctx, &ann)
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			pingFailed = pingErr != nil
			r.c.probeFailures.Add(1)
			attempt++
			d := r.bo.delay(attempt)
			r.sm.fail(compPing, err, attempt, d)
			if !r.pause(ctx, d) {
				return
			}
			continue
		}
		if attempt > 0 {
			r.c.reconnects.Add(1)
		}
		attempt = 0
		r.sm.ok(compPing)
		if !r.pause(ctx, r.cfg.ProbeInterval-time.Since(start)) {
			return
		}
	}
}

func (r *Reliable) ping(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	if err := r.t.Ping(pctx); err != nil {
		return fmt.Errorf("bus: ping: %w", err)
	}
	return nil
}

// probeFrames returns the probes of round, one on each of parts, each announcing
// the last seq of its partition that left the outbox (acknowledged by the broker
// or dropped by a bound), and that last seq of every partition. The outbox is
// read before the probes are published, so every seq they announce was
// published (or dropped) before them: on each partition the probe follows the
// frames it announces. The caller holds
// r.publishing until the probes are written, so that no batch of the sender is
// written between (one would follow no probe that announces it, yet precede
// this one).
func (r *Reliable) probeFrames(round uint64, parts []int) (frames []Frame, last []uint64) {
	last = r.ob.lastResolved(make([]uint64, 0, r.partitions))
	frames = r.appendProbes(make([]Frame, 0, len(parts)), round, parts, last, nil)
	return frames, last
}

// appendProbes appends to frames the probes of round on parts, announcing
// last. A bus with inboxes adds, on a partition it wrote to, the time of its
// first message there (the receivers' baseline rule, see receiver.probe) and,
// where live (aligned with parts; nil for none) is positive, its promise to
// announce there every round for that long (receiver.checkGone).
func (r *Reliable) appendProbes(frames []Frame, round uint64, parts []int, last []uint64, live []time.Duration) []Frame {
	now := time.Now().UnixNano()
	for i, p := range parts {
		data := make([]byte, 0, len(r.prefix)+3+16+probeLiveLen)
		data = append(data, r.prefix...)
		data[1] = byte(kindProbe)
		data = binary.AppendUvarint(data, uint64(p))
		data = binary.BigEndian.AppendUint64(data, round)
		data = binary.BigEndian.AppendUint64(data, uint64(now))
		data = binary.BigEndian.AppendUint64(data, last[p])
		if r.inboxes > 0 && last[p] > 0 {
			// last > 0: seq 1 was accepted, its time is set.
			data = binary.BigEndian.AppendUint64(data, uint64(r.ob.first(p)))
			if live != nil && live[i] > 0 {
				data = binary.BigEndian.AppendUint64(data, uint64(live[i]))
			}
		}
		frames = append(frames, Frame{Partition: p, Data: data, NoWait: true, Probe: true}) // probes never wait for replicas
	}
	return frames
}

// announced returns the partitions whose last seq the final announcement at
// Close carries: those this node reads, and the inbox partitions it does not
// read but wrote to (last[p] > 0). An inbox that was never written has nothing
// to announce.
func (r *Reliable) announced(last []uint64) []int {
	if r.inboxes == 0 {
		return r.reads
	}
	parts := slices.Clone(r.reads)
	for p := r.shared; p < r.partitions; p++ {
		if p != r.inbox && last[p] > 0 {
			parts = append(parts, p)
		}
	}
	return parts
}

// announceEvery is how many probe intervals a bus that does not receive lets
// pass before it announces again what it announced already (a broker that lost
// the announcement with the data learns it again).
const announceEvery = 10

// announcer is the prober's memory of what a bus that does not receive last
// announced.
type announcer struct {
	last    []uint64
	since   int // rounds since the last announcement
	written writtenAnnouncer
}

// announce publishes, for a bus that does not receive, probes without waiting
// for them: when the last resolved seq of a partition it reads changed since
// the last announcement, and every announceEvery rounds once anything was
// resolved. With inboxes it announces instead on every partition it wrote
// to as a receiving bus does on those without its round-trip probe
// (writtenAnnouncements), promise included. Their round (seq) is 0: they
// announce, but their rhythm says nothing about liveness.
func (r *Reliable) announce(ctx context.Context, a *announcer) error {
	if !r.lockPublishing(ctx) {
		return ctx.Err()
	}
	defer r.unlockPublishing()
	if err := r.republish(ctx); err != nil {
		return err
	}
	last := r.ob.lastResolved(make([]uint64, 0, r.partitions))
	if r.inboxes > 0 {
		frames, sent := r.writtenAnnouncements(nil, last, &a.written, nil)
		if len(frames) == 0 {
			return nil
		}
		if err := r.publishProbes(ctx, frames); err != nil {
			return err
		}
		r.c.probesSent.Add(1)
		sent()
		return nil
	}
	a.since++
	if a.last == nil {
		a.last = make([]uint64, len(last)) // nothing announced: all 0
	}
	changed, some := false, false
	for _, p := range r.reads {
		changed = changed || last[p] != a.last[p]
		some = some || last[p] > 0
	}
	if !changed && (a.since < announceEvery || !some) {
		return nil
	}
	if err := r.publishProbes(ctx, r.appendProbes(nil, 0, r.reads, last, nil)); err != nil {
		return err
	}
	r.c.probesSent.Add(1)
	a.last, a.since = last, 0
	return nil
}

// writtenAnnouncer is the prober's memory of its announcements on the
// partitions this node writes to and sends no round-trip probe to.
type writtenAnnouncer struct {
	last   []uint64 // per partition: the last seq announced there
	breaks uint64   // Reliable.breaks at the last announcement of them all
	// written holds the partitions written to recently: when the prober saw
	// their last seq change. Entries leave once older than both liveFor and
	// inboxReannounceFor.
	written map[int]time.Time
	rounds  int // rounds since the last periodic announcement
}

// writtenAnnouncements appends to frames, for a bus with inboxes, an
// announcement (round 0: a last seq and the time of the first message,
// without a liveness rhythm) on the partitions this node wrote to other than
// skip (those its probes of this round go to): the inboxes of other nodes,
// and, when skip is the round-trip partitions, the shared partitions, which
// then get no round-trip probe (probeLoop). The nodes reading them learn a
// lost tail only so. It announces on a partition
//   - whose last resolved seq changed since its last announcement there;
//   - every one of them after a broken connection (the broker may have lost
//     their tails while nothing new was written);
//   - every round while it holds retained entries there (Config.Retain) or
//     wrote there within liveFor (the retain window, and at least two
//     liveness windows): on a Redis Cluster the shard of
//     an inbox this node only writes to can fail over and lose those writes
//     while nothing of this node breaks (its subscription and pings go to
//     other shards). The write goes through the transport's guard of the
//     primary (a connection pinned to the node that served the slot), so the
//     failover surfaces as ErrPrimaryChanged or a broken connection, and the
//     retained messages go out again (publishProbes, republish) before the
//     announcement. These announcements carry how much longer the every-round
//     rhythm lasts (probeLive): a receiver that then hears nothing of this node
//     for its liveness window reports it gone (receiver.checkGone), which the
//     round-trip probes on the shared partitions told before;
//   - every announceEvery rounds while it wrote there within
//     inboxReannounceFor: a tail trimmed from the stream with its
//     announcement, while its reader was behind, is still reported.
//
// A node that stops writing to a partition is then no longer heard there, and
// not taken for gone. It returns the frames and the function to call once
// they are written. Without inboxes it adds nothing.
func (r *Reliable) writtenAnnouncements(frames []Frame, last []uint64, a *writtenAnnouncer, skip []int) ([]Frame, func()) {
	if r.inboxes == 0 {
		return frames, func() {}
	}
	if a.last == nil {
		a.last = make([]uint64, r.partitions)
		a.written = make(map[int]time.Time)
	}
	now := time.Now()
	breaks := r.breaks.Load()
	all := breaks != a.breaks
	a.rounds++
	periodic := a.rounds >= announceEvery
	if periodic {
		a.rounds = 0
	}
	liveFor := r.liveFor()
	held := make(map[int]bool)
	r.kept.holding(held)
	var parts []int
	var lives []time.Duration
	for p := range r.partitions {
		if last[p] == 0 || slices.Contains(skip, p) {
			continue
		}
		due := all || last[p] != a.last[p] || held[p]
		if last[p] != a.last[p] {
			a.written[p] = now
		}
		var live time.Duration
		if w, ok := a.written[p]; ok {
			age := now.Sub(w)
			switch {
			case age <= liveFor:
				due, live = true, liveFor-age
			case age <= r.inboxReannounceFor():
				due = due || periodic
			default:
				delete(a.written, p)
			}
		}
		if due {
			parts = append(parts, p)
			lives = append(lives, live)
		}
	}
	frames = r.appendProbes(frames, 0, parts, last, lives)
	return frames, func() {
		for _, p := range parts {
			a.last[p] = last[p]
		}
		a.breaks = breaks
	}
}

// liveFor is how long after a write to a partition without its round-trip
// probe a bus with inboxes announces there every round: the retain window,
// and at least two liveness windows, so that a receiver can tell a writer
// that stopped from one that crashed (receiver.checkGone).
func (r *Reliable) liveFor() time.Duration {
	return max(r.cfg.Retain.Window, 2*r.livenessWindow())
}

// inboxReannounceFor is how long after its last write to an inbox partition
// a node announces there again every announceEvery rounds: as long as a Redis
// stream keeps its entries by default (redisbus.DefaultStreamRetention:
// Outbox.MaxAge, or its default when disabled, plus a minute). A reader
// behind by more than that has lost entries to the retention anyway.
func (r *Reliable) inboxReannounceFor() time.Duration {
	age := r.cfg.Outbox.MaxAge
	if age <= 0 {
		age = DefaultOutboxMaxAge
	}
	return age + time.Minute
}

// publishProbes publishes probe frames; the caller holds r.publishing and has
// republished. When the transport refuses them because the primary changed (a
// Cluster slot moved), what the old primary acknowledged last goes out again
// first, then the probes, once: a probe must not announce seqs the new
// primary lacks.
func (r *Reliable) publishProbes(ctx context.Context, frames []Frame) error {
	for try := 0; ; try++ {
		pctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
		err := r.t.Publish(pctx, frames)
		cancel()
		if err == nil {
			return nil
		}
		r.connectionBroke()
		if !errors.Is(err, ErrPrimaryChanged) || try > 0 {
			return fmt.Errorf("bus: publish probe: %w", err)
		}
		r.c.primaryChanges.Add(1)
		r.log.Info("bus: the broker's primary changed; publishing again what it acknowledged last", "error", err)
		// The transport forgot the writes that wait for replicas, which the
		// old primary may have lost: the sender writes them again before it
		// trusts a confirmation (as after a refused batch).
		r.ob.forgetWritten()
		if rerr := r.republish(ctx); rerr != nil {
			return rerr
		}
	}
}

// warmUpFirstWait is how long the first warm-up round under a subscription
// waits for its probes; each next one waits twice as long.
const warmUpFirstWait = 25 * time.Millisecond

// probeRound publishes the probes of round and waits for them (wait, and
// ProbeTimeout for each extension). It returns
// missed when they did not all come back in time, lost when they did not and
// the subscription ended meanwhile (the broker may have lost them: a restart, a
// failover), or the publish error. The wait is extended while a partition whose
// probe is missing delivers other frames or the handler runs (the subscription
// is behind, not dead), except in a warm-up round: frames of a subscription
// that did not exist when the probes left say nothing about them.
func (r *Reliable) probeRound(ctx context.Context, round uint64, warmUp bool, wait time.Duration, ann *writtenAnnouncer) (missed, lost bool, err error) {
	subs := r.recv.subscriptions.Load()
	if !r.lockPublishing(ctx) {
		return false, false, ctx.Err()
	}
	// Retained messages go out again before a probe announces them.
	if err := r.republish(ctx); err != nil {
		r.unlockPublishing()
		return false, false, err
	}
	frames, last := r.probeFrames(round, r.trips)
	frames, sent := r.writtenAnnouncements(frames, last, ann, r.trips)
	done := r.probes.begin(round, r.partitions, r.trips)
	err = r.publishProbes(ctx, frames)
	r.unlockPublishing()
	if err != nil {
		return false, false, err
	}
	sent()
	r.c.probesSent.Add(1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	progress := r.partitionProgress(nil)
	for ext := 0; ; {
		select {
		case <-ctx.Done():
			return false, false, ctx.Err()
		case <-done:
			return false, false, nil
		case <-timer.C:
		}
		if r.recv.subscriptions.Load() != subs {
			// Not a dead subscription: it ended and runs again; waiting longer
			// for probes the broker may have lost would delay the next round
			// (and its announcements) for up to maxProbeExtensions timeouts.
			return false, true, nil
		}
		// A subscription that keeps delivering other frames on a partition
		// whose probe is missing, or whose handler is still running (the
		// transport waits for it), is alive, only behind. Frames of other
		// partitions, or of the direct plane (heartbeats), say nothing about
		// the missing probes: on pub/sub they keep coming after a probe was lost.
		now := r.partitionProgress(progress[:0:0])
		behind := r.recv.handling.Load()
		for _, p := range r.probes.missing() {
			behind = behind || now[p] != progress[p]
		}
		if !behind || warmUp || ext >= maxProbeExtensions {
			return true, false, nil
		}
		progress = now
		ext++
		timer.Reset(r.cfg.ProbeTimeout)
	}
}

// partitionProgress appends to dst the count of frames delivered so far on each
// partition of the reliable plane.
func (r *Reliable) partitionProgress(dst []uint64) []uint64 {
	for i := range r.recv.partProgress {
		dst = append(dst, r.recv.partProgress[i].Load())
	}
	return dst
}
