package bus

import (
	"context"
	"errors"
	"fmt"
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
	entries []retainedEntry // from head
	head    int
	bytes   int64
	// lastOK is the last time the broker was known healthy with nothing
	// pending: entries committed more than window before it are forgotten.
	lastOK time.Time
	// broken is set when the connection broke since the last republish.
	broken atomic.Bool

	window      time.Duration // < 0: retention disabled
	maxMessages int           // -1: none
	maxBytes    int64         // -1: none
	c           *counters
}

type retainedEntry struct {
	partition int
	data      []byte // the envelope as published, immutable
	committed time.Time
}

func newRetained(cfg RetainConfig, c *counters) *retained {
	return &retained{window: cfg.Window, maxMessages: cfg.MaxMessages, maxBytes: cfg.MaxBytes, c: c}
}

func (rt *retained) enabled() bool { return rt != nil && rt.window >= 0 }

// add keeps a message the broker acknowledged at now, forgetting the oldest
// beyond the count and byte bounds (counted: their loss would be reported as
// a gap again).
func (rt *retained) add(partition int, data []byte, now time.Time) {
	if !rt.enabled() {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.entries = append(rt.entries, retainedEntry{partition: partition, data: data, committed: now})
	rt.bytes += int64(len(data))
	for rt.lenLocked() > 0 && ((rt.maxMessages >= 0 && rt.lenLocked() > rt.maxMessages) ||
		(rt.maxBytes >= 0 && rt.bytes > rt.maxBytes)) {
		rt.popLocked()
		rt.c.retainEvicted.Add(1)
	}
	if !rt.broken.Load() {
		rt.okLocked(now)
	}
}

// ok records that the broker was healthy at now (a commit, a ping) and
// forgets what is older than the window before it. After a break it does
// nothing until the republish.
func (rt *retained) ok(now time.Time) {
	if !rt.enabled() || rt.broken.Load() {
		return
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.okLocked(now)
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
	*e = retainedEntry{}
	rt.head++
	if rt.head == len(rt.entries) {
		rt.entries, rt.head = rt.entries[:0], 0
	} else if rt.head >= 1024 && rt.head > len(rt.entries)/2 {
		rt.entries = append(rt.entries[:0:0], rt.entries[rt.head:]...)
		rt.head = 0
	}
}

// broke notes that the connection to the broker broke: the next publish
// republishes what is retained first.
func (rt *retained) broke() {
	if rt.enabled() {
		rt.broken.Store(true)
	}
}

// pending returns the frames to publish again after a break, oldest first, and
// clears the break; nil when there was no break or nothing is retained.
func (rt *retained) pending() []Frame {
	if !rt.enabled() || !rt.broken.Swap(false) {
		return nil
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.trimLocked()
	frames := make([]Frame, 0, rt.lenLocked())
	for _, e := range rt.entries[rt.head:] {
		// The same envelope but for its kind, which tells a reader of the
		// history that the broker may hold it twice.
		data := append([]byte(nil), e.data...)
		data[1] = byte(kindRepublished)
		frames = append(frames, Frame{Partition: e.partition, Data: data})
	}
	return frames
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
func (r *Reliable) connectionBroke() { r.kept.broke() }

// republish publishes again, after a break, the retained messages, in order,
// in batches. The caller holds r.publishing and publishes nothing before it
// returns nil: on each partition the retained messages precede anything newer
// of this node, and any probe that announces them. On error the break stays
// noted and the next publish tries again from the start.
func (r *Reliable) republish(ctx context.Context) error {
	frames := r.kept.pending()
	if len(frames) == 0 {
		return nil
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
	r.c.republished.Add(uint64(len(frames)))
	r.c.republishes.Add(1)
	if ok, suppressed := r.republishLog.allow(time.Now(), 10*time.Second); ok {
		r.log.Info("bus: the broker connection broke; published again the messages it acknowledged last (receivers skip those they have)",
			"messages", len(frames), "retain_window", r.cfg.Retain.Window, "suppressed_since_last", suppressed)
	}
	return nil
}
