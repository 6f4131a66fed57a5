package bus

import (
	"math/rand/v2"
	"time"
)

// backoff computes reconnect waits: exponential with full jitter (AWS architecture
// blog, "Exponential Backoff And Jitter"), which spreads the reconnects of many
// nodes after a broker restart instead of synchronizing them.
type backoff struct {
	base, cap time.Duration
	// jitter returns a uniform value in [0, n]; replaced in tests.
	jitter func(n int64) int64
}

func newBackoff(c BackoffConfig) backoff {
	return backoff{base: c.Base, cap: c.Cap, jitter: func(n int64) int64 { return rand.Int64N(n + 1) }}
}

// ceiling is the largest wait after the attempt-th consecutive failure (1-based):
// min(cap, base*2^(attempt-1)).
func (b backoff) ceiling(attempt int) time.Duration {
	c := b.base
	for i := 1; i < attempt && c < b.cap; i++ {
		c *= 2
	}
	return min(c, b.cap)
}

// delay is the wait after the attempt-th consecutive failure.
func (b backoff) delay(attempt int) time.Duration {
	c := b.ceiling(attempt)
	if c <= 0 {
		return 0
	}
	return time.Duration(b.jitter(int64(c)))
}

// recovery is what is left of a backoff wait with remaining to go when the
// broker was found back: hold plus a jitter in [0, recoveryJitter], at most
// remaining.
func (b backoff) recovery(remaining, hold time.Duration) time.Duration {
	if remaining <= 0 {
		return 0
	}
	return min(remaining, hold+time.Duration(b.jitter(int64(recoveryJitter))))
}
