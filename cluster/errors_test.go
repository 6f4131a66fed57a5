package cluster_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/cluster"
)

// TestErrors checks the errors a caller of New and Cluster.Adapter can test
// for with errors.Is, from outside the package as a caller sees them.
func TestErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := cluster.New(nil, nil); !errors.Is(err, cluster.ErrNilBus) {
		t.Errorf("New without a bus: %v, want cluster.ErrNilBus", err)
	}
	quiet := slog.New(slog.DiscardHandler)
	b, err := bus.New(bus.NewMemoryHub().Transport(), &bus.Config{NodeID: "a", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	c, err := cluster.New(b, &cluster.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Adapter(adaptertest.NewNamespace("/")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Adapter(adaptertest.NewNamespace("/")); !errors.Is(err, cluster.ErrNamespaceTaken) {
		t.Errorf("a second adapter of a namespace: %v, want cluster.ErrNamespaceTaken", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Adapter(adaptertest.NewNamespace("/other")); !errors.Is(err, cluster.ErrClosed) {
		t.Errorf("Adapter after Close: %v, want cluster.ErrClosed", err)
	}
}
