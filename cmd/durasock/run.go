package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// run serves until ctx is done, then drains. It returns nil after a clean drain.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	a, err := newApp(cfg, log)
	if err != nil {
		ln.Close()
		return err
	}
	return a.serve(ctx, ln)
}

// app is one running durasock process.
type app struct {
	cfg      *config
	log      *slog.Logger
	registry *prometheus.Registry
	sio      *socketio.Server
	bus      *bus.Reliable    // nil on the in-memory adapter
	cluster  *cluster.Cluster // nil on the in-memory adapter
	compat   *compatState     // nodecompat.go; nil without -cluster-protocol node-* or -emitters
	draining chan struct{}
	http     *http.Server
}

func newApp(cfg *config, log *slog.Logger) (*app, error) {
	a := &app{cfg: cfg, log: log, registry: prometheus.NewRegistry(), draining: make(chan struct{})}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	opts := &socketio.Options{Options: engineio.Options{
		PingInterval:      cfg.PingInterval,
		PingTimeout:       cfg.PingTimeout,
		MaxPayload:        cfg.MaxPayload,
		SendQueueSize:     cfg.SendQueue,
		SendQueueBytes:    cfg.SendBytes,
		SlowClientTimeout: cfg.SlowClient,
		Logger:            log,
		Registerer:        a.registry,
	}}
	if cfg.Recovery > 0 {
		opts.Recovery = &socketio.RecoveryOptions{MaxDisconnectionDuration: cfg.Recovery}
	}
	if len(cfg.CORSOrigins) > 0 {
		opts.CORS = &engineio.CORSOptions{Origins: cfg.CORSOrigins, Credentials: true}
	}
	if cfg.RedisURL != "" && cfg.Compat.usesBus() {
		if err := a.openCluster(cfg); err != nil {
			return nil, err
		}
		opts.Adapter = a.cluster.Adapter
	}
	if err := a.setupCompat(cfg, opts); err != nil {
		return nil, err
	}
	a.sio = socketio.NewServer(opts)
	a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "durasock_connected_clients",
		Help: "Engine.IO sessions open on this node.",
	}, func() float64 { return float64(a.sio.Engine().Count()) }))
	setupDemo(a.sio, log)
	return a, nil
}

// openCluster connects the cluster adapter to Redis. It does not wait for Redis:
// a node that starts while Redis is down serves its clients and joins the cluster
// when Redis appears.
func (a *app) openCluster(cfg *config) error {
	kind := redisbus.Streams
	if cfg.RedisMode == "pubsub" {
		kind = redisbus.PubSub
	}
	b, err := redisbus.Open(context.Background(), cfg.RedisURL, &redisbus.Options{
		Kind:         kind,
		WaitReplicas: cfg.WaitReplicas,
		Bus:          bus.Config{Outbox: cfg.Outbox, Logger: a.log, Registerer: a.registry},
	})
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	c, err := cluster.New(b, &cluster.Options{Logger: a.log, Registerer: a.registry})
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b.Close(closeCtx)
		return fmt.Errorf("cluster: %w", err)
	}
	a.bus, a.cluster = b, c
	a.log.Info("cluster adapter", "redis", redactURL(cfg.RedisURL), "transport", cfg.RedisMode, "node", b.NodeID())
	return nil
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(a.cfg.Path, a.sio)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /status", a.status)
	mux.Handle("GET /metrics", promhandler(a.registry))
	mux.HandleFunc("POST /api/emit", a.emit)
	if a.cfg.Demo {
		mountDemo(mux, a.cfg.Path)
	}
	return mux
}

// serve runs the HTTP server on ln until ctx is done, then drains.
func (a *app) serve(ctx context.Context, ln net.Listener) error {
	a.http = &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- a.http.Serve(ln) }()
	a.log.Info("durasock listening", "addr", ln.Addr().String(), "path", a.cfg.Path)

	select {
	case err := <-errc:
		a.shutdown()
		return err
	case <-ctx.Done():
	}
	return a.shutdown()
}

// shutdown drains within cfg.DrainTimeout: readiness off, Socket.IO clients
// closed properly, HTTP server stopped, the bus outbox given the rest of the time.
func (a *app) shutdown() error {
	select {
	case <-a.draining:
		return nil
	default:
		close(a.draining)
	}
	a.log.Info("draining", "timeout", a.cfg.DrainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
	defer cancel()
	var errs []error
	if err := a.sio.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("socket.io shutdown: %w", err))
	}
	if a.http != nil {
		if err := a.http.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	}
	if err := a.closeCompat(ctx); err != nil {
		errs = append(errs, fmt.Errorf("compat close: %w", err))
	}
	if a.cluster != nil {
		if err := a.cluster.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("cluster close: %w", err))
		}
	}
	if a.bus != nil {
		if err := a.bus.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("bus close: %w", err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		a.log.Error("drain incomplete", "err", err)
	} else {
		a.log.Info("drained")
	}
	return err
}
