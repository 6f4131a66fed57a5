package faults

import (
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// Scenario 7: a node starts while Redis is down. It serves its own clients at
// once (they get its events without the broker), buffers what the other nodes
// must get, and joins the cluster when Redis appears: then every event it
// emitted reaches every client of the other nodes, exactly once and in order.
//
// What the other nodes emitted before the new node joined is not owed to it:
// its subscription starts at the stream's end when it first reaches Redis. From
// then on it misses nothing: what its clients got from each other node is a
// contiguous run ending with the last event, checked like every other delivery,
// and the count of earlier events is logged (not_owed_before_join).
func TestNodeStartedWhileRedisDown(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithAOF())
	r := newRun(t, "node-started-while-redis-down", options{kind: redisbus.Streams})
	r.addNodes(srv.URL(), srv.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	killRedis(t, srv)
	r.waitDisconnected("Redis killed", r.nodes...)
	late := r.addNode(srv.URL())
	late.startPublisher()
	pause(r.outage)
	if s := late.bus.Status().State; s == bus.Connected {
		t.Errorf("the node started while Redis is down says it is %v", s)
	}
	r.checkLocal("node started while Redis is down")
	restartRedis(t, srv)
	r.waitConnected("Redis started")
	pause(steadyPhase)
	r.finish(exact, late)
}

// A node started while Redis is down must say Connected soon after it delivers
// and publishes again, not only once its first probe round is over.
//
// Its first probe round may start before its subscription is in place and never
// see that probe (the streams reader starts after it; a pub/sub subscription
// misses it). While the other nodes' traffic keeps the subscription busy, the
// round extends its wait up to maxProbeExtensions times ProbeTimeout (about 30 s
// with the defaults). The bus marks the ping healthy as soon as a ping answers
// again, before the round, so it does not report Reconnecting all that time
// (before that fix, cross-node requests failed with ErrUnavailable and /readyz
// was false for ~30 s, in about one run in two).
//
// The check: once the late node delivered messages of the others and published
// its own after Redis came back, it must say Connected within two probe
// periods (2 × (ProbeInterval + ProbeTimeout) with the defaults: 8 s). Four
// attempts, because the first probe round does not lose that race every time.
// It runs before the parallel scenarios, alone in its package: its check is a
// time bound.
func TestLateNodeReportsConnectedPromptly(t *testing.T) {
	for attempt := range 4 {
		srv := redistest.Standalone(t, redistest.WithAOF())
		r := newRun(t, "late-node-reports-connected", options{kind: redisbus.Streams})
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
		testwait.For(t, settle, "the late node to receive and publish", func() bool {
			s := late.bus.Stats()
			return s.Received > 0 && s.Published > 0
		})
		bound := 2 * (bus.DefaultProbeInterval + bus.DefaultProbeTimeout)
		report := func() {
			st := late.bus.Status()
			r.phase("attempt %d: state %v, last error %q, probes sent %d", attempt, st.State, st.LastError, late.bus.Stats().ProbesSent)
		}
		func() {
			defer onFailure(t, report)
			testwait.For(t, bound, "the late node, which delivers and publishes, to say Connected", func() bool {
				return late.bus.Status().State == bus.Connected
			})
		}()
		report()
		r.finish(exact, late)
	}
}
