package argpack

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// TestRoundTrip: what Pack writes crosses a cluster as JSON and Unpack gives
// back the same arguments and attachments.
func TestRoundTrip(t *testing.T) {
	args := []json.RawMessage{json.RawMessage(`{"_placeholder":true,"num":0}`), json.RawMessage(`7`)}
	atts := [][]byte{{0, 1, 0xff}, {}}
	wire, err := json.Marshal(Pack(args, atts))
	if err != nil {
		t.Fatal(err)
	}
	var back []json.RawMessage
	if err := json.Unmarshal(wire, &back); err != nil {
		t.Fatal(err)
	}
	gotArgs, gotAtts := Unpack(back)
	if !slices.EqualFunc(gotArgs, args, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) || !slices.EqualFunc(gotAtts, atts, bytes.Equal) {
		t.Fatalf("Unpack = %s %v, want %s %v", gotArgs, gotAtts, args, atts)
	}
	if got := Pack(args, nil); len(got) != len(args) {
		t.Fatalf("Pack without attachments added %d arguments", len(got)-len(args))
	}
}

// FuzzUnpack: Unpack takes the arguments of a server-side event or an ack as a
// cluster node received them from Redis; it never panics and never returns more
// arguments than it was given.
func FuzzUnpack(f *testing.F) {
	f.Add([]byte(`7`), []byte(`{"_durasock_attachments":["AAH/"]}`))
	f.Add([]byte(`"x"`), []byte(`{"_durasock_attachments":[1]}`))
	f.Add([]byte(`null`), []byte(`{"_durasock_attachments":`))
	f.Fuzz(func(t *testing.T, a, last []byte) {
		args := []json.RawMessage{a, last}
		got, _ := Unpack(args)
		if len(got) > len(args) {
			t.Fatalf("Unpack returned %d arguments from %d", len(got), len(args))
		}
	})
}
