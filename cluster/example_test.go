package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/parser"
)

// Two nodes on an in-process hub: a broadcast on one reaches a socket of the
// other. With Redis, open the buses with redisbus.Open instead, and pass
// c.Adapter as the Adapter of socketio.Options.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	hub := bus.NewMemoryHub()

	var nodes []*cluster.Cluster
	var adapters []adapter.Adapter
	var namespaces []*adaptertest.Namespace
	for _, id := range []string{"a", "b"} {
		b, err := bus.New(hub.Transport(), &bus.Config{NodeID: id, Logger: quiet})
		if err != nil {
			panic(err)
		}
		defer b.Close(ctx)
		c, err := cluster.New(b, &cluster.Options{Logger: quiet})
		if err != nil {
			panic(err)
		}
		defer c.Close(ctx)
		ns := adaptertest.NewNamespace("/") // a socketio namespace in a real server
		a, err := c.Adapter(ns)
		if err != nil {
			panic(err)
		}
		ns.Bind(a)
		nodes, adapters, namespaces = append(nodes, c), append(adapters, a), append(namespaces, ns)
	}
	for !slices.Contains(nodes[0].Nodes(), nodes[1].NodeID()) { // wait until a knows b
		select {
		case <-ctx.Done():
			panic(ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}

	socket := namespaces[1].Connect("socket-on-b", adaptertest.SocketOptions{Rooms: []string{"news"}})
	p, err := parser.EventPacket("/", "headline", "hello from a")
	if err != nil {
		panic(err)
	}
	if err := adapters[0].Broadcast(ctx, p, adapter.Options{Rooms: []string{"news"}}); err != nil {
		panic(err)
	}
	ms, err := socket.WaitMessages(ctx, 1)
	if err != nil {
		panic(err)
	}
	var text string
	if err := json.Unmarshal(ms[0].Args[0], &text); err != nil {
		panic(err)
	}
	fmt.Println(ms[0].Event, text)
	// Messages that could not be decoded are dropped and counted (also as
	// the metric durasock_cluster_decode_errors_total).
	fmt.Println("decode errors on b:", nodes[1].Stats().DecodeErrors)
	// Output:
	// headline hello from a
	// decode errors on b: 0
}
