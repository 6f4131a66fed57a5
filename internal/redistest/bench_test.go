package redistest

import (
	"context"
	"strings"
	"testing"
)

// BenchmarkStandaloneStart measures starting a server until it answers PING, and
// stopping it.
func BenchmarkStandaloneStart(b *testing.B) {
	RequireRedisServer(b)
	ctx := context.Background()
	for b.Loop() {
		s, err := NewStandalone(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProxyRoundTrip measures a SET of 1 KiB through the proxy, to compare with
// BenchmarkDirectRoundTrip.
func BenchmarkProxyRoundTrip(b *testing.B) {
	s := Standalone(b)
	p := NewProxy(b, s.Addr())
	benchRoundTrip(b, p.Addr())
}

func BenchmarkDirectRoundTrip(b *testing.B) {
	s := Standalone(b)
	benchRoundTrip(b, s.Addr())
}

func benchRoundTrip(b *testing.B, addr string) {
	ctx := context.Background()
	c, err := dialRESP(ctx, addr, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer c.close()
	val := strings.Repeat("x", 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(val)))
	for b.Loop() {
		if _, err := c.do(ctx, "SET", "k", val); err != nil {
			b.Fatal(err)
		}
	}
}
