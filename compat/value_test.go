package compat

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// Bytes as notepack.io 3.0 writes them (taken from its encoder's rules).
func TestMsgpackFromNotepack(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		json string
		atts int
	}{
		{"fixmap order kept", []byte{0x82, 0xa1, 'b', 0x01, 0xa1, 'a', 0x02}, `{"b":1,"a":2}`, 0},
		{"float64", []byte{0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}, `1.5`, 0},
		{"negative fixint", []byte{0xff}, `-1`, 0},
		{"uint64", []byte{0xcf, 0, 0, 0, 1, 0, 0, 0, 0}, `4294967296`, 0},
		{"bin becomes a placeholder", []byte{0x92, 0xc4, 0x02, 1, 2, 0xc0}, `[{"_placeholder":true,"num":0},null]`, 1},
		{"undefined (fixext 1 type 0)", []byte{0x91, 0xd4, 0x00, 0x00}, `[null]`, 0},
		{"timestamp 32 (a Date)", []byte{0xd6, 0xff, 0, 0, 0, 1}, `"1970-01-01T00:00:01.000Z"`, 0},
		{"timestamp 64 with ms", []byte{0xd7, 0xff, 0x77, 0x35, 0x94, 0x00, 0, 0, 0, 2}, `"1970-01-01T00:00:02.500Z"`, 0},
		{"ArrayBuffer (ext type 0)", []byte{0xc7, 0x01, 0x00, 0x07}, `{"_placeholder":true,"num":0}`, 1},
		{"NaN is null", []byte{0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1}, `null`, 0},
	}
	for _, tc := range cases {
		v, err := decodeMsgpack(tc.in)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var atts [][]byte
		got, err := rawJSON(v, &atts)
		if err != nil || string(got) != tc.json || len(atts) != tc.atts {
			t.Errorf("%s: %s (%d attachments), %v; want %s (%d)", tc.name, got, len(atts), err, tc.json, tc.atts)
		}
	}
	for _, bad := range [][]byte{{0xc6, 0xff, 0xff, 0xff, 0xff}, {0xdd, 0xff, 0xff, 0xff, 0xff}, {0xc1}, {0x92, 0x01}} {
		if _, err := decodeMsgpack(bad); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}

// A packet of durasock goes to Node and back unchanged: JSON order, numbers
// and binary attachments.
func TestPacketRoundTrip(t *testing.T) {
	p, err := parser.EventPacket("/", "ev", "s", 1.25, -3, map[string]any{"z": []byte{1, 2}, "a": nil}, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	pv, err := packetValue(p, "/")
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeMsgpack(pv)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeMsgpack(b)
	if err != nil {
		t.Fatal(err)
	}
	q, err := toPacket(back, "/")
	if err != nil {
		t.Fatal(err)
	}
	if string(q.Data) != string(p.Data) || q.Type != parser.BinaryEvent || !cmp.Equal(q.Attachments, p.Attachments) {
		t.Errorf("round trip: %s %q (type %d), want %s %q", q.Data, q.Attachments, q.Type, p.Data, p.Attachments)
	}
}

// A socket described in Node's form reads back as it was.
func TestSocketInfoRoundTrip(t *testing.T) {
	in := adapter.SocketInfo{
		ID: "sid", Rooms: []string{"sid", "r"}, Data: json.RawMessage(`{"n":1}`),
		Handshake: adapter.Handshake{
			Headers: map[string][]string{"User-Agent": {"x"}, "Set-Cookie": {"a=1", "b=2"}},
			Query:   map[string][]string{"EIO": {"4"}, "t": {"1", "2"}},
			Auth:    json.RawMessage(`{"token":"t"}`), Address: "127.0.0.1",
			Time: time.Date(2026, 1, 2, 3, 4, 5, 6e6, time.UTC), Secure: true, URL: "/socket.io/?EIO=4",
		},
	}
	v, err := socketValue(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.get("handshake").getStr("time"); got != "Fri Jan 02 2026 03:04:05 GMT+0000 (Coordinated Universal Time)" {
		t.Errorf("handshake.time %q", got)
	}
	b, err := encodeAny(v)
	if err != nil {
		t.Fatal(err)
	}
	w, err := decodeAny(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := socketInfo(w, "node")
	if err != nil {
		t.Fatal(err)
	}
	in.Node = "node"
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
}

// Pickled messages are refused before anything reads them; the JSON form of
// python-socketio 5.14 decodes, binary included.
func TestPythonDecode(t *testing.T) {
	if _, err := decodePython([]byte{0x80, 0x04, 0x95, 0x10}); err != errPickle {
		t.Errorf("pickle: %v", err)
	}
	m, err := decodePython([]byte(`{"method":"emit","event":"e","data":[["x",{"_placeholder":true,"num":0}],"AQI="],"binary":true,"namespace":"/n","room":["a","b"],"skip_sid":"s","callback":null,"host_id":"h"}`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.packet()
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Data) != `["e","x",{"_placeholder":true,"num":0}]` || p.Namespace != "/n" || len(p.Attachments) != 1 || string(p.Attachments[0]) != "\x01\x02" {
		t.Errorf("packet %s %q in %q", p.Data, p.Attachments, p.Namespace)
	}
	if got := roomList(m.room); !cmp.Equal(got, []string{"a", "b"}) {
		t.Errorf("rooms %q", got)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
