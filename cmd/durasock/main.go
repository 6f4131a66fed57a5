// Command durasock is a Socket.IO server. With no Redis URL it serves one process
// on the in-memory adapter, with a demo chat page; with -redis (or
// DURASOCK_REDIS_URL) every process on the same Redis serves one application.
//
//	go run ./cmd/durasock
//	go run ./cmd/durasock -addr :3001 -redis redis://127.0.0.1:6379
//
// It serves /socket.io/ (Socket.IO v5), / (the demo page), /healthz, /readyz,
// and, with -emit-token, POST /api/emit. /status (JSON), /dashboard (HTML) and
// /metrics (Prometheus) answer clients on this machine, holders of
// -admin-token, or everyone on -admin-addr.
//
// SIGTERM or SIGINT drains it: /readyz turns false (for -shutdown-delay while
// everything is still served), clients are closed properly and waited for, the
// bus outbox is given the rest of -drain-timeout to leave, then the process
// exits. A second signal ends the -shutdown-delay early.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	hurry := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		cancel()
		<-sigs
		close(hurry)
		<-sigs
		os.Exit(1) // a third signal: the operator wants out now
	}()
	if err := run(ctx, hurry, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "durasock:", err)
		os.Exit(1)
	}
}
