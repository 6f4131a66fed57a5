package bus

import (
	"context"
	"sync"
	"time"
)

// readinessInterval is the cadence of readiness pings: while the bus is not
// Connected, the prober pings the broker this often between its regular pings
// (each ping bounded by ProbeTimeout, so a broker that does not answer is pinged
// at most once per ProbeTimeout). A readiness ping does not count as a reconnect
// attempt and does not change the state; one that succeeds after a failed ping
// means the broker is back, and it ends every pending backoff wait.
// Against a broker that is down a ping fails at once (connection refused) or
// within ProbeTimeout, so pinging often costs little and takes little off the
// time to resume.
const readinessInterval = 100 * time.Millisecond

// recoveryJitter bounds the random wait left to a backoff wait that a recovery
// ended, so that the nodes of a cluster do not all reconnect in the same instant.
const recoveryJitter = 100 * time.Millisecond

// senderHold is how much longer than the receiver the sender waits after a
// recovery on a transport without a log (pub/sub delivers only to current
// subscribers): the other nodes see the broker back within one readiness
// interval of this one and subscribe again within recoveryJitter, so the
// backlog does not go out while they are not listening. A transport that
// keeps a log (StartMarker: Redis streams) stores the backlog for readers that
// come back later, and its sender does not hold (recoveryHold).
const senderHold = readinessInterval + recoveryJitter

// recoveryHold is the hold a backoff wait keeps after a recovery: none on a
// transport whose reliable plane keeps a log that receivers read from their
// own position (StartMarker), hold otherwise.
func (r *Reliable) recoveryHold(hold time.Duration) time.Duration {
	if _, logged := r.t.(StartMarker); logged {
		return 0
	}
	return hold
}

// signal is a broadcast: the channel of wait is closed at the next fire.
type signal struct {
	mu sync.Mutex
	ch chan struct{}
}

func (s *signal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *signal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

// retryWait is the wait of d after a failed attempt. When back is closed (the
// prober found the broker back; the caller took back from r.recovered before
// its attempt), the rest of the wait shrinks to hold plus a jitter of at most
// recoveryJitter. until, when closed, ends the wait at once. tick, when set,
// runs at every wake-up and returns when it wants to run again (zero: never).
// retryWait reports whether ctx is still live.
func (r *Reliable) retryWait(ctx context.Context, d time.Duration, back <-chan struct{}, hold time.Duration, until <-chan struct{}, tick func() time.Time) bool {
	hold = r.recoveryHold(hold)
	deadline := time.Now().Add(d)
	for {
		var next time.Time
		if tick != nil {
			next = tick()
		}
		wait := time.Until(deadline)
		if wait <= 0 {
			return ctx.Err() == nil
		}
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), 0))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-until:
			t.Stop()
			return ctx.Err() == nil
		case <-back:
			back = nil
			deadline = time.Now().Add(r.bo.recovery(time.Until(deadline), hold))
		case <-t.C:
		}
		t.Stop()
	}
}

// pause is the prober's wait of d between its regular pings. While the bus is
// not Connected it pings every readinessInterval meanwhile, and returns true
// early when such a ping finds the broker back after a failed ping.
func (r *Reliable) pause(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	lastPing := time.Now()
	for {
		changed := r.sm.changedChan()
		now := time.Now()
		wait := deadline.Sub(now)
		if wait <= 0 {
			return ctx.Err() == nil
		}
		check := false
		if r.sm.current() != Connected {
			if due := lastPing.Add(readinessInterval).Sub(now); due < wait {
				wait, check = max(due, 0), true
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-changed:
			t.Stop()
			continue
		case <-t.C:
		}
		if !check {
			continue
		}
		lastPing = time.Now()
		if r.notePing(r.ping(ctx)) {
			return ctx.Err() == nil
		}
		if ctx.Err() != nil {
			return false
		}
	}
}

// notePing records the outcome of a ping and reports whether it found the
// broker back after a failed one; then it wakes every backoff wait. Only the
// prober calls it.
func (r *Reliable) notePing(err error) bool {
	if err != nil {
		r.pingDown = true
		r.connectionBroke()
		return false
	}
	r.kept.ok(time.Now())
	if !r.pingDown {
		return false
	}
	r.pingDown = false
	r.c.recoveries.Add(1)
	r.recovered.fire()
	return true
}
