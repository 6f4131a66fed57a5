package faults

import (
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// Scenario 5: the network between one node and Redis fails while the others
// keep working, through a TCP fault proxy: cut (connections reset), slow (every
// chunk delayed), and blackholed (connections stay open, no byte flows: a
// half-open link that only the liveness probe can find). The node recovers after
// each and, on streams, nothing is lost; on pub/sub every loss is a reported gap.
func TestNetworkFaults(t *testing.T) {
	t.Parallel()
	for _, kind := range []redisbus.Kind{redisbus.Streams, redisbus.PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Standalone(t, redistest.WithAOF())
			proxy := redistest.NewProxy(t, srv.Addr())
			r := newRun(t, "network-cut-slow-blackhole", options{kind: kind})
			r.addNodes(srv.URL(), srv.URL(), "redis://"+proxy.Addr())
			far := r.nodes[2]
			r.warmUp()
			r.startPublishers()
			pause(steadyPhase)

			// Cut: every connection of the far node is reset, new ones too.
			proxy.Cut()
			r.waitDisconnected("link cut", far)
			r.checkRequestsFailFast(far)
			pause(r.outage)
			r.checkLocal("link cut")
			proxy.Restore()
			r.waitConnected("link restored after the cut")
			pause(steadyPhase)

			// Slow: every chunk waits; the bus keeps up through its pipeline.
			proxy.Slow(20 * time.Millisecond)
			pause(r.outage)
			r.checkLocal("link slow")
			proxy.Restore()
			r.waitConnected("link restored after the slowdown")
			pause(steadyPhase)

			// Blackhole: a half-open link. The probe must notice it.
			before := far.bus.Stats().ProbeFailures
			proxy.Blackhole()
			func() {
				defer onFailure(t, func() {
					t.Logf("state %v, probe failures %d -> %d", far.bus.Status().State, before, far.bus.Stats().ProbeFailures)
				})
				testwait.For(t, settle, "the probe to detect the blackhole", func() bool {
					return far.bus.Stats().ProbeFailures > before && far.bus.Status().State != bus.Connected
				})
			}()
			t.Logf("blackhole detected: state %v, probe failures %d -> %d", far.bus.Status().State, before, far.bus.Stats().ProbeFailures)
			pause(r.outage)
			r.checkLocal("link blackholed")
			proxy.Restore()
			r.waitConnected("link restored after the blackhole")
			pause(steadyPhase)

			want := exact
			if kind == redisbus.PubSub {
				want = accounted
			}
			r.finish(want)
		})
	}
}
