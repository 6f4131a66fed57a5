package redisbus

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// After a Redis Cluster topology change, rueidis closes the connections it
	// dropped 5 s later from a goroutine of its own that no Close waits for; it
	// ends by itself.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"))
}
