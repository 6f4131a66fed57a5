// Command durasock is a Socket.IO server. With no Redis URL it serves one process
// on the in-memory adapter, with a demo chat page; with -redis (or
// DURASOCK_REDIS_URL) every process on the same Redis serves one application.
//
//	go run ./cmd/durasock
//	go run ./cmd/durasock -addr :3001 -redis redis://127.0.0.1:6379
//
// It serves /socket.io/ (Socket.IO v5), / (the demo page), /healthz, /readyz,
// /metrics (Prometheus), /status (JSON), and, with -emit-token, POST /api/emit.
// SIGTERM or SIGINT drains it: /readyz turns false, clients are closed properly,
// the bus outbox is given -drain-timeout to leave, then the process exits.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "durasock:", err)
		os.Exit(1)
	}
}
