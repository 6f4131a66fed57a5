package redisbus

import (
	"testing"

	"go.uber.org/goleak"
)

// Tests that start Redis servers of their own (internal/redistest) and wait
// for them (failovers, restarts, migrations) call t.Parallel: they share no
// state, and most of their time is spent waiting on Redis, not on the CPU.
// go test runs at most -parallel (GOMAXPROCS) of them at once.
func TestMain(m *testing.M) {
	// After a Redis Cluster topology change, rueidis closes the connections it
	// dropped 5 s later from a goroutine of its own that no Close waits for; it
	// ends by itself. After a redirection (MOVED, ASK) it refreshes its slot
	// map from a goroutine that sleeps about 1 s first, also unwaited by
	// Close, and also ending by itself.
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}
