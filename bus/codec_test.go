package bus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, e := range []envelope{
		{Kind: kindData, Origin: "n", Instance: 1, Partition: 0, Seq: 1, Time: 1, Payload: []byte("x")},
		{Kind: kindData, Origin: "n", Instance: 1, Partition: 5, Seq: 2, Time: 1, Payload: []byte("x"), Republished: true},
		{Kind: kindData, Origin: strings.Repeat("o", 255), Instance: ^uint64(0), Partition: maxPartition, Seq: ^uint64(0), Time: -1, Payload: bytes.Repeat([]byte{0xff}, 1000)},
		{Kind: kindProbe, Origin: "node-1", Instance: 7, Partition: 300, Seq: 0, Time: 123456789},
		{Kind: kindProbe, Origin: "node-1", Instance: 7, Partition: 2, Seq: 5, Time: 123456789, Payload: probePayload(1 << 40)},
		{Kind: kindDirect, Origin: "node-2", Instance: 9, Time: 5, Payload: []byte{0}},
		{Kind: kindDirect, Origin: "node-2", Instance: 9, Time: 5},
	} {
		b, err := appendEnvelope(nil, &e)
		if err != nil {
			t.Fatalf("appendEnvelope(%+v): %v", e, err)
		}
		got, err := decodeEnvelope(b, nil)
		if err != nil {
			t.Fatalf("decodeEnvelope: %v", err)
		}
		if diff := cmp.Diff(e, got); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	}
}

// TestEnvelopeLayout pins the wire format documented in codec.go and
// docs/PROTOCOL.md byte by byte.
func TestEnvelopeLayout(t *testing.T) {
	e := envelope{Kind: kindData, Origin: "ab", Instance: 0x0102030405060708, Partition: 200, Seq: 3, Time: 0x1122334455667788, Payload: []byte("hi")}
	b, err := appendEnvelope(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		1, 1, 2, 'a', 'b',
		1, 2, 3, 4, 5, 6, 7, 8,
		0xc8, 0x01, // uvarint 200
		0, 0, 0, 0, 0, 0, 0, 3,
		0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
		'h', 'i',
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding\n got %v\nwant %v", b, want)
	}
}

// TestPublishEncodingMatchesCodec checks that the hand-rolled encoding of the hot
// path (prefix plus in-place seq) equals appendEnvelope.
func TestPublishEncodingMatchesCodec(t *testing.T) {
	hub := NewMemoryHubConfig(MemoryHubConfig{Partitions: 200})
	b := newBus(t, hub, Config{NodeID: "enc", ProbeInterval: -1})
	raw := hub.Transport()
	defer raw.Close()
	frames, _ := collect(t, raw, "raw")
	key := "k"
	for p := 0; b.PartitionOf(key) < 150; p++ { // a partition above 127: two-byte uvarint
		key = string(rune('a'+p%26)) + key
	}
	if err := b.Publish(t.Context(), key, []byte("payload")); err != nil {
		t.Fatal(err)
	}
	f := recvFrames(t, frames, 1)[0]
	e, err := decodeEnvelope(f.Data, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != kindData || e.Origin != "enc" || e.Seq != 1 || e.Partition != b.PartitionOf(key) || f.Partition != e.Partition || string(e.Payload) != "payload" {
		t.Fatalf("envelope %+v", e)
	}
	again, err := appendEnvelope(nil, &e)
	if err != nil || !bytes.Equal(again, f.Data) {
		t.Fatalf("re-encoding differs: %v", err)
	}
}

func TestDecodeEnvelopeErrors(t *testing.T) {
	good, err := appendEnvelope(nil, &envelope{Kind: kindData, Origin: "n", Seq: 1, Payload: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for name, data := range map[string][]byte{
		"empty":                 nil,
		"short":                 good[:envelopeMinLen-1],
		"version 0":             mutate(func(b []byte) []byte { b[0] = 0; return b }),
		"version 2":             mutate(func(b []byte) []byte { b[0] = 2; return b }),
		"kind 0":                mutate(func(b []byte) []byte { b[1] = 0; return b }),
		"kind 9":                mutate(func(b []byte) []byte { b[1] = 9; return b }),
		"empty origin":          mutate(func(b []byte) []byte { b[2] = 0; return b }),
		"long origin":           mutate(func(b []byte) []byte { b[2] = 200; return b }),
		"seq 0":                 mutate(func(b []byte) []byte { b[3+1+8+1+7] = 0; return b }),
		"republished seq 0":     mutate(func(b []byte) []byte { b[1] = byte(kindRepublished); b[3+1+8+1+7] = 0; return b }),
		"partition 2^16":        append(append([]byte{1, 1, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0}, 0x80, 0x80, 0x04), make([]byte, 16)...),
		"non-minimal partition": append(append([]byte{1, 1, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 0}, 0x80, 0x00), append([]byte{0, 0, 0, 0, 0, 0, 0, 1}, make([]byte, 8)...)...),
		"direct with seq":       mutate(func(b []byte) []byte { b[1] = byte(kindDirect); return b }),
		"probe with payload":    mutate(func(b []byte) []byte { b[1] = byte(kindProbe); return b }),
		"probe with 9 bytes":    mutate(func(b []byte) []byte { b[1] = byte(kindProbe); return append(b, 1, 2, 3, 4, 5, 6, 7, 8) }),
		"probe with 7 bytes":    mutate(func(b []byte) []byte { b[1] = byte(kindProbe); return append(b, 1, 2, 3, 4, 5, 6) }),
		"json":                  []byte(`{"type":"broadcast","data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}`),
	} {
		if _, err := decodeEnvelope(data, nil); !errors.Is(err, errBadEnvelope) {
			t.Errorf("%s: err = %v, want errBadEnvelope", name, err)
		}
	}
	for name, e := range map[string]envelope{
		"no origin":     {Kind: kindData, Seq: 1},
		"long origin":   {Kind: kindData, Origin: strings.Repeat("x", 256), Seq: 1},
		"bad partition": {Kind: kindData, Origin: "n", Seq: 1, Partition: maxPartition + 1},
		"neg partition": {Kind: kindData, Origin: "n", Seq: 1, Partition: -1},
		"bad kind":      {Kind: 4, Origin: "n"},
	} {
		if _, err := appendEnvelope(nil, &e); !errors.Is(err, errBadEnvelope) {
			t.Errorf("%s: err = %v, want errBadEnvelope", name, err)
		}
	}
}

// TestProbeLastLayout pins the probe announcement: 8 bytes, big-endian, the whole
// payload; a probe without payload announces nothing.
func TestProbeLastLayout(t *testing.T) {
	e := envelope{Kind: kindProbe, Origin: "ab", Instance: 1, Partition: 1, Seq: 2, Time: 3, Payload: probePayload(0x0102030405060708)}
	b, err := appendEnvelope(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	if want := []byte{1, 2, 3, 4, 5, 6, 7, 8}; !bytes.Equal(b[len(b)-8:], want) {
		t.Fatalf("announcement bytes %v, want %v", b[len(b)-8:], want)
	}
	got, err := decodeEnvelope(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if last, ok := got.probeLast(); !ok || last != 0x0102030405060708 {
		t.Fatalf("probeLast = %#x, %v", last, ok)
	}
	e.Payload = nil
	if _, ok := e.probeLast(); ok {
		t.Fatal("a probe without payload announces something")
	}
	d := envelope{Kind: kindData, Origin: "ab", Seq: 1, Payload: probePayload(1)}
	if _, ok := d.probeLast(); ok {
		t.Fatal("a data envelope announces something")
	}
}

// TestProbeFirstLayout pins the announcement of a bus with inboxes: last
// then first, then (optionally) the every-round promise, 8 bytes each,
// big-endian; the decoder accepts payloads of 0, 8, 16 and 24 bytes and
// rejects any other length.
func TestProbeFirstLayout(t *testing.T) {
	e := envelope{Kind: kindProbe, Origin: "ab", Instance: 1, Partition: 9, Time: 3, Payload: probePayloadFirst(0x0102030405060708, 0x1112131415161718)}
	b, err := appendEnvelope(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}
	if !bytes.Equal(b[len(b)-16:], want) {
		t.Fatalf("announcement bytes %v, want %v", b[len(b)-16:], want)
	}
	got, err := decodeEnvelope(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	last, ok := got.probeLast()
	first, okFirst := got.probeFirst()
	if !ok || !okFirst || last != 0x0102030405060708 || first != 0x1112131415161718 {
		t.Fatalf("probeLast = %#x, %v; probeFirst = %#x, %v", last, ok, first, okFirst)
	}
	e.Payload = probePayload(5)
	if _, ok := e.probeFirst(); ok {
		t.Fatal("an 8-byte announcement carries a first time")
	}
	if got.probeLive() != 0 {
		t.Fatal("a 16-byte announcement carries a promise")
	}
	// With the promise to announce every round for a duration (nanoseconds).
	e.Payload = binary.BigEndian.AppendUint64(probePayloadFirst(7, 8), uint64(6*time.Second))
	b, err = appendEnvelope(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	if got, err = decodeEnvelope(b, nil); err != nil {
		t.Fatal(err)
	}
	last, ok = got.probeLast()
	first, okFirst = got.probeFirst()
	if !ok || !okFirst || last != 7 || first != 8 || got.probeLive() != 6*time.Second {
		t.Fatalf("probeLast = %d, probeFirst = %d, probeLive = %v", last, first, got.probeLive())
	}
	for _, n := range []int{1, 7, 9, 12, 15, 17, 23, 25, 32} {
		e.Payload = make([]byte, n)
		b, err := appendEnvelope(nil, &e)
		if err == nil {
			t.Fatalf("a probe payload of %d bytes encodes", n)
		}
		b = append(b[:0], envelopeVersion, byte(kindProbe), 2, 'a', 'b')
		b = append(b, make([]byte, 8+1+16+n)...)
		if _, err := decodeEnvelope(b, nil); !errors.Is(err, errBadEnvelope) {
			t.Fatalf("a probe payload of %d bytes decodes: %v", n, err)
		}
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, e := range []envelope{
		{Kind: kindData, Origin: "node-a", Instance: 42, Partition: 3, Seq: 17, Time: 1700000000000000000, Payload: []byte(`{"ev":"x"}`)},
		{Kind: kindData, Origin: "n", Partition: 300, Seq: 1},
		{Kind: kindData, Origin: "node-a", Instance: 42, Partition: 3, Seq: 17, Time: 1, Payload: []byte("x"), Republished: true},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 1, Seq: 99},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 1, Seq: 100, Payload: probePayload(12345)},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 0, Seq: 1, Payload: probePayload(^uint64(0))},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 300, Payload: probePayloadFirst(7, 1700000000000000000)},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 2, Payload: binary.BigEndian.AppendUint64(probePayloadFirst(7, 1700000000000000000), uint64(6*time.Second))},
		{Kind: kindProbe, Origin: "node-b", Instance: 1, Partition: 4, Seq: finalRound, Payload: probePayloadFirst(^uint64(0), -1)},
		{Kind: kindDirect, Origin: "node-c", Payload: []byte("reply")},
	} {
		b, err := appendEnvelope(nil, &e)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{1})
	f.Add([]byte{1, 1, 255})
	f.Add([]byte("2[\"event\",\"data\"]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := decodeEnvelope(data, nil)
		if err != nil {
			if !errors.Is(err, errBadEnvelope) {
				t.Fatalf("error %v does not wrap errBadEnvelope", err)
			}
			return
		}
		// A probe announces with an 8-, 16- or 24-byte payload; the 16- and
		// 24-byte ones carry a first time, only the 24-byte one a promise.
		_, announces := e.probeLast()
		_, hasFirst := e.probeFirst()
		live := e.probeLive()
		if n := len(e.Payload); e.Kind == kindProbe && (announces != (n == 8 || n == 16 || n == 24) || hasFirst != (n == 16 || n == 24) || (n != 24 && live != 0)) {
			t.Fatalf("probe payload of %d bytes: announces %v, first %v, live %v", n, announces, hasFirst, live)
		}
		// A valid envelope has exactly one encoding.
		again, err := appendEnvelope(nil, &e)
		if err != nil {
			t.Fatalf("decoded envelope does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, data)
		}
	})
}
