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

// BenchmarkEventPacketMap is the common shape of a dynamic argument: a map with
// interface values, looked into for binary without reflection.
func BenchmarkEventPacketMap(b *testing.B) {
	m := map[string]any{"user": "alice", "text": "hello everybody", "ts": 1712345678901}
	b.ReportAllocs()
	for b.Loop() {
		p, err := EventPacket("/", "news", m)
		if err != nil {
			b.Fatal(err)
		}
		_ = Encode(p)
	}
}

// BenchmarkEventPacketNestedBinary marshals a struct with a []byte field: the
// bytes become an attachment.
func BenchmarkEventPacketNestedBinary(b *testing.B) {
	type file struct {
		Name string `json:"name"`
		Data []byte `json:"data"`
	}
	f := file{"f.bin", make([]byte, 4096)}
	b.ReportAllocs()
	for b.Loop() {
		p, err := EventPacket("/", "upload", f)
		if err != nil || len(p.Attachments) != 1 {
			b.Fatal(p, err)
		}
		_ = Encode(p)
	}
}

// BenchmarkEventPacketInterfaceField marshals a struct whose interface field
// holds no binary: the value is looked at, then marshalled as encoding/json does.
func BenchmarkEventPacketInterfaceField(b *testing.B) {
	type envelope struct {
		Kind string `json:"kind"`
		Data any    `json:"data"`
	}
	e := envelope{"chat", map[string]any{"user": "alice", "text": "hello"}}
	b.ReportAllocs()
	for b.Loop() {
		p, err := EventPacket("/", "news", e)
		if err != nil {
			b.Fatal(err)
		}
		_ = Encode(p)
	}
}

// BenchmarkMsgpackEncode is the translation of one broadcast to msgpack, made
// once per packet whatever the number of msgpack clients (BenchmarkEncode is
// the JSON peer).
func BenchmarkMsgpackEncode(b *testing.B) {
	e := Encode(&Packet{Type: Event, Namespace: "/chat", Data: benchData})
	b.ReportAllocs()
	b.SetBytes(int64(len(benchData)))
	for b.Loop() {
		if _, err := EncodeMsgpack(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMsgpackDecode decodes what a socket.io-msgpack-parser client sends
// (BenchmarkDecode is the JSON peer).
func BenchmarkMsgpackDecode(b *testing.B) {
	msg, err := EncodeMsgpack(Encode(&Packet{Type: Event, Namespace: "/chat", ID: 12, HasID: true, Data: benchData}))
	if err != nil {
		b.Fatal(err)
	}
	dec := Msgpack.NewDecoder(0)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := dec.Add(msg, true); err != nil {
			b.Fatal(err)
		}
	}
}
