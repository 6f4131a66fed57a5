package redisbus

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// TestFindSurvivor: node a writes 2 500 frames to a partition and node b 50
// more after them; FindSurvivor of a reads the stream back from a's last
// write and stops at the first frame match claims, across XREVRANGE chunks,
// within its limit, at a -2 from match, and at the start of the stream. A
// Redis that is down is an error wrapping ErrUnavailable.
func TestFindSurvivor(t *testing.T) {
	const n = 2500
	srv := redistest.Standalone(t)
	ctx := t.Context()
	o := faultOpts(Streams)
	o.Prefix, o.Partitions = "survivor", 2
	a, b := newTransport(t, srv.URL(), o), newTransport(t, srv.URL(), o)
	frames := func(tag string, from, to, p int) []bus.Frame {
		var fs []bus.Frame
		for i := from; i < to; i++ {
			fs = append(fs, bus.Frame{Partition: p, Data: fmt.Appendf(nil, "%s-%d", tag, i)})
		}
		return fs
	}
	for i := 0; i < n; i += 500 {
		publish(t, a, frames("a", i, i+500, 0))
	}
	publish(t, b, frames("b", 0, 50, 0))
	sf, ok := a.(bus.SurvivorFinder)
	if !ok {
		t.Fatal("the streams transport does not implement bus.SurvivorFinder")
	}
	// upTo claims a's frames 0..last (what a broker that lost the rest
	// holds); stop returns -2 at a's frames below it.
	matcher := func(last, stop int, calls *int) func([]byte) int {
		return func(data []byte) int {
			*calls++
			s, ok := strings.CutPrefix(string(data), "a-")
			if !ok {
				return -1
			}
			i, err := strconv.Atoi(s)
			switch {
			case err != nil:
				t.Fatalf("frame %q", data)
			case i < stop:
				return -2
			case i <= last:
				return i
			}
			return -1
		}
	}
	for _, tc := range []struct {
		name               string
		partition, limit   int
		last, stop, want   int
		minCalls, maxCalls int
	}{
		{"newest held", 0, 10_000, n - 1, -1, n - 1, 1, 51},
		{"across chunks", 0, 10_000, 1234, -1, 1234, n - 1234, n - 1234 + 50},
		{"beyond the limit", 0, 1000, 1234, -1, -1, 1000, 1000},
		{"stopped by match", 0, 10_000, 1234, 2000, -1, n - 1999, n - 1999 + 50},
		{"none held", 0, 10_000, -1, -1, -1, n, n + 50},
		{"empty partition", 1, 10_000, n - 1, -1, -1, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			got, err := sf.FindSurvivor(ctx, tc.partition, tc.limit, matcher(tc.last, tc.stop, &calls))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("FindSurvivor = %d, want %d", got, tc.want)
			}
			if calls < tc.minCalls || calls > tc.maxCalls {
				t.Errorf("match called %d times, want %d..%d", calls, tc.minCalls, tc.maxCalls)
			}
		})
	}
	if _, err := sf.FindSurvivor(ctx, 2, 10, matcher(0, -1, new(int))); !errors.Is(err, ErrBadPartition) {
		t.Errorf("partition out of range: %v, want ErrBadPartition", err)
	}
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := sf.FindSurvivor(ctx, 0, 10, matcher(0, -1, new(int))); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Redis down: %v, want ErrUnavailable", err)
	}
}

// A server demoted to a replica (Sentinel moved the primary while this node
// was cut off from it) still answers reads with what the new primary lacks:
// FindSurvivor refuses to trust it, and the bus asks again later.
func TestFindSurvivorRefusesAReplica(t *testing.T) {
	old, primary := redistest.Standalone(t), redistest.Standalone(t)
	ctx := t.Context()
	o := faultOpts(Streams)
	o.Prefix, o.Partitions = "survivor", 1
	a := newTransport(t, old.URL(), o)
	publish(t, a, []bus.Frame{{Partition: 0, Data: []byte("a-0")}, {Partition: 0, Data: []byte("a-1")}})
	sf := a.(bus.SurvivorFinder)
	match := func(data []byte) int {
		if string(data) == "a-1" {
			return 1
		}
		return -1
	}
	if i, err := sf.FindSurvivor(ctx, 0, 100, match); err != nil || i != 1 {
		t.Fatalf("on the primary: %d, %v; want 1", i, err)
	}
	if _, err := old.Do(ctx, "REPLICAOF", "127.0.0.1", strconv.Itoa(primary.Port())); err != nil {
		t.Fatal(err)
	}
	if i, err := sf.FindSurvivor(ctx, 0, 100, match); !errors.Is(err, errNotPrimary) {
		t.Fatalf("on a replica: %d, %v; want errNotPrimary", i, err)
	}
}
