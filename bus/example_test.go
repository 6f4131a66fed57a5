package bus_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/durasock/durasock/bus"
)

// Two nodes on an in-process hub: what one publishes reaches the other, in
// order, with its sequence number.
func ExampleNew() {
	hub := bus.NewMemoryHub()
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

	a, err := bus.New(hub.Transport(), &bus.Config{NodeID: "a", Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	b, err := bus.New(hub.Transport(), &bus.Config{NodeID: "b", Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return
	}
	got := make(chan bus.Message, 3)
	b.Receive(func(m bus.Message) { got <- m })

	ctx := context.Background()
	for _, ev := range []string{"join", "say hello", "leave"} {
		if err := a.Publish(ctx, "room-1", []byte(ev)); err != nil {
			fmt.Println(err)
			return
		}
	}
	for range 3 {
		m := <-got
		fmt.Printf("%s #%d: %s\n", m.Origin, m.Seq, m.Payload)
	}

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for _, n := range []*bus.Reliable{a, b} {
		if err := n.Close(ctx); err != nil {
			fmt.Println(err)
		}
	}
	// Output:
	// a #1: join
	// a #2: say hello
	// a #3: leave
}
