package bench

import (
	"bytes"
	"math/bits"
	"strconv"
	"sync/atomic"
	"time"
)

// Histogram counts latencies in microseconds with about 3% precision, from 1 µs
// to over a day, in fixed memory.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    uint64
}

const histBuckets = 1280

func bucketOf(v uint64) int {
	if v < 64 {
		return int(v)
	}
	e := bits.Len64(v) - 6
	i := e*32 + int(v>>e)
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// bucketTop is the largest value of bucket i.
func bucketTop(i int) uint64 {
	if i < 64 {
		return uint64(i)
	}
	e := (i-64)/32 + 1
	lo := uint64(i-e*32) << e
	return lo + (1 << e) - 1
}

// Record adds one value in microseconds.
func (h *Histogram) Record(us uint64) {
	h.counts[bucketOf(us)]++
	h.n++
	if us > h.max {
		h.max = us
	}
}

// Merge adds o's counts.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	if o.max > h.max {
		h.max = o.max
	}
}

// Count is the number of values recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest value recorded, exactly.
func (h *Histogram) Max() uint64 { return h.max }

// Quantile returns the upper bound of the bucket holding quantile q (0..1), never
// more than Max.
func (h *Histogram) Quantile(q float64) uint64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketTop(i), h.max)
		}
	}
	return h.max
}

// appendPayload writes the JSON payload [publisher, seq, sendNanos] followed by
// padding to reach size bytes.
func appendPayload(b []byte, pub, seq int, sent int64, size int) []byte {
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(pub), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(seq), 10)
	b = append(b, ',')
	b = strconv.AppendInt(b, sent, 10)
	if pad := size - len(b) - 4; pad > 0 {
		b = append(b, `,"`...)
		for range pad {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return append(b, ']')
}

// parsePayload reads [publisher, seq, sendNanos, ...] from the event data
// ["ev", [p, s, t, ...]].
func parsePayload(data []byte) (pub, seq int, sent int64, ok bool) {
	i := bytes.IndexByte(data[1:], '[')
	if i < 0 {
		return 0, 0, 0, false
	}
	rest := data[i+2:]
	var vals [3]int64
	for k := range vals {
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		if j == 0 {
			return 0, 0, 0, false
		}
		if j > 18 {
			return 0, 0, 0, false // beyond int64
		}
		var v int64
		for _, d := range rest[:j] {
			v = v*10 + int64(d-'0')
		}
		vals[k] = v
		rest = rest[j:]
		if k < 2 {
			if len(rest) == 0 || rest[0] != ',' {
				return 0, 0, 0, false
			}
			rest = rest[1:]
		}
	}
	return int(vals[0]), int(vals[1]), vals[2], true
}

// delivery is one received event, kept for timeline analysis.
type delivery struct {
	seq        int32
	sent, recv int64 // nanoseconds since the run's base time
}

// stream is what one receiver got from one publisher.
type stream struct {
	seen      []uint64 // bitset of seqs
	maxSeq    int
	unique    int64
	dups      int64
	reordered int64
	hist      Histogram
	lastRecv  int64
	kept      []delivery
}

func (s *stream) add(seq int, sent, recv int64, keep bool) {
	w := seq >> 6
	for w >= len(s.seen) {
		s.seen = append(s.seen, 0)
	}
	bit := uint64(1) << (seq & 63)
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	if s.unique > 0 && seq < s.maxSeq {
		s.reordered++
	}
	if seq > s.maxSeq || s.unique == 0 {
		s.maxSeq = seq
	}
	s.unique++
	lat := recv - sent
	if lat < 0 {
		lat = 0
	}
	s.hist.Record(uint64(lat / 1000))
	s.lastRecv = recv
	if keep {
		s.kept = append(s.kept, delivery{seq: int32(seq), sent: sent, recv: recv})
	}
}

// maxPublishers bounds publisher ids (warm-up and phases included).
const maxPublishers = 1024

// Receiver tracks every event one client receives, per publisher, on the
// client's read goroutine. Read its results only after the client stopped or
// through the atomic counters.
type Receiver struct {
	Node    int // index of the node the client is connected to
	base    time.Time
	keep    bool
	streams [maxPublishers]*stream
	total   atomic.Int64 // unique deliveries, for progress
	bad     atomic.Int64 // events that were not relay payloads
	got     [maxPublishers]atomic.Int64
}

func newReceiver(node int, base time.Time, keep bool) *Receiver {
	return &Receiver{Node: node, base: base, keep: keep}
}

// relayPrefix starts the Socket.IO event array of RelayEvent.
var relayPrefix = []byte(`["` + RelayEvent + `",`)

// OnData takes one Socket.IO event array (["ev",[p,s,t]]) received at recv
// (nanoseconds since the run's base time), on the client's read goroutine.
func (r *Receiver) OnData(data []byte, recv int64) {
	if !bytes.HasPrefix(data, relayPrefix) {
		r.bad.Add(1)
		return
	}
	pub, seq, sent, ok := parsePayload(data)
	if !ok || pub < 0 || pub >= maxPublishers || seq < 0 {
		r.bad.Add(1)
		return
	}
	s := r.streams[pub]
	if s == nil {
		s = &stream{}
		r.streams[pub] = s
	}
	before := s.unique
	s.add(seq, sent, recv, r.keep)
	if s.unique != before {
		r.total.Add(1)
		r.got[pub].Add(1)
	}
}

// Got is the number of distinct events received from publisher pub (safe at any
// time).
func (r *Receiver) Got(pub int) int64 { return r.got[pub].Load() }
