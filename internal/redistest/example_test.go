package redistest_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/durasock/durasock/internal/redistest"
)

// In a test, call redistest.Standalone(t, ...) instead: it fails the test on error and
// stops the server when the test ends.
func ExampleNewStandalone() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := redistest.NewStandalone(ctx, redistest.WithAOF())
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	if _, err := srv.Do(ctx, "SET", "greeting", "hello"); err != nil {
		log.Fatal(err)
	}
	if err := srv.Kill(); err != nil { // crash: SIGKILL
		log.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil { // same port, AOF reloaded
		log.Fatal(err)
	}
	v, err := srv.Do(ctx, "GET", "greeting")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(v)
	// Output: hello
}

func ExampleStartProxy() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := redistest.NewStandalone(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	proxy, err := redistest.StartProxy(srv.Addr())
	if err != nil {
		log.Fatal(err)
	}
	defer proxy.Close()

	// Point the client under test at proxy.Addr() instead of srv.Addr(), then:
	proxy.Blackhole() // partition: connections stay open, nothing flows
	proxy.Restore()
	proxy.Slow(50 * time.Millisecond)
	proxy.Cut() // every connection closed, new ones reset
	proxy.Restore()
	fmt.Println(proxy.Target() == srv.Addr())
	// Output: true
}
