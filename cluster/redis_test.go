package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// prefixes keeps the clusters of one test process apart on a shared Redis.
var prefixes atomic.Uint64

// redisBuses returns a newBus for startNodes: buses of one fresh cluster on url.
func redisBuses(t testing.TB, url string, kind redisbus.Kind) func(id string) bus.Bus {
	prefix := fmt.Sprintf("durasock-test-%d", prefixes.Add(1))
	return func(id string) bus.Bus {
		t.Helper()
		b, err := redisbus.Open(context.Background(), url, &redisbus.Options{
			Kind:   kind,
			Prefix: prefix,
			Bus:    bus.Config{NodeID: id, Logger: quietLogger},
		})
		if err != nil {
			t.Fatalf("redisbus.Open(%s): %v", url, err)
		}
		return b
	}
}

// runRedisConformance runs the adapter conformance suite on url with both
// transports.
func runRedisConformance(t *testing.T, name, url string) {
	for _, kind := range []redisbus.Kind{redisbus.Streams, redisbus.PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			adaptertest.Run(t, adaptertest.Setup{
				Name:  "cluster on " + name + " " + kind.String(),
				Nodes: 3,
				New: func(t *testing.T, n int) []adapter.Factory {
					w := newWarmUp()
					cs := startNodes(t, n, nil, w.wrap(redisBuses(t, url, kind)))
					w.wait(t, cs)
					return factories(cs)
				},
			})
		})
	}
}

func TestConformanceRedisStandalone(t *testing.T) {
	t.Parallel() // its own Redis servers, its own prefixes
	srv := redistest.Standalone(t)
	runRedisConformance(t, "redis", srv.URL())
}

func TestConformanceRedisSentinel(t *testing.T) {
	t.Parallel() // its own Redis servers, its own prefixes
	set := redistest.Sentinel(t)
	runRedisConformance(t, "redis sentinel", set.URL())
}

func TestConformanceRedisCluster(t *testing.T) {
	t.Parallel() // its own Redis servers, its own prefixes
	set := redistest.Cluster(t)
	runRedisConformance(t, "redis cluster", set.URL())
}
