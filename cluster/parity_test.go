package cluster

import (
	"bytes"
	"slices"
	"testing"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/socketio"
)

// TestSocketIOParityOnRedis: on two servers sharing one Redis, rooms are
// listed per server and cluster-wide, room events report each server's own
// sockets, and binary in server-side events and their replies stays binary
// across the cluster.
func TestSocketIOParityOnRedis(t *testing.T) {
	srv := redistest.Standalone(t)
	cs := startNodes(t, 2, nil, redisBuses(t, srv.URL(), redisbus.Streams))
	var servers []*socketio.Server
	var urls []string
	created := make(chan string, 16)
	for i, c := range cs {
		s := socketio.NewServer(&socketio.Options{Adapter: c.Adapter, Options: engineio.Options{Logger: quietLogger}})
		room := []string{"room-a", "room-b"}[i]
		s.OnConnection(func(so *socketio.Socket) { so.Join(room, "shared") })
		s.Of("/").OnCreateRoom(func(r string) {
			if r == "room-a" || r == "room-b" || r == "shared" {
				created <- string(rune('0'+i)) + ":" + r
			}
		})
		s.Of("/").OnServerSideEmit("blob", func(e *socketio.Event) {
			var b []byte
			if err := e.Bind(&b); err != nil {
				t.Errorf("server-side bind: %v", err)
			}
			if err := e.Ack(append(b, byte(i))); err != nil {
				t.Errorf("server-side ack: %v", err)
			}
		})
		servers = append(servers, s)
		urls = append(urls, serve(t, s))
	}
	for _, u := range urls {
		dialSocketIO(t, u)
	}
	got := []string{<-created, <-created, <-created, <-created}
	slices.Sort(got)
	if want := []string{"0:room-a", "0:shared", "1:room-b", "1:shared"}; !slices.Equal(got, want) {
		t.Fatalf("room events %q, want %q", got, want)
	}
	if local := servers[0].Of("/").LocalRooms(); !slices.Equal(local, []string{"room-a", "shared"}) {
		t.Fatalf("LocalRooms of server 0 = %q", local)
	}
	ctx := testCtx(t)
	all, err := servers[0].Of("/").AllRooms(ctx)
	if err != nil || !slices.Equal(all, []string{"room-a", "room-b", "shared"}) {
		t.Fatalf("AllRooms = %q, %v", all, err)
	}

	replies, err := servers[0].Of("/").ServerSideEmitWithAck(ctx, "blob", []byte{7, 8})
	if err != nil || len(replies) != 1 {
		t.Fatalf("ServerSideEmitWithAck = %+v, %v", replies, err)
	}
	var b []byte
	if err := replies[0].Args.Bind(&b); err != nil || !bytes.Equal(b, []byte{7, 8, 1}) {
		t.Fatalf("reply %v: %v", b, err)
	}
	if v, ok := replies[0].Args.Values()[0].([]byte); !ok || !bytes.Equal(v, []byte{7, 8, 1}) {
		t.Fatalf("reply value %#v", replies[0].Args.Values()[0])
	}
}
