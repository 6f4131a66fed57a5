package faults

import (
	"flag"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	outageFlag  = flag.Duration("faults.outage", 2500*time.Millisecond, "length of each outage")
	rateFlag    = flag.Int("faults.rate", 100, "events per second of each publisher")
	longFlag    = flag.Bool("faults.long", false, "soak: 10s outages at 200 events/s per publisher")
	logsFlag    = flag.Bool("faults.logs", false, "print the nodes' logs of passing scenarios too")
	routingFlag = flag.Bool("faults.routing", false, "run every scenario with interest routing (inbox partitions, cluster InterestRouting)")
)

// outage is the length of every outage of a run.
func outage() time.Duration {
	if *longFlag && *outageFlag < 10*time.Second {
		return 10 * time.Second
	}
	return *outageFlag
}

// rate is the events per second of every publisher.
func rate() int {
	if *longFlag && *rateFlag < 200 {
		return 200
	}
	return max(*rateFlag, 1)
}

// Every scenario starts Redis servers of its own (internal/redistest) and
// shares nothing with the others, so scenarios call t.Parallel: go test runs
// at most -parallel (GOMAXPROCS) at once. TestLateNodeReportsConnectedPromptly,
// whose check is a time bound, runs alone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// rueidis's Redis Cluster client sleeps out a pause after a failed slot
		// refresh on a goroutine of its own, which may outlive a closed client; it
		// ends by itself and holds nothing of ours.
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
	)
}
