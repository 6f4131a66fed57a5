package faults

import (
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
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
