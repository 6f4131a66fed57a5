package compat_test

import (
	"context"
	"log"
	"net/http"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/compat"
	"github.com/durasock/durasock/socketio"
)

// A durasock server that joins a cluster of Node socket.io servers using
// @socket.io/redis-adapter's createAdapter with the default key.
func ExampleNewNodeCluster() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	nc, err := compat.NewNodeCluster(client, &compat.Options{Mode: compat.Classic, Key: "socket.io"})
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close(context.Background())
	srv := socketio.NewServer(&socketio.Options{Adapter: nc.Adapter})
	srv.OnConnection(func(s *socketio.Socket) { s.Join("lobby") })
	http.Handle("/socket.io/", srv)
	log.Fatal(http.ListenAndServe(":3000", nil))
}

// A single durasock server whose clients get what @socket.io/redis-emitter and
// python-socketio's RedisManager(write_only=True) publish.
func ExampleListener_Wrap() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	l, err := compat.NewListener(client, &compat.ListenerOptions{Node: true, Python: true})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close(context.Background())
	srv := socketio.NewServer(&socketio.Options{Adapter: l.Wrap(adapter.NewMemory)})
	http.Handle("/socket.io/", srv)
	log.Fatal(http.ListenAndServe(":3000", nil))
}
