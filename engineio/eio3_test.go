package engineio

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// Payloads as the reference implementation encodes them (engine.io-parser
// v3): lengths in UTF-16 code units, binary as "b4<base64>" or in the binary
// encoding.
func TestPayloadV3(t *testing.T) {
	frames := []frame{
		{typ: packetMessage, msg: Message{Data: []byte("héllo 😀")}},
		{typ: packetMessage, msg: Message{Data: []byte{1, 2, 3}, Binary: true}},
		{typ: packetPing},
	}
	text := string(appendPayloadV3(nil, frames))
	if want := "9:4héllo 😀6:b4AQID1:2"; text != want {
		t.Fatalf("text payload %q, want %q", text, want)
	}
	bin := appendPayloadV3Binary(nil, frames)
	want := append([]byte{0, 1, 2, 0xff}, "4héllo 😀"...) // 12 bytes
	want = append(want, 1, 4, 0xff, 4, 1, 2, 3)
	want = append(want, 0, 1, 0xff, '2')
	if !bytes.Equal(bin, want) {
		t.Fatalf("binary payload %v, want %v", bin, want)
	}
	for _, tc := range []struct {
		b      []byte
		binary bool
	}{{[]byte(text), false}, {bin, true}} {
		pkts, err := decodePayloadV3(tc.b, tc.binary)
		if err != nil || len(pkts) != 3 {
			t.Fatalf("decode %q: %v %v", tc.b, pkts, err)
		}
		if string(pkts[0].data) != "héllo 😀" || !pkts[1].binary || !bytes.Equal(pkts[1].data, []byte{1, 2, 3}) || pkts[2].typ != packetPing {
			t.Fatalf("decoded %+v", pkts)
		}
	}
	for _, bad := range []string{"", "5:4abc", "x:4", ":4", "3:4a", "2:b5AA", "1:9"} {
		if _, err := decodePayloadV3([]byte(bad), false); !errors.Is(err, errInvalidPacket) {
			t.Errorf("decode %q: err %v", bad, err)
		}
	}
	if _, err := decodePayloadV3([]byte{1, 2, 0xff, 7, 1}, true); !errors.Is(err, errInvalidPacket) {
		t.Errorf("binary packet of type 7: err %v", err)
	}
}

func FuzzDecodePayloadV3(f *testing.F) {
	f.Add([]byte("6:4hello2:4a"), false)
	f.Add([]byte("6:b4AQID1:2"), false)
	f.Add([]byte{0, 1, 0xff, '2', 1, 3, 0xff, 4, 1, 2}, true)
	f.Add([]byte("9:4héllo 😀"), false)
	f.Fuzz(func(t *testing.T, b []byte, binary bool) {
		pkts, err := decodePayloadV3(b, binary)
		if err != nil {
			if !errors.Is(err, errInvalidPacket) {
				t.Fatalf("error %v does not wrap errInvalidPacket", err)
			}
			return
		}
		frames := make([]frame, len(pkts))
		for i, p := range pkts {
			frames[i] = frame{typ: p.typ, msg: Message{Data: p.data, Binary: p.binary}}
		}
		for _, enc := range []struct {
			b      []byte
			binary bool
		}{{appendPayloadV3(nil, frames), false}, {appendPayloadV3Binary(nil, frames), true}} {
			if len(frames) == 0 {
				break
			}
			again, err := decodePayloadV3(enc.b, enc.binary)
			if err != nil {
				t.Fatalf("re-decoding %q: %v", enc.b, err)
			}
			if len(again) != len(pkts) {
				t.Fatalf("%d packets, then %d", len(pkts), len(again))
			}
			for i := range pkts {
				if again[i].typ != pkts[i].typ || again[i].binary != pkts[i].binary || !bytes.Equal(again[i].data, pkts[i].data) {
					t.Fatalf("packet %d: %+v, then %+v", i, pkts[i], again[i])
				}
			}
		}
	})
}

// TestEIO3Session: a v3 client is refused by default and, with AllowEIO3,
// pings the server (not the other way round), sends and gets binary in the
// v3 encodings over polling and WebSocket.
func TestEIO3Session(t *testing.T) {
	refused := newTestServer(t, nil)
	if res := refused.do(t, http.MethodGet, "EIO=3&transport=polling", ""); res.status != http.StatusBadRequest {
		t.Fatalf("v3 without AllowEIO3: %d %q", res.status, res.body)
	}

	// PingInterval+PingTimeout (3 s) is how long the polling phase may take
	// before the session closes, and how long the test waits for that close.
	ts := newTestServer(t, &Options{AllowEIO3: true, PingInterval: time.Second, PingTimeout: 2 * time.Second})
	res := ts.do(t, http.MethodGet, "EIO=3&transport=polling", "")
	if !strings.HasPrefix(res.body, "0:") && !strings.Contains(res.body, ":0{") {
		t.Fatalf("v3 handshake %q", res.body)
	}
	open := res.body[strings.IndexByte(res.body, ':')+1:]
	sid := parseOpen(t, open).SID
	if p := ts.eio.lookup(sid).Protocol(); p != 3 {
		t.Fatalf("Protocol = %d", p)
	}
	// The server answers pings, and a text then a binary message are echoed:
	// with binary, in the binary encoding.
	if r := ts.do(t, http.MethodPost, "EIO=3&transport=polling&sid="+sid, "6:2probe6:4hello6:b4AQID"); r.body != "ok" {
		t.Fatalf("post %d %q", r.status, r.body)
	}
	h, body := rawGet(t, ts, "EIO=3&transport=polling&sid="+sid, "")
	want := append([]byte{0, 6, 0xff}, "3probe"...)
	want = append(want, 0, 6, 0xff)
	want = append(want, "4hello"...)
	want = append(want, 1, 4, 0xff, 4, 1, 2, 3)
	if h.Get("Content-Type") != "application/octet-stream" || !bytes.Equal(body, want) {
		t.Fatalf("poll %q %v, want %v", h.Get("Content-Type"), body, want)
	}
	// No ping from the client for PingInterval+PingTimeout: closed.
	ts.rec.waitFor(t, "ping timeout", func(r *recorder) bool {
		return r.closed[sid] == ReasonPingTimeout
	})

	// WebSocket: binary messages carry their type byte.
	c := dialWS(t, ts.wsURL("EIO=3&transport=websocket"))
	if _, o := readWS(t, c); !strings.HasPrefix(o, "0{") {
		t.Fatalf("open %q", o)
	}
	writeWS(t, c, websocket.MessageText, "2")
	if _, pong := readWS(t, c); pong != "3" {
		t.Fatalf("pong %q", pong)
	}
	writeWS(t, c, websocket.MessageBinary, string([]byte{4, 9, 8}))
	typ, echo := readWS(t, c)
	if typ != websocket.MessageBinary || echo != string([]byte{4, 9, 8}) {
		t.Fatalf("binary echo %v %v", typ, []byte(echo))
	}
}
