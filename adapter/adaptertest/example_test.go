package adaptertest_test

import (
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
)

// An adapter package runs the suite from one of its tests. A cluster adapter
// returns the factories of n nodes sharing one fresh broker, and stops whatever
// it started with t.Cleanup.
func ExampleRun() {
	testMemory := func(t *testing.T) {
		adaptertest.Run(t, adaptertest.Setup{
			Name:  "memory",
			Nodes: 1,
			New: func(t *testing.T, n int) []adapter.Factory {
				return []adapter.Factory{adapter.NewMemory}
			},
		})
	}
	_ = testMemory // called as a Test function of the adapter's package
}
