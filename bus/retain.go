package bus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// retained keeps the messages the broker acknowledged for a while after it did
// (RetainConfig): a broker can lose writes it already answered (Redis with
// appendfsync everysec killed while a background fsync held its AOF write back,
// a failover to a replica without the last writes, a restart from an older
// snapshot). When the connection breaks, the bus publishes them again before
// anything newer (republish), under their own origin, instance, partition and
// seq: receivers skip those they have, and those the broker lost fill the hole
// instead of being reported as a gap.
//
// Entries come in commit order, which is seq order on every partition. The age
// bound counts from the last time the broker was known to be healthy, not from
// now: once a break is noted, nothing leaves by age until the republish, so an
// outage longer than the window does not forget what the broker may have lost
// at its start.
type retained struct {
	mu      sync.Mutex
	nextID  uint64
	entries []retainedEntry // from head
	head    int
	bytes   int64
	// parts counts the entries per partition (for the prober: a partition
	// that holds retained entries is announced every round, see
	// writtenAnnouncements).
	parts map[int]int
	// lastOK is the last time the broker was known healthy with nothing
	// pending: entries committed more than window before it are forgotten.
	lastOK time.Time
	// breaks counts the breaks noted; done is the value of breaks the last
	// successful republish started from. While breaks > done a republish is
	// due (or running): nothing leaves by age, so a republish that fails
	// part-way, or a break during one, forgets nothing.
	breaks, done atomic.Uint64

	window      time.Duration // < 0: retention disabled
	maxAge      time.Duration // Outbox.MaxAge; -1: none
	maxMessages int           // -1: none
	maxBytes    int64         // -1: none
	c           *counters
}

type retainedEntry struct {
	id        uint64 // names the entry across a republish (its index moves)
	partition int
	data      []byte    // the envelope as published, immutable
	accepted  time.Time // when Publish took it
	committed time.Time // when the broker acknowledged it last
	copies    int       // how many times it was published again
}

// maxCopies bounds how many times one message is published again. Each break
// republishes what the window holds, and the copies are retained again, so
// without a bound a message that itself breaks the connection (an entry
// larger than Redis' client output buffer limit: every reader reading it is
// dropped, which is a break) would be published again after every break it
// causes, for ever, and everything retained with it. Two copies cover a
// second failure right after the first (a crash loop, a failover after a
// restart); a message that needs more is forgotten, counted in
// durasock_bus_retained_evicted_total and logged, and if the broker lost it,
// receivers report it as a gap.
const maxCopies = 2

func newRetained(cfg RetainConfig, maxAge time.Duration, c *counters) *retained {
	return &retained{window: cfg.Window, maxAge: maxAge, maxMessages: cfg.MaxMessages, maxBytes: cfg.MaxBytes, c: c}
}

func (rt *retained) enabled() bool { return rt != nil && rt.window >= 0 }

// broken reports whether a break was noted since the last republish began.
func (rt *retained) broken() bool { return rt.breaks.Load() != rt.done.Load() }

// add keeps a message, accepted at accepted, that the broker acknowledged at
// now, forgetting the oldest beyond the count and byte bounds (counted: their
// loss would be reported as a gap again).
func (rt *retained) add(partition int, data []byte, accepted, now time.Time) {
	if !rt.enabled() {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.nextID++
	rt.entries = append(rt.entries, retainedEntry{id: rt.nextID, partition: partition, data: data, accepted: accepted, committed: now})
	rt.bytes += int64(len(data))
	if rt.parts == nil {
		rt.parts = make(map[int]int)
	}
	rt.parts[partition]++
	for rt.lenLocked() > 0 && ((rt.maxMessages >= 0 && rt.lenLocked() > rt.maxMessages) ||
		(rt.maxBytes >= 0 && rt.bytes > rt.maxBytes)) {
		rt.popLocked()
		rt.c.retainEvicted.Add(1)
	}
	if !rt.broken() {
		rt.okLocked(now)
	}
}

// ok records that the broker was healthy at now (a commit, a ping) and
// forgets what is older than the window before it. After a break it does
// nothing until a republish succeeded.
func (rt *retained) ok(now time.Time) {
	if !rt.enabled() || rt.broken() {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if !rt.broken() { // a republish may have started meanwhile
		rt.okLocked(now)
	}
}

func (rt *retained) okLocked(now time.Time) {
	if now.After(rt.lastOK) {
		rt.lastOK = now
	}
	rt.trimLocked()
}

func (rt *retained) trimLocked() {
	horizon := rt.lastOK.Add(-rt.window)
	for rt.lenLocked() > 0 && rt.entries[rt.head].committed.Before(horizon) {
		rt.popLocked()
	}
}

func (rt *retained) lenLocked() int { return len(rt.entries) - rt.head }

func (rt *retained) popLocked() {
	e := &rt.entries[rt.head]
	rt.bytes -= int64(len(e.data))
	rt.forgetPartLocked(e.partition)
	*e = retainedEntry{}
	rt.head++
	if rt.head == len(rt.entries) {
		rt.entries, rt.head = rt.entries[:0], 0
	} else if rt.head >= 1024 && rt.head > len(rt.entries)/2 {
		rt.entries = append(rt.entries[:0:0], rt.entries[rt.head:]...)
		rt.head = 0
	}
}

// forgetPartLocked counts one entry of partition p less.
func (rt *retained) forgetPartLocked(p int) {
	if rt.parts[p] <= 1 {
		delete(rt.parts, p)
		return
	}
	rt.parts[p]--
}

// holding adds to set the partitions that hold retained entries: O(those
// partitions).
func (rt *retained) holding(set map[int]bool) {
	if !rt.enabled() {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for p := range rt.parts {
		set[p] = true
	}
}

// broke notes that the connection to the broker broke: the next publish
// republishes what is retained first.
func (rt *retained) broke() {
	if rt.enabled() {
		rt.breaks.Add(1)
	}
}

// pending returns the frames to publish again after a break, oldest first,
// the ids of their entries (for republished) and the break generation they
// cover; nil when there was no break. It forgets first the entries accepted more than maxAge before now
// and returns how many: receivers may have forgotten their run by then, and
// would take them for new (expired).
func (rt *retained) pending(now time.Time) (frames []Frame, ids []uint64, gen uint64, expired, exhausted int) {
	if !rt.enabled() {
		return nil, nil, 0, 0, 0
	}
	gen = rt.breaks.Load()
	if gen == rt.done.Load() {
		return nil, nil, 0, 0, 0
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.trimLocked()
	if rt.maxAge >= 0 {
		horizon := now.Add(-rt.maxAge)
		expired = rt.dropLocked(func(e *retainedEntry) bool { return e.accepted.Before(horizon) })
	}
	exhausted = rt.dropLocked(func(e *retainedEntry) bool { return e.copies >= maxCopies })
	frames = make([]Frame, 0, rt.lenLocked())
	ids = make([]uint64, 0, rt.lenLocked())
	for _, e := range rt.entries[rt.head:] {
		ids = append(ids, e.id)
		// The same envelope but for its kind, which tells a reader of the
		// history that the broker may hold it twice. NoWait: the broker may
		// have lost them once already, waiting for replicas per batch would
		// hold everything newer back (the sender waits for them afterwards).
		data := append([]byte(nil), e.data...)
		data[1] = byte(kindRepublished)
		frames = append(frames, Frame{Partition: e.partition, Data: data, NoWait: true})
	}
	return frames, ids, gen, expired, exhausted
}

// dropLocked forgets the retained entries drop selects, counted as evicted,
// and returns how many.
func (rt *retained) dropLocked(drop func(*retainedEntry) bool) int {
	n := 0
	kept := rt.entries[:rt.head]
	for i := rt.head; i < len(rt.entries); i++ {
		e := &rt.entries[i]
		if drop(e) {
			rt.bytes -= int64(len(e.data))
			rt.forgetPartLocked(e.partition)
			n++
			continue
		}
		kept = append(kept, *e)
	}
	clear(rt.entries[len(kept):])
	rt.entries = kept
	rt.c.retainEvicted.Add(uint64(n))
	return n
}

// republished records that the republish of generation gen succeeded at now,
// for the entries ids (those pending returned; skip, nil or aligned with ids,
// marks those not published again because the broker still held them). Each
// starts a new window: a second break within it may lose them (again), and a
// broker that held them through one failure can still lose them in the next
// (a failover right after a restart). The copies count one more copy; the
// entries the broker held do not. Entries added since pending (a commit of
// writes awaiting replicas runs beside a republish) and entries forgotten
// since are matched by id, not by place. A break noted since gen keeps the
// next republish due.
func (rt *retained) republished(gen uint64, now time.Time, ids []uint64, skip []bool) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if gen > rt.done.Load() {
		rt.done.Store(gen)
	}
	held := make(map[uint64]bool, len(ids))
	for i, id := range ids {
		held[id] = skip != nil && skip[i]
	}
	for i := rt.head; i < len(rt.entries); i++ {
		e := &rt.entries[i]
		h, ok := held[e.id]
		if !ok {
			continue
		}
		e.committed = now
		if !h {
			e.copies++
		}
	}
	if !rt.broken() {
		rt.okLocked(now)
	}
}

// discard forgets every retained message when a republish is still due, and
// returns how many (Close: they may be lost and will not go out again).
func (rt *retained) discard() int {
	if !rt.enabled() || !rt.broken() {
		return 0
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	n := rt.lenLocked()
	for rt.lenLocked() > 0 {
		rt.popLocked()
	}
	rt.c.retainEvicted.Add(uint64(n))
	return n
}

// snapshot reports the number and bytes of retained messages.
func (rt *retained) snapshot() (int, int64) {
	if !rt.enabled() {
		return 0, 0
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.lenLocked(), rt.bytes
}

// connectionBroke records a broken connection (a failed publish, ping or
// subscription): the retained messages go out again before anything newer.
func (r *Reliable) connectionBroke() {
	r.breaks.Add(1)
	r.kept.broke()
}

// republish publishes again, after a break, the retained messages, in order,
// in batches. The caller holds r.publishing and publishes nothing before it
// returns nil: on each partition the retained messages precede anything newer
// of this node, and any probe that announces them. On error the break stays
// noted, nothing retained is forgotten, and the next publish tries again from
// the start. It may run once per break: copies the broker acknowledged again
// are retained again for a window.
func (r *Reliable) republish(ctx context.Context) error {
	if !r.kept.enabled() || !r.kept.broken() {
		return nil // the common case: no time.Now, no lock
	}
	frames, ids, gen, expired, exhausted := r.kept.pending(time.Now())
	if expired > 0 || exhausted > 0 {
		if ok, suppressed := r.retainLog.allow(time.Now(), 10*time.Second); ok {
			r.log.Warn("bus: retained messages not published again: older than the outbox max age (receivers may take them for new), or published again twice already (a message that breaks the connection itself, e.g. larger than Redis' client output buffer limit, or a connection that keeps breaking)",
				"too_old", expired, "copies_exhausted", exhausted, "max_age", r.cfg.Outbox.MaxAge, "suppressed_since_last", suppressed)
		}
	}
	if gen == 0 {
		return nil
	}
	all := len(frames)
	skip, survived, err := r.survivors(ctx, frames)
	if err != nil {
		r.kept.broke()
		return fmt.Errorf("bus: republish retained messages: read what the broker holds: %w", err)
	}
	if survived > 0 {
		kept := make([]Frame, 0, len(frames)-survived)
		for i, f := range frames {
			if !skip[i] {
				kept = append(kept, f)
			}
		}
		frames = kept
	}
	for start := 0; start < len(frames); {
		end, size := start, 0
		for end < len(frames) && end-start < r.cfg.BatchSize && (end == start || size+len(frames[end].Data) <= r.cfg.BatchBytes) {
			size += len(frames[end].Data)
			end++
		}
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		err := r.t.Publish(pctx, frames[start:end])
		cancel()
		if err != nil && !errors.Is(err, ErrNotReplicated) { // written is what counts here
			r.kept.broke()
			if errors.Is(err, ErrPrimaryChanged) {
				// The transport forgot the writes that wait for replicas, which
				// the old primary may have lost: they go out again too, after
				// the retained ones (the prober may be the caller, not the
				// sender).
				r.ob.forgetWritten()
			}
			return fmt.Errorf("bus: republish retained messages: %w", err)
		}
		start = end
	}
	r.kept.republished(gen, time.Now(), ids, skip)
	if len(frames) == 0 {
		if all > 0 {
			if ok, suppressed := r.republishLog.allow(time.Now(), 10*time.Second); ok {
				r.log.Info(stillHeldLog, "messages", all, "suppressed_since_last", suppressed)
			}
		}
		return nil
	}
	if r.replicas != nil {
		r.rewaitParts(frames)
	}
	r.c.republished.Add(uint64(len(frames)))
	r.c.republishes.Add(1)
	if ok, suppressed := r.republishLog.allow(time.Now(), 10*time.Second); ok {
		r.log.Info("bus: the broker connection broke; published again the messages it acknowledged last that it may have lost (receivers skip those they have)",
			"messages", len(frames), "still_held", survived, "retain_window", r.cfg.Retain.Window, "suppressed_since_last", suppressed)
	}
	return nil
}

// stillHeldLog is logged after a break when the broker still holds every
// retained message (a network cut, a restart that lost nothing).
const stillHeldLog = "bus: the broker connection broke; it still holds every message it acknowledged last, none published again"

// rewaitParts hands the partitions of republished frames, written without
// waiting for replicas, to the sender, which waits for their replicas (so
// that the transport stops guarding them).
func (r *Reliable) rewaitParts(frames []Frame) {
	r.rewaitMu.Lock()
	defer r.rewaitMu.Unlock()
	if r.rewait == nil {
		r.rewait = make(map[int]struct{})
	}
	for _, f := range frames {
		r.rewait[f.Partition] = struct{}{}
	}
	select { // the prober may have republished while the sender idles
	case r.wake <- struct{}{}:
	default:
	}
}

// takeRewait moves the partitions rewaitParts noted into rp.
func (r *Reliable) takeRewait(rp *replication) {
	r.rewaitMu.Lock()
	defer r.rewaitMu.Unlock()
	if len(r.rewait) == 0 {
		return
	}
	if !rp.pending() {
		rp.lastTry = time.Now()
	}
	if rp.parts == nil {
		rp.parts = make(map[int]struct{})
	}
	for p := range r.rewait {
		rp.parts[p] = struct{}{}
	}
	clear(r.rewait)
}

// survivorScanMin is how many entries more than it retained for a partition
// the bus lets a SurvivorFinder read back (other nodes' entries interleave
// with its own), and survivorSkew how much older than the oldest retained
// message an entry's publish time may be before the scan stops (the clocks of
// nodes differ, and a node flushing its outbox writes old messages late:
// stopping early only publishes the whole window again, as without a
// SurvivorFinder).
const (
	survivorScanMin = 10_000
	survivorSkew    = time.Minute
)

// survivors asks a transport that implements SurvivorFinder which of the
// retained frames (in retained order, which is seq order per partition) the
// broker still holds: per partition, the newest one it finds in the log and
// every older one of that partition, since a broker loses writes only as a
// suffix. It returns skip[i] set for those (nil when none) and how many. A
// partition where none is found keeps all of its frames, and so do those not
// asked within PublishTimeout; an error (the broker could not be asked, or
// what answered is not the primary) fails the republish.
func (r *Reliable) survivors(ctx context.Context, frames []Frame) (skip []bool, survived int, err error) {
	sf, ok := r.t.(SurvivorFinder)
	if !ok || len(frames) == 0 {
		return nil, 0, nil
	}
	parts := make(map[int][]int) // partition -> indices in frames
	for i, f := range frames {
		parts[f.Partition] = append(parts[f.Partition], i)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	for p, idx := range parts {
		type key struct{ instance, seq uint64 }
		pos := make(map[key]int, len(idx))
		oldest := int64(math.MaxInt64)
		for j, i := range idx {
			h, ok := parseHeader(frames[i].Data)
			if !ok || string(h.origin) != r.nodeID {
				pos = nil // never: retained frames are this node's data
				break
			}
			pos[key{h.instance, h.seq}] = j
			oldest = min(oldest, h.time)
		}
		if pos == nil {
			continue
		}
		horizon := oldest - survivorSkew.Nanoseconds()
		match := func(data []byte) int {
			h, ok := parseHeader(data)
			if !ok {
				return -1
			}
			if string(h.origin) == r.nodeID && h.partition == p && (h.kind == kindData || h.kind == kindRepublished) {
				if j, ok := pos[key{h.instance, h.seq}]; ok {
					return j
				}
			}
			if h.time < horizon {
				return -2
			}
			return -1
		}
		j, err := sf.FindSurvivor(ctx, p, 2*len(idx)+survivorScanMin, match)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil {
				// Out of time (a broker slow to scan, many partitions): the
				// partitions not asked yet go out whole, as without the
				// check, rather than holding publishing up for another try.
				return skip, survived, nil
			}
			return nil, 0, err
		}
		if j < 0 || j >= len(idx) {
			continue
		}
		if skip == nil {
			skip = make([]bool, len(frames))
		}
		for _, i := range idx[:j+1] {
			skip[i] = true
		}
		survived += j + 1
	}
	return skip, survived, nil
}

// header is the part of an envelope survivors compares.
type header struct {
	kind      frameKind
	origin    []byte // aliases the frame: compared, not kept
	instance  uint64
	partition int
	seq       uint64
	time      int64
}

// parseHeader reads an envelope's header without copying the origin (the
// string is only compared) and without validating the rest.
func parseHeader(data []byte) (h header, ok bool) {
	if len(data) < envelopeMinLen || data[0] != envelopeVersion {
		return h, false
	}
	n := int(data[2])
	rest := data[3:]
	if n == 0 || len(rest) < n+8 {
		return h, false
	}
	h.kind = frameKind(data[1])
	h.origin = rest[:n]
	h.instance = binary.BigEndian.Uint64(rest[n:])
	rest = rest[n+8:]
	p, k := binary.Uvarint(rest)
	if k <= 0 || p > maxPartition || len(rest[k:]) < 16 {
		return h, false
	}
	h.partition = int(p)
	rest = rest[k:]
	h.seq = binary.BigEndian.Uint64(rest)
	h.time = int64(binary.BigEndian.Uint64(rest[8:]))
	return h, true
}
