package cluster

import (
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
)

// factories returns the Adapter methods of cs.
func factories(cs []*Cluster) []adapter.Factory {
	out := make([]adapter.Factory, len(cs))
	for i, c := range cs {
		out[i] = c.Adapter
	}
	return out
}

func TestConformanceMemoryHub(t *testing.T) {
	adaptertest.Run(t, adaptertest.Setup{
		Name:  "cluster on a memory hub",
		Nodes: 3,
		New: func(t *testing.T, n int) []adapter.Factory {
			_, cs := memoryNodes(t, n, nil)
			return factories(cs)
		},
	})
}
