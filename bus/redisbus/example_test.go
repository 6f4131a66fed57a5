package redisbus_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// Two nodes share one Redis: a message one publishes reaches the other's
// handler. In a program the URL comes from configuration, for example
// redis://:password@redis.internal:6379/0 or
// redis+sentinel://s1:26379,s2:26379,s3:26379/mymaster.
func ExampleOpen() {
	ctx := context.Background()
	srv, err := redistest.NewStandalone(ctx) // a throwaway redis-server for the example
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	open := func(node string) *bus.Reliable {
		b, err := redisbus.Open(ctx, srv.URL(), &redisbus.Options{
			Bus: bus.Config{NodeID: node, ProbeInterval: 100 * time.Millisecond},
		})
		if err != nil {
			log.Fatal(err)
		}
		return b
	}
	n1, n2 := open("node-1"), open("node-2")
	defer n1.Close(ctx)
	defer n2.Close(ctx)

	got := make(chan bus.Message, 16)
	n2.Receive(func(m bus.Message) { got <- m })
	n1.Receive(func(bus.Message) {})

	// A new subscription starts at the end of the streams: publish until
	// node-2 is listening.
	deadline := time.After(20 * time.Second)
	for {
		if err := n1.Publish(ctx, "room:lobby", []byte("hello")); err != nil {
			log.Fatal(err)
		}
		select {
		case m := <-got:
			fmt.Printf("%s got %q from %s\n", n2.NodeID(), m.Payload, m.Origin)
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			log.Fatal("no message")
		}
	}
	// Output: node-2 got "hello" from node-1
}

func ExampleParseEndpoint() {
	for _, u := range []string{
		"redis://localhost/2",
		"rediss://user:secret@redis.example.com:6380?ca=/etc/redis/ca.pem",
		"unix:///run/redis/redis.sock",
		"redis+sentinel://s1,s2:26380/mymaster",
		"redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
	} {
		ep, err := redisbus.ParseEndpoint(u)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ep.Topology, ep.TLS, ep.Addrs, ep.MasterName, ep.DB)
	}
	_, err := redisbus.ParseEndpoint("redis://host:99999")
	fmt.Println(err)
	// Output:
	// standalone false [localhost:6379]  2
	// standalone true [redis.example.com:6380]  0
	// unix false [/run/redis/redis.sock]  0
	// sentinel false [s1:26379 s2:26380] mymaster 0
	// cluster false [10.0.0.1:7000 10.0.0.2:7000]  0
	// redisbus: invalid Redis URL "redis://host:99999": bad port "99999" in "host:99999"
}
