// Command loadbalancer is a small load balancer for a durasock cluster, for trying
// node failures on one machine: clients connect to it, it sends each new
// Engine.IO session to a ready node (round robin over the nodes whose /readyz
// answers 200) and keeps every later request of that session on the same node,
// as sticky sessions in nginx or HAProxy would. When a node stops or drains, its
// sessions end and the clients reconnect through it to another node.
//
//	go run ./cmd/durasock -addr :3001 -redis redis://127.0.0.1:6379 -recovery 2m &
//	go run ./cmd/durasock -addr :3002 -redis redis://127.0.0.1:6379 -recovery 2m &
//	go run ./examples/loadbalancer -addr :3000 -node http://127.0.0.1:3001 -node http://127.0.0.1:3002
//
// Open http://localhost:3000 in two tabs, then stop one node (Ctrl-C, or kill
// -9 its pid): its clients reconnect through the balancer to the other node
// and, with -recovery, get their session back with every event they missed
// (docs/RELIABILITY.md, "Clients of a node that goes away").
//
// In production use your load balancer with sticky sessions for long-polling
// (docs/OPERATIONS.md), or clients with transports: ["websocket"].
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
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], slog.Default()); err != nil {
		fmt.Fprintln(os.Stderr, "loadbalancer:", err)
		os.Exit(1)
	}
}

type nodeList []string

func (n *nodeList) String() string     { return strings.Join(*n, ",") }
func (n *nodeList) Set(v string) error { *n = append(*n, v); return nil }

func run(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("loadbalancer", flag.ContinueOnError)
	addr := fs.String("addr", ":3000", "address to listen on")
	var nodes nodeList
	fs.Var(&nodes, "node", "base URL of a durasock node (repeat the flag for each node)")
	check := fs.Duration("check", 500*time.Millisecond, "how often each node's /readyz is checked")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lb, err := New(nodes, *check, log)
	if err != nil {
		return err
	}
	defer lb.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	log.Info("load balancer listening", "url", "http://"+ln.Addr().String(), "nodes", nodes.String())
	srv := &http.Server{Handler: lb, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
