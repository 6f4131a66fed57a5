package bus

import (
	"context"
	"errors"
	"time"
)

// rewaitInterval is the least time between the end of one AwaitReplicas call
// of the sender and the start of the next while entries wait for replicas
// (each call itself blocks up to the transport's wait timeout). The sender
// publishes new entries in between: counted from the start of a call, a wait
// timeout above the interval would leave no time for them, and nothing would
// leave the outbox until the replicas returned.
const rewaitInterval = 500 * time.Millisecond

// writtenLocked is the number of entries at the front of the outbox that the
// broker has written but not replicated.
func (o *outbox) writtenLocked() int {
	if o.n == 0 || o.writtenThrough < o.front().id {
		return 0
	}
	return min(o.n, int(o.writtenThrough-o.front().id+1))
}

// markWritten records that the broker holds the entries through lastID
// (Publish succeeded or returned ErrNotReplicated) but has not replicated them.
func (o *outbox) markWritten(lastID uint64) {
	o.mu.Lock()
	o.writtenThrough = max(o.writtenThrough, lastID)
	o.mu.Unlock()
}

// written returns the highest written id and how many written entries wait.
func (o *outbox) written() (through uint64, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.writtenThrough, o.writtenLocked()
}

// forgetWritten makes the written entries go out again with the next batch (a
// failover may have lost them).
func (o *outbox) forgetWritten() {
	o.mu.Lock()
	o.failedThrough = max(o.failedThrough, o.writtenThrough)
	o.writtenThrough = 0
	o.forgets++
	o.mu.Unlock()
}

// forgotten returns how often forgetWritten ran: a batch taken before it
// changed may lack written entries that must go out first.
func (o *outbox) forgotten() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.forgets
}

// replication is the sender's view of entries written but not replicated.
type replication struct {
	parts   map[int]struct{} // partitions with written entries
	lastTry time.Time
}

func (rp *replication) add(frames []Frame) {
	if rp.parts == nil {
		rp.parts = make(map[int]struct{})
	}
	for _, f := range frames {
		rp.parts[f.Partition] = struct{}{}
	}
}

func (rp *replication) pending() bool { return len(rp.parts) > 0 }

func (rp *replication) partitions() []int {
	out := make([]int, 0, len(rp.parts))
	for p := range rp.parts {
		out = append(out, p)
	}
	return out
}

func (rp *replication) reset() { clear(rp.parts) }

// notReplicated handles a Publish that wrote the batch through lastID but whose
// replicas fell short: the entries stay in the outbox, are not published
// again, and wait for AwaitReplicas. It reports false when the transport
// cannot wait for replicas on its own (the error is then an ordinary failure).
func (r *Reliable) notReplicated(err error, frames []Frame, lastID uint64, rp *replication) bool {
	if r.replicas == nil || !errors.Is(err, ErrNotReplicated) {
		return false
	}
	r.ob.markWritten(lastID)
	if !rp.pending() {
		rp.lastTry = time.Now()
	}
	rp.add(frames)
	r.setUnderReplicated(true, err)
	return true
}

// awaitReplicas asks the transport whether the written entries are
// replicated now; when they are, they leave the outbox as published. A
// transport error (not a shortfall) makes them go out again. The next call is
// due rewaitInterval after this one returns.
func (r *Reliable) awaitReplicas(ctx context.Context, rp *replication) {
	through, _ := r.ob.written()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	err := r.replicas.AwaitReplicas(pctx, rp.partitions())
	cancel()
	rp.lastTry = time.Now()
	switch {
	case err == nil:
		waits := r.ob.commit(through, time.Now(), nil)
		for _, w := range waits {
			r.m.observeLatency(w)
		}
		rp.reset()
		r.setUnderReplicated(false, nil)
	case errors.Is(err, ErrNotReplicated):
		r.c.replicaWaits.Add(1)
	case ctx.Err() != nil:
	case errors.Is(err, ErrPrimaryChanged):
		r.c.primaryChanges.Add(1)
		r.log.Info("bus: the broker's primary changed before replicas confirmed messages; writing them again", "error", err)
		r.connectionBroke()
		r.ob.forgetWritten()
		rp.reset()
	default:
		// The broker did not answer: it may have failed over and lost the
		// entries. Publish them again; receivers drop the duplicates.
		r.log.Debug("bus: waiting for replicas failed; publishing the written entries again", "error", err)
		r.connectionBroke()
		r.ob.forgetWritten()
		rp.reset()
	}
}

// rewaitDue reports whether the sender should ask for replicas now.
func (rp *replication) rewaitDue(now time.Time) bool {
	return rp.pending() && now.Sub(rp.lastTry) >= rewaitInterval
}

// setUnderReplicated records the start (Warn) and end (Info) of an episode of
// under-replication.
func (r *Reliable) setUnderReplicated(on bool, err error) {
	if r.underReplicated.Swap(on) == on {
		return
	}
	if on {
		r.c.underReplicated.Add(1)
		r.log.Warn("bus broker under-replicated: messages are written but not acknowledged by replicas; kept in the outbox until they are",
			"error", err)
		return
	}
	r.log.Info("bus broker replicated again; the outbox released the written messages")
}
