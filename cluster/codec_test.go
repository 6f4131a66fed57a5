package cluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/durasock/durasock/parser"
)

// sampleMessages has one message of every kind, with every field of the kind set.
func sampleMessages() []*message {
	bin := []byte{0, 1, 2, 0xff, '\r', '\n'}
	return []*message{
		{kind: kindBroadcast, nsp: "/chat", flags: flagVolatile | flagNoCompress, rooms: []string{"a", "b"}, except: []string{"c"},
			ptype: parser.BinaryEvent, data: []byte(`["m",{"_placeholder":true,"num":0}]`), attachments: [][]byte{bin, {}}},
		{kind: kindBroadcast, nsp: "/", ptype: parser.Event, data: []byte(`["hello","é"]`)},
		{kind: kindAddSockets, nsp: "/", reqID: 7, rooms: []string{"a"}, target: []string{"x", "y"}},
		{kind: kindDelSockets, nsp: "/", except: []string{"b"}, target: []string{"x"}},
		{kind: kindDisconnect, nsp: "/", reqID: 1 << 60, flags: flagCloseConn, rooms: []string{"a"}},
		{kind: kindServerEmit, nsp: "/", event: "notice", args: [][]byte{[]byte(`1`), []byte(`{"a":2}`)}},
		{kind: kindFetchRequest, nsp: "/", reqID: 2, rooms: []string{"a"}, deadline: 1_700_000_000_000},
		{kind: kindFetchResponse, nsp: "/", reqID: 2, sockets: []byte(`[{"id":"s"}]`)},
		{kind: kindEmitRequest, nsp: "/", reqID: 3, event: "q", deadline: 1_700_000_005_000},
		{kind: kindEmitResponse, nsp: "/", reqID: 3, args: [][]byte{[]byte(`"ok"`)}},
		{kind: kindAckRequest, nsp: "/", reqID: 4, rooms: []string{"r"}, ptype: parser.Event, data: []byte(`["ask"]`), deadline: 1_700_000_060_000},
		{kind: kindAckCount, nsp: "/", reqID: 4, count: 2, ids: []string{"s1", "s2"}},
		{kind: kindAckReply, nsp: "/", reqID: 4, sid: "s1", args: [][]byte{[]byte(`"s1"`)}},
		{kind: kindHeartbeat, flags: flagHello},
		{kind: kindGoodbye},
		{kind: kindUnknownNsp, nsp: "/gone", reqID: 5},
		{kind: kindApplied, nsp: "/", reqID: 6},
		{kind: kindInterest, version: 1 << 62, interest: []nspInterest{
			{nsp: "/", flags: interestSockets, rooms: bucketSet{1, 0, 1 << 63}},
			{nsp: "/chat", rooms: bucketSet{15: 1 << 40}},
			{nsp: "/all", flags: interestAll},
		}},
		{kind: kindInterest, flags: flagAnswer, version: 9, interest: []nspInterest{{nsp: "/", flags: interestSockets}}},
		{kind: kindInterestApplied, version: 1<<63 + 5, instance: 1<<64 - 1},
		{kind: kindInterestApplied, version: 3},
		{kind: kindCut, reqID: 7, version: 12, cutPart: 300, interest: []nspInterest{
			{nsp: "/", flags: interestSockets | interestKeeps, keep: 2 * time.Minute},
			{nsp: "/b", flags: interestAll},
		}},
		{kind: kindCutAnswer, reqID: 1<<64 - 1, instance: 1 << 63, cutOld: 0, cutNew: 1<<64 - 1},
		{kind: kindPeers, peers: []peerReport{
			{node: "n2", instance: 1<<63 + 3, version: 1 << 62, ago: 1500, interest: []nspInterest{
				{nsp: "/", flags: interestSockets, rooms: bucketSet{1, 0, 1 << 63}},
				{nsp: "/all", flags: interestAll},
			}},
			{node: "n3", instance: 5, version: 7},
			{node: "n3", instance: 6, version: 2},
		}},
		{kind: kindPeers},
	}
}

var messageCmp = cmp.Options{cmp.AllowUnexported(message{}, nspInterest{}, peerReport{}), cmpopts.EquateEmpty()}

func TestCodecRoundTrip(t *testing.T) {
	seen := make(map[kind]bool)
	for _, m := range sampleMessages() {
		seen[m.kind] = true
		b := m.marshal()
		got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("%s: decode: %v", m.kind, err)
		}
		if diff := cmp.Diff(m, got, messageCmp); diff != "" {
			t.Errorf("%s: round trip (-want +got):\n%s", m.kind, diff)
		}
	}
	for k := kind(1); k <= kindMax; k++ {
		if !seen[k] {
			t.Errorf("no sample of kind %s", k)
		}
	}
}

// Attachments travel as raw bytes: the message is barely larger than its content.
func TestCodecCarriesBinaryRaw(t *testing.T) {
	att := bytes.Repeat([]byte{0xff, 0}, 1<<15)
	m := &message{kind: kindBroadcast, nsp: "/", ptype: parser.BinaryEvent, data: []byte(`["b",{"_placeholder":true,"num":0}]`), attachments: [][]byte{att}}
	b := m.marshal()
	if over := len(b) - len(att) - len(m.data); over > 16 {
		t.Errorf("message is %d bytes over its content", over)
	}
	if !bytes.Contains(b, att) {
		t.Errorf("attachment not carried byte for byte")
	}
}

func TestDecodeErrors(t *testing.T) {
	valid := sampleMessages()[0].marshal()
	cases := map[string][]byte{
		"empty":     nil,
		"short":     {codecVersion, 1},
		"version":   append([]byte{9}, valid[1:]...),
		"kind 0":    {codecVersion, 0, 0, 0},
		"kind":      {codecVersion, byte(kindMax) + 1, 0, 0},
		"flags":     {codecVersion, byte(kindGoodbye), 0x80, 0},
		"truncated": valid[:len(valid)-3],
		"trailing":  append(append([]byte(nil), valid...), 1),
		"huge list": {codecVersion, byte(kindBroadcast), 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"not event": (&message{kind: kindBroadcast, nsp: "/", ptype: parser.Ack, data: []byte(`[]`)}).marshal(),
		"no array":  (&message{kind: kindBroadcast, nsp: "/", ptype: parser.Event, data: []byte(`"x"`)}).marshal(),
		"req 0":     (&message{kind: kindAckCount, nsp: "/"}).marshal(),
		// interest: version 1, one namespace "/" with unknown flags, or with
		// 129 bytes of buckets (1024 buckets are 128).
		"interest flags":   {codecVersion, byte(kindInterest), 0, 0, 1, 1, 1, '/', 0x80, 0},
		"interest buckets": append([]byte{codecVersion, byte(kindInterest), 0, 0, 1, 1, 1, '/', 1, 0x81, 1}, make([]byte, 129)...),
	}
	// A request's deadline is its last field; a request without it (a node of an
	// earlier version) decodes with deadline 0.
	for _, m := range sampleMessages() {
		if !m.kind.isRequest() {
			continue
		}
		b := m.marshal()
		n := len(binary.AppendUvarint(nil, m.deadline))
		got, err := decodeMessage(b[:len(b)-n])
		if err != nil || got.deadline != 0 {
			t.Errorf("%s without a deadline: %+v, %v; want deadline 0", m.kind, got, err)
		}
		if _, err := decodeMessage(b[:len(b)-1]); !errors.Is(err, errMalformed) {
			t.Errorf("%s with a cut deadline: %v, want errMalformed", m.kind, err)
		}
	}
	for name, b := range cases {
		if _, err := decodeMessage(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: error %v, want errMalformed", name, err)
		}
	}
}

// FuzzDecodeMessage: decoding never panics, and what decodes encodes back to
// bytes that decode to the same message.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(m.marshal())
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion, byte(kindBroadcast), 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{codecVersion, byte(kindInterestApplied), flagAnswer, 0, 0x80})
	f.Add([]byte{codecVersion, byte(kindInterestApplied), 0, 0, 1})
	f.Add([]byte{codecVersion, byte(kindInterestApplied), 0, 0, 1, 2})
	f.Add([]byte{codecVersion, byte(kindInterestApplied), 0, 0, 1, 2, 3})
	f.Add([]byte{codecVersion, byte(kindPeers), 0, 0, 1, 0, 9, 1, 0, 0})
	f.Add([]byte{codecVersion, byte(kindPeers), 0, 0, 0xff, 0xff, 0x03})
	f.Add([]byte{codecVersion, byte(kindPeers), 0, 0, 1, 1, 'n', 0xff, 0x01, 1, 0, 0xff, 0xff, 0x03})
	f.Add([]byte{codecVersion, byte(kindPeers), 0, 0, 2, 1, 'n', 1, 1, 0, 0, 1, 'n', 2, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		again, err := decodeMessage(m.marshal())
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", m.kind, err)
		}
		if diff := cmp.Diff(m, again, messageCmp); diff != "" {
			t.Fatalf("re-encoded %s differs (-first +second):\n%s", m.kind, diff)
		}
	})
}

// An interest's buckets travel without their trailing zero bytes, and decode
// back to the same set whether or not the zeros are there.
func TestInterestBucketsTrimmed(t *testing.T) {
	in := nspInterest{nsp: "/", flags: interestSockets}
	in.rooms.set(3)
	m := &message{kind: kindInterest, version: 7, interest: []nspInterest{in}}
	b := m.marshal()
	// version kind flags nsp("") version(7) count(1) nsp("/") flags len(1) 0x08
	want := []byte{codecVersion, byte(kindInterest), 0, 0, 7, 1, 1, '/', interestSockets, 1, 0x08}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoded %x, want %x", b, want)
	}
	padded := append(append([]byte(nil), want[:len(want)-2]...), 4, 0x08, 0, 0, 0)
	got, err := decodeMessage(padded)
	if err != nil {
		t.Fatalf("decode padded: %v", err)
	}
	if diff := cmp.Diff(m, got, messageCmp); diff != "" {
		t.Errorf("padded buckets (-want +got):\n%s", diff)
	}
}
