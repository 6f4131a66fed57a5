package cluster

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
)

// TestInterestVersionNeverDropsNamespace: announcements built at once while
// namespaces are added never carry, under a higher version, fewer namespaces
// than a lower version did (a peer keeps only the highest).
func TestInterestVersionNeverDropsNamespace(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, routingOptions(), func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	c := cs[0]
	type snap struct {
		v   uint64
		has map[string]bool
	}
	var mu sync.Mutex
	var got []snap
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				m := c.interestMessage()
				s := snap{v: m.version, has: map[string]bool{}}
				for _, in := range m.interest {
					s.has[in.nsp] = true
				}
				mu.Lock()
				got = append(got, s)
				mu.Unlock()
			}
		}()
	}
	const n = 200
	for i := range n {
		ns := adaptertest.NewNamespace(fmt.Sprintf("/n%d", i))
		a, err := c.Adapter(ns)
		if err != nil {
			t.Fatal(err)
		}
		ns.Bind(a)
		time.Sleep(200 * time.Microsecond)
	}
	close(stop)
	wg.Wait()
	slices.SortFunc(got, func(a, b snap) int { return int(a.v - b.v) })
	bad := 0
	seen := map[string]uint64{}
	for _, s := range got {
		for nsp, v := range seen {
			if !s.has[nsp] {
				if bad < 3 {
					t.Errorf("version %d lacks %s, announced at version %d (never closed)", s.v, nsp, v)
				}
				bad++
			}
		}
		for nsp := range s.has {
			if _, ok := seen[nsp]; !ok {
				seen[nsp] = s.v
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d (version, namespace) regressions in %d announcements", bad, len(got))
	}
}

// TestInterestDecodeBoundedAllocation: an interest message whose count
// claims more entries than it holds allocates in proportion to its size, not
// to the count times the size of an entry.
func TestInterestDecodeBoundedAllocation(t *testing.T) {
	const n = 1 << 20
	b := []byte{codecVersion, byte(kindInterest), 0, 0, 1}
	b = binary.AppendUvarint(b, n-8)
	b = append(b, make([]byte, n-len(b))...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeMessage(b)
	runtime.ReadMemStats(&after)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("decode error: %v; %d bytes in, %d MiB allocated", err, len(b), alloc>>20)
	if alloc > 16*uint64(len(b)) {
		t.Errorf("%d-byte message allocated %d MiB (%dx)", len(b), alloc>>20, alloc/uint64(len(b)))
	}
}
