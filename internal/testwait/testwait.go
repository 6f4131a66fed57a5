// Package testwait is how the tests of the module wait: on a condition, polled
// until it holds or a deadline passes, never on a fixed sleep.
package testwait

import (
	"testing"
	"time"
)

// For polls cond (a cheap read) every 2ms until it holds; it fails t when cond
// still does not hold after within. Tests pass a generous within: it bounds a
// wait that should end, it does not assert speed.
func For(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	Every(t, 2*time.Millisecond, within, what, cond)
}

// Every is For for a cond that costs something (an HTTP request to a server
// under test, a goroutine dump): it polls every interval.
func Every(t testing.TB, interval, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", within, what)
		case <-tick.C:
		}
	}
}
