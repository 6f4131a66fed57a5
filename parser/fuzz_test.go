package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

var fuzzSeeds = []string{
	"0", `0{"token":"123"}`, "0/custom,", "0/custom", "1", "1/admin,",
	`2["hello",1]`, `2/admin,456["project:delete",123]`, `3/admin,456[]`, `3456`,
	`4{"message":"Not authorized"}`, `51-["hello",{"_placeholder":true,"num":0}]`,
	`61-/admin,456[{"_placeholder":true,"num":0}]`, "4abc", "2{}", `2abc["x"]`,
	`52-["a",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`,
	`218446744073709551616["x"]`, `5-`, `2[`, `2["a\"",{"b":[]}]`,
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, text []byte) {
		p, n, err := Decode(text)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("negative attachment count %d", n)
		}
		// A decoded packet encodes to a message that decodes to the same packet.
		p.Attachments = make([][]byte, n)
		for i := range p.Attachments {
			p.Attachments[i] = []byte{}
		}
		e := Encode(p)
		q, m, err := Decode(e.Text)
		if err != nil {
			t.Fatalf("re-decode %q (from %q): %v", e.Text, text, err)
		}
		if m != n || q.Type != p.Type && !(n == 0 && (q.Type == BinaryEvent || q.Type == BinaryAck)) ||
			q.Namespace != p.Namespace || q.ID != p.ID || q.HasID != p.HasID || !bytes.Equal(q.Data, p.Data) {
			t.Fatalf("round trip %q -> %q: %+v != %+v", text, e.Text, q, p)
		}
		if p.Type == Event || p.Type == BinaryEvent {
			args, err := SplitArray(p.Data)
			if err != nil {
				t.Fatalf("valid event %q does not split: %v", text, err)
			}
			fast := SplitValid(p.Data)
			if len(fast) != len(args) || len(args) == 0 {
				t.Fatalf("SplitValid %q = %q, SplitArray = %q", p.Data, fast, args)
			}
			for i := range args {
				if !bytes.Equal(fast[i], args[i]) || !json.Valid(args[i]) {
					t.Fatalf("element %d of %q: %q vs %q", i, p.Data, fast[i], args[i])
				}
			}
		}
	})
}

// FuzzDecoder feeds a sequence of messages: each chunk of the input separated by
// 0xff is a message, text when it starts with a digit and binary otherwise.
func FuzzDecoder(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s + "\xff\x01\x02\xff\x03"))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		d := Decoder{MaxAttachments: 4}
		for _, msg := range bytes.Split(in, []byte{0xff}) {
			var p *Packet
			var err error
			if len(msg) > 0 && msg[0] >= '0' && msg[0] <= '9' {
				p, err = d.AddText(msg)
			} else {
				p, err = d.AddBinary(msg)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error %v does not wrap ErrInvalid", err)
				}
				if d.Pending() && errors.Is(err, ErrUnexpectedText) {
					t.Fatal("pending after unexpected text")
				}
				continue
			}
			if p != nil {
				if len(p.Attachments) > 4 {
					t.Fatalf("%d attachments over the limit", len(p.Attachments))
				}
				if p.Type == BinaryEvent || p.Type == BinaryAck {
					if _, err := ResolveBinary(p.Data, p.Attachments); err != nil {
						t.Fatalf("complete packet does not resolve: %v", err)
					}
				}
			}
		}
	})
}
