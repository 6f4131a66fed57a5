package compat

import (
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/internal/redistest"
)

// The adapter conformance suite, on durasock nodes that speak the Node
// dialect to each other: the same contract as every adapter, with the
// protocol of @socket.io/redis-adapter.
func TestConformanceClassic(t *testing.T) {
	srv := redistest.Standalone(t)
	adaptertest.Run(t, adaptertest.Setup{
		Name:  "node dialect, classic",
		Nodes: 3,
		New: func(t *testing.T, n int) []adapter.Factory {
			return nodeFactories(nodeClusters(t, srv.URL(), n, Classic))
		},
	})
}

func TestConformanceSharded(t *testing.T) {
	srv := redistest.Standalone(t)
	adaptertest.Run(t, adaptertest.Setup{
		Name:  "node dialect, sharded",
		Nodes: 3,
		New: func(t *testing.T, n int) []adapter.Factory {
			return nodeFactories(nodeClusters(t, srv.URL(), n, Sharded))
		},
	})
}
