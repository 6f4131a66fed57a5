package bus

import (
	"context"
	"errors"
	"fmt"
)

// ErrDropped is wrapped by the error of Sync when messages it waited for were
// dropped by a bound (max age, drop-oldest, Close) instead of reaching the broker.
var ErrDropped = errors.New("bus: accepted messages dropped before the broker took them")

// Syncer is implemented by a Bus that can say when what it accepted has reached
// the broker (Reliable does). Publish answers as soon as a message is in the
// outbox in this process's memory; a process that dies then loses it. A caller
// that must not answer its own client before the message is safe in the broker
// calls Sync after Publish.
type Syncer interface {
	// Sync waits until every message that Publish accepted before the call has
	// left the outbox. It returns nil when the broker took all of them (and, for
	// a transport configured to wait for replicas, the replicas confirmed them);
	// an error wrapping ErrDropped when a bound dropped some of them (each drop is
	// also counted, logged and passed to OnDrop); or ctx.Err() when ctx ends
	// first, in which case the messages stay in the outbox and are still
	// delivered when the broker takes them.
	Sync(ctx context.Context) error
}

var _ Syncer = (*Reliable)(nil)

// Sync implements Syncer.
func (r *Reliable) Sync(ctx context.Context) error {
	w := r.ob.syncWait()
	if w == nil {
		return nil
	}
	select {
	case <-w.done:
		if w.dropped > 0 {
			return fmt.Errorf("%w: %d of %d", ErrDropped, w.dropped, w.waited)
		}
		return nil
	case <-ctx.Done():
		r.ob.cancelWait(w)
		return ctx.Err()
	}
}

// syncWaiter is a Sync call waiting for the outbox entries up to through.
type syncWaiter struct {
	through uint64
	waited  int // entries in the outbox that it waits for
	dropped int // of those, dropped by a bound; written under the outbox lock
	done    chan struct{}
}

// syncWait registers a waiter for every entry accepted so far, or returns nil
// when none is left in the outbox.
func (o *outbox) syncWait() *syncWaiter {
	o.mu.Lock()
	defer o.mu.Unlock()
	through := o.nextID - 1
	if o.n == 0 || o.front().id > through {
		return nil
	}
	w := &syncWaiter{through: through, waited: int(through - o.front().id + 1), done: make(chan struct{})}
	o.waiters = append(o.waiters, w)
	return w
}

func (o *outbox) cancelWait(w *syncWaiter) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i, x := range o.waiters {
		if x == w {
			o.waiters = append(o.waiters[:i], o.waiters[i+1:]...)
			return
		}
	}
}

// noteDropLocked counts a dropped entry for the waiters that wait for it.
func (o *outbox) noteDropLocked(e *outEntry) {
	for _, w := range o.waiters {
		if e.id <= w.through {
			w.dropped++
		}
	}
}

// settleLocked releases the waiters whose entries have all left the outbox.
func (o *outbox) settleLocked() {
	if len(o.waiters) == 0 {
		return
	}
	keep := o.waiters[:0]
	for _, w := range o.waiters {
		if o.n == 0 || o.front().id > w.through {
			close(w.done)
			continue
		}
		keep = append(keep, w)
	}
	clear(o.waiters[len(keep):])
	o.waiters = keep
}
