package compat

import (
	"testing"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// The cost per message of the Node dialect's codec, both ways: a chat-sized
// event to one room.
func benchPacket(b *testing.B) *parser.Packet {
	p, err := parser.EventPacket("/", "chat", map[string]any{"from": "alice", "text": "hello there, how are you?", "ts": 1732950000123})
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func BenchmarkClassicBroadcastEncode(b *testing.B) {
	p := benchPacket(b)
	opts := adapter.Options{Rooms: []string{"lobby"}}
	b.ReportAllocs()
	for b.Loop() {
		pv, err := packetValue(p, "/")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := encodeMsgpack(array(str("abcdef"), pv, optsValue(opts, 0))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkClassicBroadcastDecode(b *testing.B) {
	p := benchPacket(b)
	pv, _ := packetValue(p, "/")
	msg, err := encodeMsgpack(array(str("abcdef"), pv, optsValue(adapter.Options{Rooms: []string{"lobby"}}, 0)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		o, err := decodeClassicBroadcast(msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := toPacket(o.packet, "/"); err != nil {
			b.Fatal(err)
		}
	}
}

// A peer measured in the same run: encoding/json decoding the same event into
// a generic value (what a map-based converter would do).
func BenchmarkPeerJSONUnmarshal(b *testing.B) {
	p := benchPacket(b)
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := jsonUnmarshal(p.Data, &v); err != nil {
			b.Fatal(err)
		}
	}
}
