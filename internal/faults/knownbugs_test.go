package faults

import (
	"flag"
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

var knownBugsFlag = flag.Bool("faults.known-bugs", false, "run the tests of known, not yet fixed defects (they fail)")

// A bus whose first probe round starts before its subscription is in place never
// sees that probe (the streams reader starts after it; a pub/sub subscription
// misses it). While the other nodes' traffic keeps the subscription busy, the
// probe round extends its wait maxProbeExtensions times ProbeTimeout (about
// 30 s with the defaults), and the ping component is marked healthy only after
// the round: the bus reports Reconnecting for ~30 s while it publishes and
// receives normally, so cross-node requests fail with ErrUnavailable and
// /readyz is false. Seen in TestNodeStartedWhileRedisDown (streams, about one
// run in two) and TestNetworkFaults/pubsub after the cut.
//
// The check: once the late node delivered messages of the others and published
// its own after Redis came back, it must say Connected within two probe
// periods (2 × (ProbeInterval + ProbeTimeout) with the defaults: 8 s).
func TestKnownBugProbeStallAfterFirstSubscribe(t *testing.T) {
	if !*knownBugsFlag {
		t.Skip("known defect of package bus (probe round extension); run with -faults.known-bugs")
	}
	for attempt := range 4 {
		srv := redistest.Standalone(t, redistest.WithAOF())
		r := newRun(t, "known-bug-probe-stall", options{kind: redisbus.Streams})
		r.addNodes(srv.URL(), srv.URL())
		r.warmUp()
		r.startPublishers()
		pause(steadyPhase)
		killRedis(t, srv)
		r.waitDisconnected("Redis killed", r.nodes...)
		late := r.addNode(srv.URL())
		late.startPublisher()
		pause(r.outage)
		restartRedis(t, srv)
		if !waitFor(settle, func() bool {
			s := late.bus.Stats()
			return s.Received > 0 && s.Published > 0
		}) {
			t.Fatalf("the late node neither received nor published within %v", settle)
		}
		bound := 2 * (bus.DefaultProbeInterval + bus.DefaultProbeTimeout)
		ok := waitFor(bound, func() bool { return late.bus.Status().State == bus.Connected })
		st := late.bus.Status()
		r.phase("attempt %d: state %v, last error %q, probes sent %d", attempt, st.State, st.LastError, late.bus.Stats().ProbesSent)
		if !ok {
			t.Fatalf("the late node delivers and publishes but still says %v %v later (last error %q)", st.State, bound, st.LastError)
		}
		r.finish(exact, late)
	}
}
