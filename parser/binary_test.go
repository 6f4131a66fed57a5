package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type blob []byte

type upload struct {
	Name  string `json:"name"`
	Data  []byte `json:"data"`
	Skip  []byte `json:"-"`
	Empty []byte `json:"empty,omitempty"`
	Inner *struct {
		Blob blob `json:"blob"`
	} `json:"inner,omitempty"`
	Parts [][]byte       `json:"parts"`
	Meta  map[string]any `json:"meta"`
	Extra any            `json:"extra"`
	hide  []byte
}

// textBytes writes itself with a method: the bytes inside stay its business.
type textBytes struct{ B []byte }

func (t textBytes) MarshalJSON() ([]byte, error) { return json.Marshal(string(t.B)) }

func TestEventPacketNestedBinary(t *testing.T) {
	u := upload{
		Name: "f",
		Data: []byte{1, 2},
		Skip: []byte{9},
		Inner: &struct {
			Blob blob `json:"blob"`
		}{blob{3}},
		Parts: [][]byte{{4}, nil, {5}},
		Meta:  map[string]any{"b": []byte{6}, "a": "x"},
		Extra: []any{1, map[string]any{"z": []byte{7}}},
		hide:  []byte{8},
	}
	p, err := EventPacket("/", "up", []byte{0}, u, map[string][]byte{"k": {10}}, textBytes{[]byte("hi")})
	if err != nil {
		t.Fatal(err)
	}
	want := `["up",{"_placeholder":true,"num":0},` +
		`{"name":"f","data":{"_placeholder":true,"num":1},"inner":{"blob":{"_placeholder":true,"num":2}},` +
		`"parts":[{"_placeholder":true,"num":3},null,{"_placeholder":true,"num":4}],` +
		`"meta":{"a":"x","b":{"_placeholder":true,"num":5}},"extra":[1,{"z":{"_placeholder":true,"num":6}}]},` +
		`{"k":{"_placeholder":true,"num":7}},"hi"]`
	if string(p.Data) != want {
		t.Fatalf("data\n got %s\nwant %s", p.Data, want)
	}
	if diff := cmp.Diff([][]byte{{0}, {1, 2}, {3}, {4}, {5}, {6}, {7}, {10}}, p.Attachments); diff != "" {
		t.Fatal(diff)
	}
	// The value itself is left as it was.
	if !bytes.Equal(u.Data, []byte{1, 2}) || !bytes.Equal(u.Inner.Blob, []byte{3}) || !bytes.Equal(u.Meta["b"].([]byte), []byte{6}) {
		t.Fatalf("value modified: %+v", u)
	}
	// What a client sends back decodes into the same Go value.
	args := SplitValid(p.Data)
	r, err := ResolveBinary(args[2], p.Attachments)
	if err != nil {
		t.Fatal(err)
	}
	var back upload
	if err := json.Unmarshal(r, &back); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Data, u.Data) || !bytes.Equal(back.Inner.Blob, u.Inner.Blob) || len(back.Parts) != 3 || !bytes.Equal(back.Parts[2], []byte{5}) {
		t.Fatalf("round trip %+v", back)
	}
}

func TestEventPacketWithoutBinaryUnchanged(t *testing.T) {
	type msg struct {
		A string         `json:"a"`
		B map[string]any `json:"b"`
		C []int          `json:"c"`
		D any            `json:"d"`
	}
	values := []any{
		msg{"x", map[string]any{"n": 1.5, "s": []any{"t", true}}, []int{1}, nil},
		&msg{A: "<&>", D: json.RawMessage(`{"r":1}`)},
		map[string]any{"k": []string{"v"}},
		[]any{1, "2", nil},
		[2]int{1, 2},
	}
	for _, v := range values {
		p, err := EventPacket("/", "e", v)
		if err != nil {
			t.Fatal(err)
		}
		js, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if want := `["e",` + string(js) + `]`; string(p.Data) != want || len(p.Attachments) != 0 {
			t.Errorf("EventPacket(%#v) = %s %d attachments, want %s", v, p.Data, len(p.Attachments), want)
		}
	}
}

func TestEventPacketBinaryErrors(t *testing.T) {
	type cyclic struct {
		Data []byte  `json:"data"`
		Next *cyclic `json:"next"`
	}
	c := &cyclic{Data: []byte{1}}
	c.Next = c
	if _, err := EventPacket("/", "x", c); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("cycle: %v", err)
	}
	if _, err := EventPacket("/", "x", map[string]any{"b": []byte{1}, "c": make(chan int)}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unmarshallable: %v", err)
	}
	if _, err := EventPacket("/", "x", RawArg{JSON: json.RawMessage(`[{"_placeholder":true,"num":3}]`), Attachments: [][]byte{{1}}}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("placeholder out of range: %v", err)
	}
	if _, err := EventPacket("/", "x", RawArg{JSON: json.RawMessage(`{`)}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("invalid RawArg: %v", err)
	}
}

func TestRawArgRenumbered(t *testing.T) {
	atts := [][]byte{{1}, {2}, {3}}
	a := RawArg{JSON: json.RawMessage(`{"x": {"num":2, "_placeholder" : true}, "s":"{\"_placeholder\":true,\"num\":0}", "l":[{"_placeholder":true,"num":0},{"_placeholder":false,"num":1}], "again":{"_placeholder":true,"num":2}}`), Attachments: atts}
	p, err := EventPacket("/", "fwd", []byte{0}, a, &a, (*RawArg)(nil), RawArg{})
	if err != nil {
		t.Fatal(err)
	}
	one := func(x, y int) string {
		return `{"x": {"_placeholder":true,"num":` + itoa(x) + `}, "s":"{\"_placeholder\":true,\"num\":0}", "l":[{"_placeholder":true,"num":` + itoa(y) + `},{"_placeholder":false,"num":1}], "again":{"_placeholder":true,"num":` + itoa(x) + `}}`
	}
	want := `["fwd",{"_placeholder":true,"num":0},` + one(1, 2) + `,` + one(3, 4) + `,null,null]`
	if string(p.Data) != want {
		t.Fatalf("data\n got %s\nwant %s", p.Data, want)
	}
	if diff := cmp.Diff([][]byte{{0}, {3}, {1}, {3}, {1}}, p.Attachments); diff != "" {
		t.Fatal(diff)
	}
	// Nested in another value, a RawArg is JSON with base64 strings.
	js, err := json.Marshal(map[string]any{"r": RawArg{JSON: json.RawMessage(`[{"_placeholder":true,"num":1}]`), Attachments: atts}})
	if err != nil || string(js) != `{"r":["Ag=="]}` {
		t.Fatalf("marshal = %s, %v", js, err)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }

// TestEventPacketAllocs checks that a value without binary costs what
// encoding/json costs: the type analysis is cached.
func TestEventPacketAllocs(t *testing.T) {
	type msg struct {
		User string `json:"user"`
		Text string `json:"text"`
	}
	m := msg{"alice", "hello there"}
	base := testing.AllocsPerRun(100, func() {
		if _, err := json.Marshal(m); err != nil {
			t.Fatal(err)
		}
	})
	raw := json.RawMessage(`{"user":"alice","text":"hello there"}`)
	packet := testing.AllocsPerRun(100, func() {
		if _, err := EventPacket("/", "chat message", raw); err != nil {
			t.Fatal(err)
		}
	})
	got := testing.AllocsPerRun(100, func() {
		if _, err := EventPacket("/", "chat message", m); err != nil {
			t.Fatal(err)
		}
	})
	if got > packet+base {
		t.Fatalf("EventPacket: %.0f allocations; with a json.RawMessage %.0f, json.Marshal alone %.0f", got, packet, base)
	}
}

func FuzzRewritePlaceholders(f *testing.F) {
	for _, s := range []string{
		`[{"_placeholder":true,"num":0}]`,
		`{"a":[{"num":1,"_placeholder":true},{"_placeholder":true}],"b":"\"_placeholder\""}`,
		`{"_placeholder":true,"num":0,"x":{"_placeholder":true,"num":1}}`,
		`[1,"x",null,{"_placeholder":{"num":1},"num":[0]}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		atts := [][]byte{{1}, {2}}
		out, err := rewritePlaceholders(nil, in, func(n int) (int, error) {
			if n >= len(atts) {
				return 0, ErrIllegalAttachments
			}
			return n, nil
		})
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("rewrite of %s is not JSON: %s", in, out)
		}
		want, err1 := ResolveBinary(in, atts)
		got, err2 := ResolveBinary(out, atts)
		if err1 != nil || err2 != nil {
			return
		}
		a, errA := decodeNumbers(want)
		b, errB := decodeNumbers(got)
		if errA != nil || errB != nil || !cmp.Equal(a, b) {
			t.Fatalf("rewrite of %s changed its meaning: %s (%v, %v)", in, out, errA, errB)
		}
	})
}

// decodeNumbers decodes JSON keeping numbers as written, so that numbers beyond
// float64 compare too.
func decodeNumbers(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}
