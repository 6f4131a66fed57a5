package sioclient_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
	"github.com/durasock/durasock/socketio"
)

func Example() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("add", func(e *socketio.Event) {
			var a, b int
			if err := e.Bind(&a, &b); err != nil {
				return
			}
			_ = e.Ack(a + b)
		})
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, hs.URL+"/socket.io/", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ack, err := c.EmitWithAck(ctx, "add", 2, 3)
	if err != nil {
		fmt.Println(err)
		return
	}
	var sum int
	if err := ack.Bind(&sum); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("2 + 3 =", sum)
	// Output: 2 + 3 = 5
}

// A load client counts events on its read goroutine, without copying them.
func ExampleOptions_onEvent() {
	srv := socketio.NewServer(nil)
	srv.OnConnection(func(s *socketio.Socket) {
		for i := range 3 {
			_ = s.Emit("tick", i)
		}
	})
	hs := httptest.NewServer(srv)
	defer hs.Close()
	defer srv.Close()

	ticks := make(chan string, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sioclient.Dial(ctx, hs.URL, &sioclient.Options{
		OnEvent: func(e *sioclient.Event) { ticks <- string(e.Data) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for range 3 {
		fmt.Println(<-ticks)
	}
	// Output:
	// ["tick",0]
	// ["tick",1]
	// ["tick",2]
}
