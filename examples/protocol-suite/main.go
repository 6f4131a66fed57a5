// Command protocol-suite serves what the official Engine.IO v4 and Socket.IO v5
// protocol test suites expect (see package suiteserver).
//
//	go run ./examples/protocol-suite -addr :3000
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/durasock/durasock/examples/protocol-suite/suiteserver"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "protocol-suite:", err)
		os.Exit(1)
	}
}

// run parses the flags and serves until ctx ends.
func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("protocol-suite", flag.ContinueOnError)
	addr := fs.String("addr", ":3000", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	slog.Info("protocol-suite server listening", "addr", ln.Addr().String())
	return serve(ctx, ln, suiteserver.New(slog.Default()))
}

// serve serves suite on ln until ctx ends, then shuts down within five seconds.
// It closes ln.
func serve(ctx context.Context, ln net.Listener, suite *suiteserver.Server) error {
	hs := &http.Server{Handler: suite, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return errors.Join(err, suite.Close())
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	serr := suite.Shutdown(sctx)
	herr := hs.Shutdown(sctx)
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		herr = errors.Join(herr, err)
	}
	return errors.Join(serr, herr, suite.Close())
}
