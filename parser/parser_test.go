package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeValid(t *testing.T) {
	tests := []struct {
		in   string
		want Packet
		n    int
	}{
		{"0", Packet{Type: Connect, Namespace: "/"}, 0},
		{`0{"token":"123"}`, Packet{Type: Connect, Namespace: "/", Data: json.RawMessage(`{"token":"123"}`)}, 0},
		{"0/custom,", Packet{Type: Connect, Namespace: "/custom"}, 0},
		{"0/custom", Packet{Type: Connect, Namespace: "/custom"}, 0},
		{`0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}`, Packet{Type: Connect, Namespace: "/admin", Data: json.RawMessage(`{"sid":"oSO0OpakMV_3jnilAAAA"}`)}, 0},
		{"1/admin,", Packet{Type: Disconnect, Namespace: "/admin"}, 0},
		{"1", Packet{Type: Disconnect, Namespace: "/"}, 0},
		{`2["hello",1]`, Packet{Type: Event, Namespace: "/", Data: json.RawMessage(`["hello",1]`)}, 0},
		{`2/admin,456["project:delete",123]`, Packet{Type: Event, Namespace: "/admin", ID: 456, HasID: true, Data: json.RawMessage(`["project:delete",123]`)}, 0},
		{`2[1,"2"]`, Packet{Type: Event, Namespace: "/", Data: json.RawMessage(`[1,"2"]`)}, 0},
		{`3/admin,456[]`, Packet{Type: Ack, Namespace: "/admin", ID: 456, HasID: true, Data: json.RawMessage(`[]`)}, 0},
		{`3456`, Packet{Type: Ack, Namespace: "/", ID: 456, HasID: true}, 0},
		{`4{"message":"Not authorized"}`, Packet{Type: ConnectError, Namespace: "/", Data: json.RawMessage(`{"message":"Not authorized"}`)}, 0},
		{`4"nope"`, Packet{Type: ConnectError, Namespace: "/", Data: json.RawMessage(`"nope"`)}, 0},
		{`51-["hello",{"_placeholder":true,"num":0}]`, Packet{Type: BinaryEvent, Namespace: "/", Data: json.RawMessage(`["hello",{"_placeholder":true,"num":0}]`)}, 1},
		{`61-/admin,456[{"_placeholder":true,"num":0}]`, Packet{Type: BinaryAck, Namespace: "/admin", ID: 456, HasID: true, Data: json.RawMessage(`[{"_placeholder":true,"num":0}]`)}, 1},
		{`2 [ "a" , 2 ]`, Packet{Type: Event, Namespace: "/", Data: json.RawMessage(` [ "a" , 2 ]`)}, 0},
		{`218446744073709551615["x"]`, Packet{Type: Event, Namespace: "/", ID: 18446744073709551615, HasID: true, Data: json.RawMessage(`["x"]`)}, 0},
	}
	for _, tt := range tests {
		p, n, err := Decode([]byte(tt.in))
		if err != nil {
			t.Errorf("Decode(%q): %v", tt.in, err)
			continue
		}
		if n != tt.n {
			t.Errorf("Decode(%q) attachments = %d, want %d", tt.in, n, tt.n)
		}
		if diff := cmp.Diff(&tt.want, p); diff != "" {
			t.Errorf("Decode(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestDecodeInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want error
	}{
		{"", ErrInvalid},
		{"abc", ErrUnknownType},
		{"7", ErrUnknownType},
		{"4abc", ErrInvalidPayload},
		{"2{}", ErrInvalidPayload},
		{`2abc["message-with-ack",1]`, ErrInvalidPayload},
		{"2", ErrInvalidPayload},
		{"2[]", ErrInvalidPayload},
		{`2[{}]`, ErrInvalidPayload},
		{`2["disconnect"]`, ErrInvalidPayload},
		{`2["connect",1]`, ErrInvalidPayload},
		{`2["a"`, ErrInvalidPayload},
		{`2["a"]x`, ErrInvalidPayload},
		{`3["a"]`, ErrInvalidAckID},
		{`31{}`, ErrInvalidPayload},
		{`0[]`, ErrInvalidPayload},
		{`0"x"`, ErrInvalidPayload},
		{`1{}`, ErrInvalidPayload},
		{`4[]`, ErrInvalidPayload},
		{`5["a"]`, ErrIllegalAttachments},
		{`5-["a"]`, ErrIllegalAttachments},
		{`5x-["a"]`, ErrIllegalAttachments},
		{`51`, ErrIllegalAttachments},
		{`51234567890-["a"]`, ErrIllegalAttachments},
		{`618446744073709551616["x"]`, ErrIllegalAttachments},
		{`218446744073709551616["x"]`, ErrInvalidAckID},
		{`012{}`, ErrInvalidAckID},
	}
	for _, tt := range tests {
		p, _, err := Decode([]byte(tt.in))
		if !errors.Is(err, tt.want) {
			t.Errorf("Decode(%q) = %+v, %v; want %v", tt.in, p, err, tt.want)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Decode(%q) error %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		p    Packet
		want string
	}{
		{Packet{Type: Connect, Namespace: "/"}, "0"},
		{Packet{Type: Connect, Namespace: "/admin", Data: json.RawMessage(`{"sid":"x"}`)}, `0/admin,{"sid":"x"}`},
		{Packet{Type: Disconnect, Namespace: "/admin"}, "1/admin,"},
		{Packet{Type: Event, Namespace: "", Data: json.RawMessage(`["a", 1]`)}, `2["a", 1]`},
		{Packet{Type: Event, Namespace: "/x", ID: 12, HasID: true, Data: json.RawMessage(`["a"]`)}, `2/x,12["a"]`},
		{Packet{Type: Ack, Namespace: "/", ID: 0, HasID: true, Data: json.RawMessage(`[]`)}, `30[]`},
		{Packet{Type: Event, Namespace: "/", Data: json.RawMessage(`["a",{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{1}}}, `51-["a",{"_placeholder":true,"num":0}]`},
		{Packet{Type: Ack, Namespace: "/", ID: 789, HasID: true, Data: json.RawMessage(`[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`), Attachments: [][]byte{{1}, {2}}}, `62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`},
		{Packet{Type: BinaryEvent, Namespace: "/", Data: json.RawMessage(`["a"]`)}, `50-["a"]`},
		{Packet{Type: ConnectError, Namespace: "/random", Data: json.RawMessage(`{"message":"Invalid namespace"}`)}, `4/random,{"message":"Invalid namespace"}`},
	}
	for _, tt := range tests {
		e := Encode(&tt.p)
		if string(e.Text) != tt.want {
			t.Errorf("Encode(%+v) = %q, want %q", tt.p, e.Text, tt.want)
		}
		if len(e.Attachments) != len(tt.p.Attachments) {
			t.Errorf("Encode(%+v) attachments = %d, want %d", tt.p, len(e.Attachments), len(tt.p.Attachments))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	packets := []*Packet{
		{Type: Connect, Namespace: "/"},
		{Type: Connect, Namespace: "/a/b", Data: json.RawMessage(`{"k":[1,2,{"z":"é"}],"a":null}`)},
		{Type: Disconnect, Namespace: "/chat"},
		{Type: Event, Namespace: "/", Data: json.RawMessage(`["msg",{"b":1,"a":2},"x\"y"]`)},
		{Type: Event, Namespace: "/n", ID: 99, HasID: true, Data: json.RawMessage(`[42]`)},
		{Type: Ack, Namespace: "/", ID: 7, HasID: true, Data: json.RawMessage(`[]`)},
		{Type: ConnectError, Namespace: "/n", Data: json.RawMessage(`{"message":"m","data":{"x":1}}`)},
		{Type: BinaryEvent, Namespace: "/", Data: json.RawMessage(`["up",{"_placeholder":true,"num":0},{"nested":{"_placeholder":true,"num":1}}]`), Attachments: [][]byte{{1, 2, 3}, {}}},
		{Type: BinaryAck, Namespace: "/z", ID: 3, HasID: true, Data: json.RawMessage(`[{"_placeholder":true,"num":0}]`), Attachments: [][]byte{{9}}},
	}
	for _, p := range packets {
		e := Encode(p)
		var d Decoder
		got, err := d.AddText(e.Text)
		for i := 0; err == nil && i < len(e.Attachments); i++ {
			if got != nil {
				t.Fatalf("packet %q complete before attachment %d", e.Text, i)
			}
			got, err = d.AddBinary(e.Attachments[i])
		}
		if err != nil {
			t.Fatalf("decode %q: %v", e.Text, err)
		}
		if got == nil {
			t.Fatalf("decode %q: incomplete", e.Text)
		}
		if got.Attachments == nil && len(p.Attachments) == 0 {
			got.Attachments = p.Attachments
		}
		if diff := cmp.Diff(p, got); diff != "" {
			t.Errorf("round trip %q (-want +got):\n%s", e.Text, diff)
		}
	}
}

func TestDecoderErrors(t *testing.T) {
	var d Decoder
	if _, err := d.AddBinary([]byte{1}); !errors.Is(err, ErrUnexpectedBinary) {
		t.Fatalf("AddBinary without packet: %v", err)
	}
	p, err := d.AddText([]byte(`52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`))
	if p != nil || err != nil || !d.Pending() {
		t.Fatalf("AddText binary = %v, %v, pending %v", p, err, d.Pending())
	}
	if _, err := d.AddText([]byte(`2["a"]`)); !errors.Is(err, ErrUnexpectedText) {
		t.Fatalf("text while reconstructing: %v", err)
	}
	if d.Pending() {
		t.Fatal("decoder still pending after error")
	}

	d.MaxAttachments = 2
	if _, err := d.AddText([]byte(`53-["a"]`)); !errors.Is(err, ErrTooManyAttachments) {
		t.Fatalf("too many attachments: %v", err)
	}
	// A placeholder naming an attachment that does not exist.
	if _, err := d.AddText([]byte(`51-["a",{"_placeholder":true,"num":1}]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.AddBinary([]byte{1}); !errors.Is(err, ErrIllegalAttachments) {
		t.Fatalf("placeholder out of range: %v", err)
	}
	if _, err := d.AddText([]byte(`50-["a",{"_placeholder":true,"num":0}]`)); !errors.Is(err, ErrIllegalAttachments) {
		t.Fatalf("placeholder with no attachments: %v", err)
	}
	p, err = d.AddText([]byte(`50-["a"]`))
	if err != nil || p == nil {
		t.Fatalf("binary event without attachments = %v, %v", p, err)
	}
}

func TestEventPacket(t *testing.T) {
	type msg struct {
		Text string `json:"text"`
		N    int    `json:"n"`
	}
	p, err := EventPacket("/chat", "message", json.RawMessage(`{"z":1, "a":2}`), []byte{1, 2}, "s", 3, msg{"hi", 4}, nil, []byte{3})
	if err != nil {
		t.Fatal(err)
	}
	want := `["message",{"z":1, "a":2},{"_placeholder":true,"num":0},"s",3,{"text":"hi","n":4},null,{"_placeholder":true,"num":1}]`
	if string(p.Data) != want {
		t.Fatalf("data = %s\nwant   %s", p.Data, want)
	}
	if diff := cmp.Diff([][]byte{{1, 2}, {3}}, p.Attachments); diff != "" {
		t.Fatal(diff)
	}
	if got := string(Encode(p).Text); got != `52-/chat,`+want {
		t.Fatalf("encoded %s", got)
	}
	if _, err := EventPacket("/", "x", json.RawMessage(`{`)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("invalid raw: %v", err)
	}
	if _, err := EventPacket("/", "x", make(chan int)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unmarshallable: %v", err)
	}
	a, err := AckPacket("/", 5, "ok")
	if err != nil || string(Encode(a).Text) != `35["ok"]` {
		t.Fatalf("ack = %v, %v", a, err)
	}
	a, err = AckPacket("/", 5)
	if err != nil || string(Encode(a).Text) != `35[]` {
		t.Fatalf("empty ack = %v, %v", a, err)
	}
}

func TestSplitArrayAndName(t *testing.T) {
	data := json.RawMessage(` [ "ev" , {"a":[1,"],"]} ,"x\"]," , 3.5e1,[[]] ] `)
	args, err := SplitArray(data)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`"ev"`, `{"a":[1,"],"]}`, `"x\"],"`, `3.5e1`, `[[]]`}
	if len(args) != len(want) {
		t.Fatalf("got %d args %q", len(args), args)
	}
	for i := range want {
		if string(args[i]) != want[i] {
			t.Errorf("arg %d = %s, want %s", i, args[i], want[i])
		}
	}
	name, err := EventName(data)
	if err != nil || name != "ev" {
		t.Fatalf("EventName = %q, %v", name, err)
	}
	if args, err := SplitArray(json.RawMessage(`[]`)); err != nil || len(args) != 0 {
		t.Fatalf("empty array = %q, %v", args, err)
	}
	if _, err := SplitArray(json.RawMessage(`{}`)); !errors.Is(err, ErrInvalidPayload) {
		t.Fatalf("object: %v", err)
	}
}

func TestResolveBinary(t *testing.T) {
	atts := [][]byte{{1, 2, 3}, {4}}
	in := json.RawMessage(`{"file":{"_placeholder":true,"num":1},"list":[{"_placeholder":true,"num":0}],"n":12345678901234567890}`)
	out, err := ResolveBinary(in, atts)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		File []byte
		List [][]byte
		N    json.Number
	}
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(v.File, []byte{4}) || len(v.List) != 1 || !bytes.Equal(v.List[0], []byte{1, 2, 3}) || v.N != "12345678901234567890" {
		t.Fatalf("resolved %s -> %+v", out, v)
	}
	if _, err := ResolveBinary(json.RawMessage(`{"_placeholder":true,"num":2}`), atts); !errors.Is(err, ErrIllegalAttachments) {
		t.Fatalf("out of range: %v", err)
	}
	plain := json.RawMessage(`{"a":1}`)
	if out, err := ResolveBinary(plain, atts); err != nil || &out[0] != &plain[0] {
		t.Fatalf("plain value copied or failed: %v", err)
	}
	if n, ok := PlaceholderIndex(json.RawMessage(`{"_placeholder":true,"num":1}`)); !ok || n != 1 {
		t.Fatalf("PlaceholderIndex = %d, %v", n, ok)
	}
	for _, s := range []string{`{"_placeholder":false,"num":1}`, `{"num":1}`, `{"_placeholder":true,"num":-1}`, `{"_placeholder":true,"num":1.5}`, `"x"`} {
		if _, ok := PlaceholderIndex(json.RawMessage(s)); ok {
			t.Errorf("PlaceholderIndex(%s) ok", s)
		}
	}
}

func TestEventNameForms(t *testing.T) {
	tests := []struct {
		data, name string
		ok         bool
	}{
		{`["plain"]`, "plain", true},
		{`["esc\"aped\n"]`, "esc\"aped\n", true},
		{`["\u0063onnect"]`, "", false}, // "connect" written with an escape is still reserved
		{`["connect"]`, "", false},
		{`[""]`, "", true},
		{`["é日本"]`, "é日本", true},
		{`[12]`, "12", true},
		{`[-1.5e3,"x"]`, "-1.5e3", true},
		{`[true]`, "", false},
		{`[null]`, "", false},
	}
	for _, tt := range tests {
		name, err := EventName(json.RawMessage(tt.data))
		if (err == nil) != tt.ok || name != tt.name {
			t.Errorf("EventName(%s) = %q, %v; want %q ok=%v", tt.data, name, err, tt.name, tt.ok)
		}
	}
	if got := SplitValid(json.RawMessage(`["a",1,{"b":[2]}]`)); len(got) != 3 || string(got[2]) != `{"b":[2]}` {
		t.Fatalf("SplitValid = %q", got)
	}
	if got := SplitValid(nil); got != nil {
		t.Fatalf("SplitValid(nil) = %q", got)
	}
}

// TestDecoderAttachmentBytes: attachments are bounded in bytes by default
// (DefaultMaxAttachmentBytes) and by MaxAttachmentBytes; over the bound the
// packet is dropped with ErrAttachmentsTooLarge and the decoder is ready for
// the next one.
func TestDecoderAttachmentBytes(t *testing.T) {
	for _, tt := range []struct {
		max, bound int
	}{{0, DefaultMaxAttachmentBytes}, {1000, 1000}} {
		d := Decoder{MaxAttachmentBytes: tt.max}
		if _, err := d.AddText([]byte(`53-["up",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1},{"_placeholder":true,"num":2}]`)); err != nil {
			t.Fatal(err)
		}
		half := tt.bound / 2
		if p, err := d.AddBinary(make([]byte, half)); p != nil || err != nil {
			t.Fatalf("first attachment: %v %v", p, err)
		}
		if p, err := d.AddBinary(make([]byte, tt.bound-half)); p != nil || err != nil {
			t.Fatalf("second attachment, at the bound: %v %v", p, err)
		}
		if _, err := d.AddBinary([]byte{1}); !errors.Is(err, ErrAttachmentsTooLarge) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("over the bound of %d: %v", tt.bound, err)
		}
		if d.Pending() {
			t.Fatal("still pending after the error")
		}
		if p, err := d.AddText([]byte(`2["x"]`)); err != nil || p == nil {
			t.Fatalf("next packet: %v %v", p, err)
		}
	}
}

// TestDecodeRefusesInvalidUTF8: a text message that is not UTF-8 is no
// packet, wherever the bad bytes are.
func TestDecodeRefusesInvalidUTF8(t *testing.T) {
	for _, s := range []string{"2[\"x\",\"\xff\"]", "0/\xc3\x28,", "2[\"\xed\xa0\x80\"]"} {
		if _, _, err := Decode([]byte(s)); !errors.Is(err, ErrInvalidUTF8) {
			t.Errorf("Decode(%q) = %v, want ErrInvalidUTF8", s, err)
		}
	}
}
