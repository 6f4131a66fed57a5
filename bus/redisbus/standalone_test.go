package redisbus

import (
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// urlFactory makes transports for one URL, closed when the test ends.
func urlFactory(url string, extra func(*Options)) factory {
	return func(t testing.TB, o Options) bus.Transport {
		t.Helper()
		o.URL = url
		if extra != nil {
			extra(&o)
		}
		tr, err := NewTransport(&o)
		if err != nil {
			t.Fatalf("NewTransport(%s): %v", url, err)
		}
		t.Cleanup(func() { closeTransport(t, tr) })
		return tr
	}
}

func TestStandalone(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t)
	for _, kind := range []Kind{Streams, PubSub} {
		t.Run(kind.String(), func(t *testing.T) {
			testTransport(t, kind, urlFactory(srv.URL(), nil))
		})
	}
}
