package socketio

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
)

// lastString returns the last argument of an event message, which carries the
// offset when recovery is enabled.
func lastString(t *testing.T, text string) string {
	t.Helper()
	i := strings.IndexByte(text, '[')
	if i < 0 {
		t.Fatalf("no array in %q", text)
	}
	args, err := parser.SplitArray(json.RawMessage(text[i:]))
	if err != nil || len(args) == 0 {
		t.Fatalf("split %q: %v", text, err)
	}
	var s string
	if err := json.Unmarshal(args[len(args)-1], &s); err != nil {
		t.Fatalf("last argument of %q is not a string: %v", text, err)
	}
	return s
}

type connectAnswer struct {
	SID string `json:"sid"`
	PID string `json:"pid"`
}

func connectWith(t *testing.T, c *testClient, auth string) connectAnswer {
	t.Helper()
	c.send("0" + auth)
	var a connectAnswer
	if err := json.Unmarshal([]byte(c.expectPrefix("0")), &a); err != nil || a.SID == "" || a.PID == "" {
		t.Fatalf("connect answer: %+v %v", a, err)
	}
	return a
}

// nsMetric reads the counter name{namespace=nsp} from reg (0 when absent).
func nsMetric(t *testing.T, reg *prometheus.Registry, name, nsp string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "namespace" && l.GetValue() == nsp {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRecovery(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv, url := newTestServer(t, &Options{Recovery: &RecoveryOptions{MaxDisconnectionDuration: waitTimeout},
		Options: engineio.Options{Registerer: reg}})
	sockets := make(chan *Socket, 4)
	srv.OnConnection(func(s *Socket) {
		if !s.Recovered() {
			s.Join("room")
			if err := s.SetData("alice"); err != nil {
				t.Error(err)
			}
		}
		sockets <- s
	})
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}

	c1 := dial(t, url, "websocket")
	first := connectWith(t, c1, "")
	s1 := recv(t, sockets)
	if s1.Recovered() || s1.ID() != first.SID {
		t.Fatalf("first socket %q recovered=%v", s1.ID(), s1.Recovered())
	}
	must(srv.To("room").Emit(ctx, "e", 1))
	m := c1.expectPrefix(`2["e",1,"`)
	off1 := lastString(t, "2"+`["e",1,"`+m)
	must(s1.Emit("e", 2)) // sent, but the client will not have read it
	c1.expectPrefix(`2["e",2,"`)
	c1.close()
	testwait.For(t, waitTimeout, "socket 1 away", func() bool { return !s1.Connected() })

	// While the client is away, what is sent to it is kept.
	must(srv.To("room").Emit(ctx, "e", 3))
	must(srv.To(s1.ID()).Emit(ctx, "direct", 4))
	must(srv.To("room").Volatile().Emit(ctx, "volatile", 5))
	if got := srv.Of("/").Sockets(); len(got) != 0 {
		t.Fatalf("Sockets while away = %d", len(got))
	}

	c2 := dial(t, url, "polling")
	second := connectWith(t, c2, `{"pid":"`+first.PID+`","offset":"`+off1+`","token":"x"}`)
	if second != first {
		t.Fatalf("recovered answer %+v, want %+v", second, first)
	}
	c2.expectPrefix(`2["e",2,"`)
	c2.expectPrefix(`2["e",3,"`)
	c2.expectPrefix(`2["direct",4,"`)
	s2 := recv(t, sockets)
	if !s2.Recovered() || s2.ID() != s1.ID() || s2.Data() != "alice" || !slices.Equal(s2.Rooms(), sorted(s2.ID(), "room")) {
		t.Fatalf("recovered socket %q recovered=%v data=%v rooms=%q", s2.ID(), s2.Recovered(), s2.Data(), s2.Rooms())
	}
	if !strings.Contains(string(s2.Handshake().Auth), `"token":"x"`) {
		t.Fatalf("auth = %s", s2.Handshake().Auth)
	}
	must(srv.To("room").Emit(ctx, "e", 6))
	c2.expectPrefix(`2["e",6,"`)
	if n := len(srv.Of("/").Sockets()); n != 1 {
		t.Fatalf("sockets after recovery = %d", n)
	}

	// A client that asks for an unknown session, or an offset the server does not
	// remember, gets a new one.
	c3 := dial(t, url, "websocket")
	other := connectWith(t, c3, `{"pid":"nope","offset":"x"}`)
	if other.SID == first.SID || other.PID == first.PID {
		t.Fatalf("unknown pid recovered: %+v", other)
	}
	recv(t, sockets)
	c3.close()
	testwait.For(t, waitTimeout, "socket 3 away", func() bool { return len(srv.Of("/").Sockets()) == 1 })
	c4 := dial(t, url, "websocket")
	fresh := connectWith(t, c4, `{"pid":"`+other.PID+`","offset":"not-remembered"}`)
	if fresh.SID == other.SID {
		t.Fatalf("unknown offset recovered: %+v", fresh)
	}
	s4 := recv(t, sockets)
	if s4.Recovered() {
		t.Fatal("socket with unknown offset recovered")
	}
	if rooms := srv.Of("/").Adapter().Rooms(other.SID); len(rooms) != 0 {
		t.Fatalf("dropped session still in rooms %q", rooms)
	}
	// One client recovered; two asked and got a new session. The first
	// connects asked for nothing and count in neither.
	if got := nsMetric(t, reg, "durasock_socketio_sessions_recovered_total", "/"); got != 1 {
		t.Errorf("sessions recovered = %v, want 1", got)
	}
	if got := nsMetric(t, reg, "durasock_socketio_sessions_not_recovered_total", "/"); got != 2 {
		t.Errorf("sessions not recovered = %v, want 2", got)
	}
}

func TestRecoveryExpiry(t *testing.T) {
	srv, url := newTestServer(t, &Options{Recovery: &RecoveryOptions{MaxDisconnectionDuration: 100 * time.Millisecond}})
	reasons := make(chan string, 2)
	srv.OnConnection(func(s *Socket) {
		s.Join("room")
		s.OnDisconnect(func(r string) { reasons <- r })
	})
	c1 := dial(t, url, "websocket")
	first := connectWith(t, c1, "")
	c1.close()
	if r := recv(t, reasons); r != ReasonTransportClose {
		t.Fatalf("reason = %q", r)
	}
	testwait.For(t, waitTimeout, "session expiry", func() bool { return len(srv.Of("/").Adapter().Rooms(first.SID)) == 0 })
	c2 := dial(t, url, "websocket")
	second := connectWith(t, c2, `{"pid":"`+first.PID+`"}`)
	if second.SID == first.SID {
		t.Fatal("expired session recovered")
	}

	// A server namespace disconnect is final: no session is kept.
	if err := srv.Of("/").DisconnectSockets(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	c2.expect("1")
	if r := recv(t, reasons); r != ReasonServerNamespaceDisconnect {
		t.Fatalf("reason = %q", r)
	}
	if rooms := srv.Of("/").Adapter().Rooms(second.SID); len(rooms) != 0 {
		t.Fatalf("rooms after namespace disconnect = %q", rooms)
	}
}

func TestRecoveryBinaryCustomNamespace(t *testing.T) {
	srv, url := newTestServer(t, &Options{Recovery: &RecoveryOptions{}})
	chat := srv.Of("/chat")
	chat.OnConnection(func(s *Socket) { s.Join("r") })
	c1 := dial(t, url, "websocket")
	c1.send("0/chat,")
	var first connectAnswer
	if err := json.Unmarshal([]byte(c1.expectPrefix("0/chat,")), &first); err != nil || first.PID == "" {
		t.Fatalf("connect: %+v %v", first, err)
	}
	// The connection handler runs after the client is told it is connected.
	testwait.For(t, waitTimeout, "join", func() bool { return slices.Contains(chat.Adapter().Rooms(first.SID), "r") })
	ctx := context.Background()
	if err := chat.To("r").Emit(ctx, "file", []byte{1, 2}); err != nil {
		t.Fatal(err)
	}
	off := lastString(t, c1.expectPrefix(`51-/chat,`))
	c1.expectBinary([]byte{1, 2})
	c1.close()
	testwait.For(t, waitTimeout, "away", func() bool { return len(chat.Sockets()) == 0 })
	if err := chat.To("r").Emit(ctx, "file", []byte{3}, "name"); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, url, "websocket")
	c2.send(`0/chat,{"pid":"` + first.PID + `","offset":"` + off + `"}`)
	var second connectAnswer
	if err := json.Unmarshal([]byte(c2.expectPrefix("0/chat,")), &second); err != nil || second != first {
		t.Fatalf("recovered %+v, want %+v (%v)", second, first, err)
	}
	c2.expectPrefix(`51-/chat,["file",{"_placeholder":true,"num":0},"name","`)
	c2.expectBinary([]byte{3})
}

// TestRecoveryBeyondSendQueue: a client that missed more than its session's send
// queue holds gets a new session and stays connected, instead of being recovered
// into a queue that overflows and closes it.
func TestRecoveryBeyondSendQueue(t *testing.T) {
	srv, url := newTestServer(t, &Options{
		Options:  engineio.Options{SendQueueSize: 16},
		Recovery: &RecoveryOptions{History: 64, MaxMissedPackets: 64},
	})
	srv.OnConnection(func(s *Socket) { s.Join("r") })
	c1 := dial(t, url, "websocket")
	first := connectWith(t, c1, "")
	testwait.For(t, waitTimeout, "join", func() bool { return slices.Contains(srv.Of("/").Adapter().Rooms(first.SID), "r") })
	c1.close()
	testwait.For(t, waitTimeout, "away", func() bool { return len(srv.Of("/").Sockets()) == 0 })
	ctx := context.Background()
	for i := range 10 {
		if err := srv.To("r").Emit(ctx, "file", []byte{byte(i)}); err != nil { // two messages each
			t.Fatal(err)
		}
	}
	c2 := dial(t, url, "websocket")
	second := connectWith(t, c2, `{"pid":"`+first.PID+`"}`)
	if second.SID == first.SID || second.PID == first.PID {
		t.Fatalf("recovered into an overflowing queue: %+v", second)
	}
	if err := srv.Emit(ctx, "still-here"); err != nil {
		t.Fatal(err)
	}
	off := lastString(t, c2.expectPrefix("2"))

	// Within the queue's bound the session is recovered.
	c2.close()
	testwait.For(t, waitTimeout, "away again", func() bool { return len(srv.Of("/").Sockets()) == 0 })
	for i := range 3 {
		if err := srv.To("r").Emit(ctx, "file", []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	c3 := dial(t, url, "websocket")
	if third := connectWith(t, c3, `{"pid":"`+second.PID+`","offset":"`+off+`"}`); third != second {
		t.Fatalf("recovered %+v, want %+v", third, second)
	}
	for i := range 3 {
		c3.expectPrefix(`51-["file",{"_placeholder":true,"num":0},"`)
		c3.expectBinary([]byte{byte(i)})
	}
}
