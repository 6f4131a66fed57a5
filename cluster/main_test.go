package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's Redis Cluster client sleeps out a 5 s pause after a failed slot
		// refresh on a goroutine of its own, which may outlive a closed client; it
		// ends by itself and holds nothing of ours.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}
