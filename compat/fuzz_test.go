package compat

import (
	"bytes"
	"testing"
)

// seeds are messages of every form the package decodes, as the Node packages
// and python-socketio write them.
func seeds(f *testing.F) {
	bc, _ := encodeMsgpack(array(str("emitter"),
		object().set("type", integer(2)).set("data", array(str("ev"), bin([]byte{1, 2}), object().set("a", number(1.5)))).set("nsp", str("/")),
		object().set("rooms", array(str("r"))).set("except", array()).set("flags", object().set("volatile", boolean(true)))))
	f.Add(bc)
	f.Add([]byte(`{"uid":"abc","type":2,"opts":{"rooms":["a"],"except":[]},"rooms":["x"]}`))
	f.Add([]byte(`{"uid":"abc","requestId":"r1","type":5,"opts":{"rooms":[],"except":[]}}`))
	f.Add([]byte(`{"uid":"abc","type":6,"data":["ev",1,{"k":"v"}]}`))
	f.Add([]byte(`{"requestId":"r1","sockets":[{"id":"s","handshake":{"headers":{"a":"b"},"issued":1,"query":{"q":["1","2"]},"auth":{}},"rooms":["s"],"data":{}}]}`))
	f.Add([]byte(`{"type":8,"requestId":"r","clientCount":2}`))
	f.Add([]byte(`{"uid":"u","nsp":"/","type":3,"data":{"packet":{"type":2,"data":["e"]},"opts":{"rooms":[],"except":[],"flags":{}}}}`))
	f.Add([]byte(`{"method":"emit","event":"e","data":[{"_placeholder":true,"num":0},"AQI="],"binary":true,"namespace":"/","room":["a"],"skip_sid":null,"callback":["s","/",1],"host_id":"h"}`))
	f.Add([]byte{0x80, 0x04, 0x95})
	f.Add([]byte{0xd7, 0xff, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
}

// FuzzDecode feeds bytes to every decoder of messages read from Redis: none
// may panic or allocate beyond the input, and what decodes re-encodes.
func FuzzDecode(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := decodeMsgpack(b); err == nil {
			if _, err := encodeMsgpack(v); err != nil {
				t.Fatalf("decoded msgpack does not re-encode: %v", err)
			}
			var atts [][]byte
			if _, err := rawJSON(v, &atts); err != nil {
				t.Fatalf("decoded msgpack has no JSON form: %v", err)
			}
		}
		if v, err := decodeJSON(b); err == nil {
			out, err := appendJSON(nil, v, nil)
			if err != nil {
				t.Fatalf("decoded JSON does not re-encode: %v", err)
			}
			w, err := decodeJSON(out)
			if err != nil {
				t.Fatalf("re-encoded JSON %q does not decode: %v", out, err)
			}
			if again, _ := appendJSON(nil, w, nil); !bytes.Equal(again, out) {
				t.Fatalf("JSON round trip: %q then %q", out, again)
			}
		}
		for _, dec := range []func([]byte) (*op, error){decodeClassicBroadcast, decodeClassicRequest, decodeClassicResponse, decodeSharded} {
			o, err := dec(b)
			if err != nil {
				continue
			}
			_ = o.options()
			_ = o.timeout()
			if o.packet != nil {
				_, _ = toPacket(o.packet, "/")
			}
			if o.data != nil {
				_, _, _ = eventArgs(o.data)
				_, _ = plainJSON(o.data)
			}
			if o.sockets != nil && o.sockets.kind == kArr {
				for _, s := range o.sockets.arr {
					_, _ = socketInfo(s, "n")
				}
			}
		}
		if m, err := decodePython(b); err == nil && m.method == "emit" {
			_, _ = m.packet()
		}
	})
}
