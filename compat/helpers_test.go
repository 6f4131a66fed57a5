package compat

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
)

var quietLogger = slog.New(slog.NewTextHandler(io.Discard, nil))

// keys keeps the clusters of one test process apart on one Redis.
var keys atomic.Uint64

func newKey() string { return fmt.Sprintf("compat-test-%d-%d", time.Now().UnixNano()%1e6, keys.Add(1)) }

// redisClient returns a client of url, closed by t.Cleanup.
func redisClient(t testing.TB, url string) rueidis.Client {
	t.Helper()
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		t.Fatalf("ParseURL(%s): %v", url, err)
	}
	opt.DisableCache = true
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("NewClient(%s): %v", url, err)
	}
	t.Cleanup(c.Close)
	return c
}

// nodeClusters starts n NodeClusters of one fresh cluster on url.
func nodeClusters(t testing.TB, url string, n int, mode Mode) []*NodeCluster {
	t.Helper()
	key := newKey()
	out := make([]*NodeCluster, n)
	for i := range out {
		c, err := NewNodeCluster(redisClient(t, url), &Options{Mode: mode, Key: key, Logger: quietLogger, RequestTimeout: 10 * time.Second})
		if err != nil {
			t.Fatalf("NewNodeCluster: %v", err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := c.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		out[i] = c
	}
	return out
}

func nodeFactories(cs []*NodeCluster) []adapter.Factory {
	out := make([]adapter.Factory, len(cs))
	for i, c := range cs {
		out[i] = c.Adapter
	}
	return out
}
