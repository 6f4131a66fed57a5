package faults

import (
	"context"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// restartRedis starts srv again on its port, bounded by settle.
func restartRedis(t *testing.T, srv *redistest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("restart Redis: %v", err)
	}
}

func killRedis(t *testing.T, srv *redistest.Server) {
	t.Helper()
	if err := srv.Kill(); err != nil {
		t.Fatalf("kill Redis: %v", err)
	}
}

// Scenario 1: Redis is killed with SIGKILL during traffic and started again on
// the same port after the outage, with AOF (appendfsync always). On streams
// nothing is lost; on pub/sub what the broker could not deliver while
// subscriptions were down is reported as gaps, every message of it. Cross-node
// requests made during the outage fail fast. The default run also runs it on
// streams with interest routing (the events travel on the nodes' inboxes);
// -faults.routing runs every scenario so.
func TestRedisKilledAndRestartedWithAOF(t *testing.T) {
	t.Parallel()
	type variant struct {
		name    string
		kind    redisbus.Kind
		routing bool
	}
	variants := []variant{{"streams", redisbus.Streams, false}, {"pubsub", redisbus.PubSub, false}}
	if !*routingFlag {
		variants = append(variants, variant{"streams+routing", redisbus.Streams, true})
	}
	for _, v := range variants {
		kind := v.kind
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Standalone(t, redistest.WithAOF())
			r := newRun(t, "kill-restart-aof", options{kind: kind, routing: v.routing})
			r.addNodes(srv.URL(), srv.URL(), srv.URL())
			r.warmUp()
			r.startPublishers()
			pause(steadyPhase)

			killRedis(t, srv)
			r.waitDisconnected("Redis killed", r.nodes...)
			r.checkRequestsFailFast(r.nodes[0])
			pause(r.outage)
			r.checkLocal("Redis killed")
			restartRedis(t, srv)
			r.waitConnected("Redis restarted")
			pause(steadyPhase)

			want := exact
			if kind == redisbus.PubSub {
				want = accounted
			}
			r.finish(want)
		})
	}
}

// Scenario 2: Redis is killed and started again without persistence: it comes
// back empty. What was emitted during the outage waited in the outboxes and is
// not lost. To make sure the restart erases something, the link of one node
// (through a fault proxy) is blackholed for a while before the kill, so that
// the other nodes' entries written meanwhile are still unread by it when they
// vanish. What the nodes acknowledged within their retention window
// (bus.RetainConfig) they publish again, so with the default window (5 s,
// longer than the blackhole) nothing is lost; with a window shorter than the
// blackhole the older erased entries are reported as a gap, message for
// message.
func TestRedisRestartedWithoutPersistence(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		window time.Duration
	}{{"retained", 0}, {"beyond-retention", 100 * time.Millisecond}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Standalone(t, redistest.WithoutPersistence())
			proxy := redistest.NewProxy(t, srv.Addr())
			r := newRun(t, "restart-no-persistence-"+c.name, options{kind: redisbus.Streams, retain: bus.RetainConfig{Window: c.window}})
			r.addNodes(srv.URL(), srv.URL(), "redis://"+proxy.Addr())
			behind := r.nodes[2]
			r.warmUp()
			r.startPublishers()
			pause(steadyPhase)

			proxy.Blackhole() // the far node stops reading; the others keep writing
			pause(steadyPhase)
			killRedis(t, srv)
			proxy.Restore() // its connections died with Redis; new ones reach Redis when it is back
			down := r.marks()
			r.waitDisconnected("Redis killed", r.nodes...)
			pause(r.outage)
			r.checkLocal("Redis killed")
			up := r.marks()
			restartRedis(t, srv)
			r.waitConnected("Redis restarted empty")
			pause(steadyPhase)

			if c.window == 0 {
				r.finish(exact)
				r.checkWindow("during the outage", down, up)
				return
			}
			res := r.finish(accounted)
			r.checkWindow("during the outage", down, up)
			for _, o := range r.nodes[:2] {
				if res.gapMsgsPerPair[behind.idx][o.idx] == 0 {
					t.Errorf("%s reported no gap in the events of %s that the restart erased before it read them", behind.id, o.id)
				}
			}
		})
	}
}
