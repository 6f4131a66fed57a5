package parser

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/vmihailenco/msgpack/v5"
)

// Messages written by socket.io-msgpack-parser 3.0.2 (notepack.io 2.2) in
// Node.js, from socket.io-client style packets (with their "options" key).
var notepackVectors = []struct {
	name, hex string
	want      Packet
}{
	{"connect with auth", "83a47479706500a36e7370a12fa46461746181a5746f6b656ea3616263",
		Packet{Type: Connect, Namespace: "/", Data: json.RawMessage(`{"token":"abc"}`)}},
	{"event with every kind of value", "84a47479706502a46461746199a568656c6c6f01fbcb3ff8000000000000a2c3a9c0c381a161920102c403010203a76f7074696f6e7381a8636f6d7072657373c3a36e7370a12f",
		Packet{Type: BinaryEvent, Namespace: "/", Data: json.RawMessage(`["hello",1,-5,1.5,"é",null,true,{"a":[1,2]},{"_placeholder":true,"num":0}]`),
			Attachments: [][]byte{{1, 2, 3}}}},
	{"integers of every width, ack id, namespace", "85a47479706502a46461746196a661636b206d65cd012cce00011170cf000000012a05f200d1ff38d2fffeee90a76f7074696f6e7381a8636f6d7072657373c3a269640ca36e7370a52f63686174",
		Packet{Type: Event, Namespace: "/chat", ID: 12, HasID: true, Data: json.RawMessage(`["ack me",300,70000,5000000000,-200,-70000]`)}},
	{"undefined and Date", "84a47479706503a2696407a46461746193d4000082a178d40000a17901d7000000018cc820d88ea36e7370a12f",
		Packet{Type: Ack, Namespace: "/", ID: 7, HasID: true, Data: json.RawMessage(`[null,{"y":1},"2024-01-02T03:04:05.006Z"]`)}},
	{"ArrayBuffer and typed array", "83a47479706502a46461746193a26162c702000908c7010007a36e7370a12f",
		Packet{Type: BinaryEvent, Namespace: "/", Data: json.RawMessage(`["ab",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`),
			Attachments: [][]byte{{9, 8}, {7}}}},
	{"disconnect", "82a47479706501a36e7370a22f78", Packet{Type: Disconnect, Namespace: "/x"}},
}

func TestMsgpackDecodesNotepack(t *testing.T) {
	for _, v := range notepackVectors {
		t.Run(v.name, func(t *testing.T) {
			b, err := hex.DecodeString(v.hex)
			if err != nil {
				t.Fatal(err)
			}
			p, err := DecodeMsgpack(b, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(&v.want, p); diff != "" {
				t.Fatalf("packet (-want +got):\n%s", diff)
			}
		})
	}
}

// generic decodes a msgpack message with the library, for comparisons.
func generic(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := msgpack.Unmarshal(b, &m); err != nil {
		t.Fatalf("unmarshal %x: %v", b, err)
	}
	return m
}

func TestMsgpackEncode(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Packet
		want map[string]any
	}{
		{"connect answer", Packet{Type: Connect, Namespace: "/", Data: json.RawMessage(`{"sid":"abc","pid":"def"}`)},
			map[string]any{"type": int8(0), "nsp": "/", "data": map[string]any{"sid": "abc", "pid": "def"}}},
		{"connect error string", Packet{Type: ConnectError, Namespace: "/a", Data: json.RawMessage(`"nope"`)},
			map[string]any{"type": int8(4), "nsp": "/a", "data": "nope"}},
		{"event numbers strings escapes", Packet{Type: Event, Namespace: "/", Data: json.RawMessage(` [ "n" , 1, -2 , 3.25, 1e3, 18446744073709551615, -9223372036854775808, "a\"\\\u00e9\n", {} , [], {"k" : [true,false,null]} ] `)},
			map[string]any{"type": int8(2), "nsp": "/", "data": []any{"n", int8(1), int8(-2), 3.25, 1000.0, uint64(18446744073709551615), int64(-9223372036854775808), "a\"\\é\n",
				map[string]any{}, []any{}, map[string]any{"k": []any{true, false, nil}}}}},
		{"binary ack", Packet{Type: Ack, Namespace: "/", ID: 5, HasID: true,
			Data: json.RawMessage(`[{"f":{"num":1,"_placeholder":true}},{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{1}, {2, 3}}},
			map[string]any{"type": int8(3), "nsp": "/", "id": int8(5), "data": []any{map[string]any{"f": []byte{2, 3}}, []byte{1}}}},
		{"disconnect", Packet{Type: Disconnect, Namespace: "/x"}, map[string]any{"type": int8(1), "nsp": "/x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := Msgpack.Frames(Encode(&tc.p))
			if err != nil {
				t.Fatal(err)
			}
			if len(frames) != 1 || !frames[0].Binary {
				t.Fatalf("frames %+v: want one binary message", frames)
			}
			if diff := cmp.Diff(tc.want, generic(t, frames[0].Data)); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestMsgpackRoundTrip: what the server writes, a msgpack peer reads back as
// the same packet, so a packet forwarded between parsers is unchanged.
func TestMsgpackRoundTrip(t *testing.T) {
	for _, v := range notepackVectors {
		b, _ := hex.DecodeString(v.hex)
		p, err := DecodeMsgpack(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		out, err := EncodeMsgpack(Encode(p))
		if err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		q, err := DecodeMsgpack(out, 0)
		if err != nil {
			t.Fatalf("%s: re-decode: %v", v.name, err)
		}
		if diff := cmp.Diff(p, q); diff != "" {
			t.Fatalf("%s (-first +second):\n%s", v.name, diff)
		}
	}
}

func TestMsgpackFramesShared(t *testing.T) {
	e := Encode(&Packet{Type: Event, Namespace: "/", Data: json.RawMessage(`["x",1]`)})
	a, err := Msgpack.Frames(e)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Msgpack.Frames(e)
	if &a[0] != &b[0] {
		t.Fatal("the msgpack form is made again for each connection")
	}
	j, _ := JSON.Frames(e)
	if string(j[0].Data) != `2["x",1]` || j[0].Binary {
		t.Fatalf("JSON frames %+v", j)
	}
}

func mustMsgpack(t testing.TB, v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMsgpackRejects: the checks of socket.io-msgpack-parser's Decoder plus
// those the JSON decoder applies; every error wraps ErrInvalid.
func TestMsgpackRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrInvalid},
		{"not a map", mustMsgpack(t, []any{2, "/"}), ErrUnknownType},
		{"no type", mustMsgpack(t, map[string]any{"nsp": "/", "data": []any{"a"}}), ErrUnknownType},
		{"type 5", mustMsgpack(t, map[string]any{"type": 5, "nsp": "/", "data": []any{"a"}}), ErrUnknownType},
		{"type string", mustMsgpack(t, map[string]any{"type": "2", "nsp": "/", "data": []any{"a"}}), ErrUnknownType},
		{"type fraction", mustMsgpack(t, map[string]any{"type": 2.5, "nsp": "/", "data": []any{"a"}}), ErrUnknownType},
		{"no nsp", mustMsgpack(t, map[string]any{"type": 2, "data": []any{"a"}}), ErrInvalidNamespace},
		{"nsp number", mustMsgpack(t, map[string]any{"type": 2, "nsp": 1, "data": []any{"a"}}), ErrInvalidNamespace},
		{"event data object", mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": map[string]any{}}), ErrInvalidPayload},
		{"reserved event", mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": []any{"connect"}}), ErrInvalidPayload},
		{"disconnect data", mustMsgpack(t, map[string]any{"type": 1, "nsp": "/", "data": []any{}}), ErrInvalidPayload},
		{"connect array", mustMsgpack(t, map[string]any{"type": 0, "nsp": "/", "data": []any{}}), ErrInvalidPayload},
		{"negative id", mustMsgpack(t, map[string]any{"type": 3, "nsp": "/", "data": []any{}, "id": -1}), ErrInvalidAckID},
		{"string id", mustMsgpack(t, map[string]any{"type": 3, "nsp": "/", "data": []any{}, "id": "1"}), ErrInvalidAckID},
		{"ack without id", mustMsgpack(t, map[string]any{"type": 3, "nsp": "/", "data": []any{}}), ErrInvalidAckID},
		{"placeholder lookalike", mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": []any{"a", map[string]any{"_placeholder": true, "num": 3}}}), ErrIllegalAttachments},
		{"binary in connect", mustMsgpack(t, map[string]any{"type": 0, "nsp": "/", "data": map[string]any{"token": []byte{1, 2}}}), ErrIllegalAttachments},
		{"binary in connect error", mustMsgpack(t, map[string]any{"type": 4, "nsp": "/", "data": map[string]any{"message": "x", "data": []byte{1}}}), ErrIllegalAttachments},
		{"trailing bytes", append(mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": []any{"a"}}), 0xc0), ErrInvalid},
		{"truncated", mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": []any{"a"}})[:12], ErrInvalid},
		{"huge array header", []byte{0x83, 0xa4, 't', 'y', 'p', 'e', 2, 0xa3, 'n', 's', 'p', 0xa1, '/', 0xa4, 'd', 'a', 't', 'a', 0xdd, 0xff, 0xff, 0xff, 0xff}, ErrInvalid},
		{"huge string header", []byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}, ErrInvalid},
		{"huge ext header", []byte{0x81, 0xa1, 'x', 0xc9, 0xff, 0xff, 0xff, 0xff, 0}, ErrInvalid},
		{"too deep", append(append([]byte{0x83, 0xa4, 't', 'y', 'p', 'e', 2, 0xa3, 'n', 's', 'p', 0xa1, '/', 0xa4, 'd', 'a', 't', 'a'},
			bytes.Repeat([]byte{0x91}, maxMsgpackDepth+2)...), 0xc0), ErrInvalidPayload},
		{"unknown code", []byte{0x83, 0xa4, 't', 'y', 'p', 'e', 2, 0xa3, 'n', 's', 'p', 0xa1, '/', 0xa4, 'd', 'a', 't', 'a', 0xc1}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := DecodeMsgpack(tc.msg, 0)
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %+v, %v; want %v", p, err, tc.want)
			}
		})
	}
	dec := Msgpack.NewDecoder(0)
	if _, err := dec.Add([]byte(`2["a"]`), false); !errors.Is(err, ErrUnexpectedFormat) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("text message: %v", err)
	}
}

func TestMsgpackMaxAttachments(t *testing.T) {
	args := []any{"bin"}
	for range 3 {
		args = append(args, []byte{1})
	}
	msg := mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": args})
	if _, err := DecodeMsgpack(msg, 2); !errors.Is(err, ErrTooManyAttachments) {
		t.Fatalf("3 binaries with a limit of 2: %v", err)
	}
	p, err := DecodeMsgpack(msg, 3)
	if err != nil || len(p.Attachments) != 3 {
		t.Fatalf("limit 3: %+v %v", p, err)
	}
}

func TestMsgpackStrings(t *testing.T) {
	for _, s := range []string{"", "plain", "q\"b\\", "\x00\x1f\x7f", "\xff\xfe", "é€𝄞", "\u2028"} {
		msg := mustMsgpack(t, map[string]any{"type": 2, "nsp": "/", "data": []any{"s", s}})
		p, err := DecodeMsgpack(msg, 0)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		var got []string
		if err := json.Unmarshal(p.Data, &got); err != nil {
			t.Fatalf("%q: %s: %v", s, p.Data, err)
		}
		// Each invalid byte becomes U+FFFD, as encoding/json writes it.
		var want strings.Builder
		for _, r := range s {
			want.WriteRune(r)
		}
		if got[1] != want.String() {
			t.Fatalf("%q became %q", s, got[1])
		}
	}
}

func FuzzDecodeMsgpack(f *testing.F) {
	for _, v := range notepackVectors {
		b, _ := hex.DecodeString(v.hex)
		f.Add(b)
	}
	f.Add([]byte{0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'})
	f.Fuzz(func(t *testing.T, msg []byte) {
		p, err := DecodeMsgpack(msg, 0)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if p.Data != nil && !json.Valid(p.Data) {
			t.Fatalf("%x: invalid JSON %q", msg, p.Data)
		}
		// What was read is written back and read again unchanged.
		out, err := EncodeMsgpack(Encode(p))
		if err != nil {
			t.Fatalf("%x: encode %+v: %v", msg, p, err)
		}
		q, err := DecodeMsgpack(out, 0)
		if err != nil {
			t.Fatalf("%x: re-decode %x: %v", msg, out, err)
		}
		if !cmp.Equal(p, q) {
			t.Fatalf("%x: %+v became %+v", msg, p, q)
		}
	})
}
