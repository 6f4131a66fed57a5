package emitter_test

import (
	"context"
	"fmt"
	"time"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/emitter"
	"github.com/durasock/durasock/internal/redistest"
)

// A worker process tells every durasock server to broadcast to a room.
func ExampleNew() {
	ctx := context.Background()
	redis, err := redistest.NewStandalone(ctx) // in production: your Redis URL
	if err != nil {
		fmt.Println(err)
		return
	}
	defer redis.Close()

	b, err := redisbus.Open(ctx, redis.URL(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := b.Close(closeCtx); err != nil {
			fmt.Println(err)
		}
	}()

	e := emitter.New(b)
	err = e.To("lobby").Emit(ctx, "news", map[string]string{"title": "deploy finished"})
	fmt.Println("accepted:", err == nil)
	// Output: accepted: true
}
