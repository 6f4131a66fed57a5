package engineio

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestDecodePayload(t *testing.T) {
	pkts, err := decodePayload([]byte("4hello\x1ebAQIDBA==\x1e3\x1e4"))
	if err != nil {
		t.Fatal(err)
	}
	want := []packet{
		{typ: packetMessage, data: []byte("hello")},
		{typ: packetMessage, data: []byte{1, 2, 3, 4}, binary: true},
		{typ: packetPong, data: []byte{}},
		{typ: packetMessage, data: []byte{}},
	}
	if len(pkts) != len(want) {
		t.Fatalf("got %d packets", len(pkts))
	}
	for i := range want {
		if pkts[i].typ != want[i].typ || pkts[i].binary != want[i].binary || !bytes.Equal(pkts[i].data, want[i].data) {
			t.Errorf("packet %d = %+v, want %+v", i, pkts[i], want[i])
		}
	}
	for _, bad := range []string{"", "\x1e", "4a\x1e", "x", "7", "b***", "bAQ=\x1eq"} {
		if _, err := decodePayload([]byte(bad)); !errors.Is(err, errInvalidPacket) {
			t.Errorf("decodePayload(%q) = %v, want errInvalidPacket", bad, err)
		}
	}
}

func TestAppendPayload(t *testing.T) {
	frames := []frame{
		{typ: packetMessage, msg: Message{Data: []byte("hello")}},
		{typ: packetMessage, msg: Message{Data: []byte{1, 2, 3, 4}, Binary: true}},
		{typ: packetPing},
	}
	got := appendPayload(nil, frames)
	if want := "4hello\x1ebAQIDBA==\x1e2"; string(got) != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if n := payloadLen(frames); n != len(got) {
		t.Errorf("payloadLen = %d, want %d", n, len(got))
	}
}

func TestOpenPacketData(t *testing.T) {
	got := string(openPacketData("abc", []string{"websocket"}, 25*time.Second, 20*time.Second, 1e6))
	want := `{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`
	if got != want {
		t.Errorf("got %s", got)
	}
}

func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{"0", "1", "2", "2probe", "3probe", "4hello", "4", "5", "6", "", "7", "abc", "4\x00\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePacket(b)
		if err != nil {
			if !errors.Is(err, errInvalidPacket) {
				t.Fatalf("error %v does not wrap errInvalidPacket", err)
			}
			return
		}
		if p.typ < packetOpen || p.typ > packetNoop || !bytes.Equal(append([]byte{p.typ}, p.data...), b) {
			t.Fatalf("decodePacket(%q) = %+v", b, p)
		}
	})
}

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{"4hello", "4test1\x1e4test2\x1e4test3", "4hello\x1ebAQIDBA==", "3", "1", "abc", "\x1e", "b", "bAQ", "b!!", "4a\x1e\x1e4b", "2probe\x1e5"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pkts, err := decodePayload(b)
		if err != nil {
			if !errors.Is(err, errInvalidPacket) {
				t.Fatalf("error %v does not wrap errInvalidPacket", err)
			}
			return
		}
		// Re-encoding what was decoded and decoding again gives the same packets.
		frames := make([]frame, len(pkts))
		for i, p := range pkts {
			frames[i] = frame{typ: p.typ, msg: Message{Data: p.data, Binary: p.binary}}
		}
		enc := appendPayload(nil, frames)
		again, err := decodePayload(enc)
		if err != nil {
			t.Fatalf("re-decoding %q: %v", enc, err)
		}
		if len(again) != len(pkts) {
			t.Fatalf("%d packets, then %d", len(pkts), len(again))
		}
		for i := range pkts {
			if again[i].typ != pkts[i].typ || again[i].binary != pkts[i].binary || !bytes.Equal(again[i].data, pkts[i].data) {
				t.Fatalf("packet %d: %+v, then %+v", i, pkts[i], again[i])
			}
		}
	})
}

var benchFrames = func() []frame {
	text := Message{Data: bytes.Repeat([]byte(`["chat","hello world"]`), 4)}
	bin := Message{Data: bytes.Repeat([]byte{0xde, 0xad}, 64), Binary: true}
	return []frame{{typ: packetMessage, msg: text}, {typ: packetMessage, msg: bin}, {typ: packetMessage, msg: text}, {typ: packetPing}}
}()

func BenchmarkEncodePayload(b *testing.B) {
	b.ReportAllocs()
	buf := make([]byte, 0, 1024)
	for b.Loop() {
		buf = appendPayload(buf[:0], benchFrames)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodePayload(b *testing.B) {
	enc := appendPayload(nil, benchFrames)
	b.ReportAllocs()
	b.SetBytes(int64(len(enc)))
	for b.Loop() {
		if _, err := decodePayload(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePacket(b *testing.B) {
	msg := []byte(`42["chat","hello world"]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodePacket(msg); err != nil {
			b.Fatal(err)
		}
	}
}
