package parser

import (
	"encoding/json"
	"testing"
)

var benchData = json.RawMessage(`["chat message",{"user":"alice","room":"lobby","text":"hello there, how are you doing today?","ts":1712345678901}]`)

func BenchmarkEncode(b *testing.B) {
	p := &Packet{Type: Event, Namespace: "/chat", Data: benchData}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchData)))
	for b.Loop() {
		_ = Encode(p)
	}
}

func BenchmarkDecode(b *testing.B) {
	text := Encode(&Packet{Type: Event, Namespace: "/chat", ID: 12, HasID: true, Data: benchData}).Text
	b.ReportAllocs()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		if _, _, err := Decode(text); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBinary(b *testing.B) {
	text := []byte(`51-["upload",{"name":"f.bin"},{"_placeholder":true,"num":0}]`)
	att := make([]byte, 4096)
	b.ReportAllocs()
	for b.Loop() {
		var d Decoder
		if _, err := d.AddText(text); err != nil {
			b.Fatal(err)
		}
		if p, err := d.AddBinary(att); err != nil || p == nil {
			b.Fatal(p, err)
		}
	}
}

func BenchmarkEventPacket(b *testing.B) {
	type msg struct {
		User string `json:"user"`
		Text string `json:"text"`
	}
	m := msg{"alice", "hello there"}
	b.ReportAllocs()
	for b.Loop() {
		p, err := EventPacket("/", "chat message", m)
		if err != nil {
			b.Fatal(err)
		}
		_ = Encode(p)
	}
}

func BenchmarkSplitArray(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SplitArray(benchData); err != nil {
			b.Fatal(err)
		}
	}
}
