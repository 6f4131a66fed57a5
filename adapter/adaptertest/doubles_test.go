package adaptertest_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/parser"
)

// answer collects ack replies delivered to a registration.
type answer chan []json.RawMessage

func (a answer) fn(args []json.RawMessage) { a <- args }

func TestSocketDecodesWrites(t *testing.T) {
	ns := adaptertest.NewNamespace("/n")
	s := ns.Connect("s", adaptertest.SocketOptions{})
	p, err := parser.EventPacket("/n", "ev", "x", []byte{0, 1, 2}, json.RawMessage(`{"b":1,"a":2}`))
	if err != nil {
		t.Fatal(err)
	}
	s.Write(parser.Encode(p), true)
	s.Write(&parser.Encoded{Text: []byte(`2/n,["ok"]`), Attachments: [][]byte{{1}}}, false)      // attachment on a plain EVENT
	s.Write(&parser.Encoded{Text: []byte(`51-/n,["bin",{"_placeholder":true,"num":0}]`)}, false) // attachment missing
	s.Write(&parser.Encoded{Text: []byte(`2/n,{}`)}, false)                                      // not an event array
	ms := s.Messages()
	if len(ms) != 1 {
		t.Fatalf("%d messages recorded, want 1", len(ms))
	}
	m := ms[0]
	if m.Event != "ev" || !m.Volatile || m.Packet.Type != parser.BinaryEvent || len(m.Args) != 3 ||
		string(m.Args[2]) != `{"b":1,"a":2}` || !slices.Equal(m.Packet.Attachments[0], []byte{0, 1, 2}) {
		t.Errorf("decoded %+v", m)
	}
	if errs := s.DecodeErrors(); len(errs) != 3 {
		t.Errorf("decode errors %v, want 3", errs)
	}
}

func TestSocketAnswersAcks(t *testing.T) {
	ns := adaptertest.NewNamespace("/")
	defer ns.Wait()
	s := ns.Connect("s", adaptertest.SocketOptions{Ack: adaptertest.ReplyID})
	ask := func(id uint64) *parser.Encoded {
		return parser.Encode(&parser.Packet{Type: parser.Event, Namespace: "/", ID: id, HasID: true, Data: json.RawMessage(`["q"]`)})
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	// The registration may come before or after the write.
	first, second := make(answer, 1), make(answer, 1)
	s.ExpectAck(1, first.fn)
	s.Write(ask(1), false)
	s.Write(ask(2), false)
	s.ExpectAck(2, second.fn)
	for _, a := range []answer{first, second} {
		select {
		case args := <-a:
			if len(args) != 1 || string(args[0]) != `"s"` {
				t.Errorf("reply %s", args)
			}
		case <-ctx.Done():
			t.Fatal("no reply")
		}
	}
	if n := s.PendingAcks(); n != 0 {
		t.Errorf("%d acks pending after the replies", n)
	}

	s.SetAck(adaptertest.Silent)
	s.ExpectAck(3, func([]json.RawMessage) { t.Error("a silent socket replied") })
	s.Write(ask(3), false)
	if n := s.PendingAcks(); n != 1 {
		t.Errorf("%d acks pending, want 1", n)
	}
	s.ForgetAck(3)
	if n := s.PendingAcks(); n != 0 {
		t.Errorf("%d acks pending after ForgetAck", n)
	}
}

func TestSocketDisconnect(t *testing.T) {
	ns := adaptertest.NewNamespace("/")
	a, err := adapter.NewMemory(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ns.Bind(a)
	s := ns.Connect("s", adaptertest.SocketOptions{Rooms: []string{"r"}, Data: json.RawMessage(`{"k":1}`)})
	if info := s.Info(); !slices.Equal(info.Rooms, []string{"r", "s"}) || string(info.Data) != `{"k":1}` {
		t.Errorf("Info = %+v", info)
	}
	s.ExpectAck(1, func([]json.RawMessage) {})
	s.Disconnect(true)
	if ns.Socket("s") != nil || ns.Get("s") != nil || s.Connected() || s.PendingAcks() != 0 {
		t.Errorf("socket still connected after Disconnect")
	}
	if got := a.Rooms("s"); len(got) != 0 {
		t.Errorf("rooms after Disconnect = %q", got)
	}
	if got := s.Disconnects(); !slices.Equal(got, []bool{true}) {
		t.Errorf("Disconnects = %v", got)
	}
}

func TestNamespaceServerSideEmit(t *testing.T) {
	ns := adaptertest.NewNamespace("/")
	ns.HandleServerSideEmit("quiet", nil, nil)
	var got []json.RawMessage
	ns.HandleServerSideEmit("unanswered", nil, func(args []json.RawMessage) { t.Error("replied without OnServerSideEmit") })
	ns.OnServerSideEmit(func(e adaptertest.ServerEmit) ([]json.RawMessage, bool) {
		return []json.RawMessage{json.RawMessage(`"re-` + e.Event + `"`)}, true
	})
	ns.HandleServerSideEmit("asked", []json.RawMessage{json.RawMessage(`1`)}, func(args []json.RawMessage) { got = args })
	if len(got) != 1 || string(got[0]) != `"re-asked"` {
		t.Errorf("reply %s", got)
	}
	emits, err := ns.WaitServerEmits(t.Context(), 3)
	if err != nil || len(emits) != 3 || emits[0].WantReply || !emits[2].WantReply {
		t.Errorf("emits %+v, %v", emits, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := ns.WaitServerEmits(ctx, 4); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting for an emit that never comes: %v", err)
	}
	if first, second := ns.NextAckID(), ns.NextAckID(); first == second {
		t.Errorf("NextAckID repeats")
	}
}
