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
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/durasock/durasock/admin"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// run serves until ctx is done, then drains. It returns nil after a clean drain.
// hurry, closed by a second signal, cuts the -shutdown-delay short.
func run(ctx context.Context, hurry <-chan struct{}, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "cluster" {
		return runCluster(ctx, args[1:], getenv, stderr) // localcluster.go
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if cfg.Version {
		fmt.Fprintln(stdout, readBuildInfo())
		return nil
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("cannot listen on -addr %s: %w", cfg.Addr, listenCause(err))
	}
	var adminLn net.Listener
	if cfg.AdminAddr != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			ln.Close()
			return fmt.Errorf("cannot listen on -admin-addr %s: %w", cfg.AdminAddr, listenCause(err))
		}
	}
	a, err := newApp(cfg, log)
	if err != nil {
		ln.Close()
		if adminLn != nil {
			adminLn.Close()
		}
		return err
	}
	a.hurry = hurry
	return a.serve(ctx, ln, adminLn)
}

// listenCause is the part of a listen error worth reading.
func listenCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	return err
}

// app is one running durasock process.
type app struct {
	cfg        *config
	log        *slog.Logger
	registry   *prometheus.Registry
	build      buildInfo
	started    time.Time
	sio        *socketio.Server
	bus        *bus.Reliable    // nil on the in-memory adapter
	cluster    *cluster.Cluster // nil on the in-memory adapter
	compat     *compatState     // nil without -cluster-protocol node-* or -emitters (nodecompat.go)
	scrub      *scrubber        // hides the Redis URL's secrets
	redisShown string           // the Redis URL, redacted
	mon        *monitor
	// namespaces are the namespaces this server serves: the emit API refuses
	// others instead of creating them.
	namespaces map[string]bool

	stopping chan struct{} // closed at the signal: /readyz 503, still serving
	draining chan struct{} // closed when the drain starts
	hurry    <-chan struct{}
	adminUI  *admin.Admin // nil without -admin-ui
	http     *http.Server
	admin    *http.Server // nil without -admin-addr
	listen   string       // the URL of the main listener
}

func newApp(cfg *config, log *slog.Logger) (*app, error) {
	a := &app{
		cfg: cfg, log: log, registry: prometheus.NewRegistry(), build: readBuildInfo(), started: time.Now(),
		scrub: newScrubber(cfg.RedisURL), redisShown: redactURL(cfg.RedisURL),
		namespaces: map[string]bool{"/": true},
		stopping:   make(chan struct{}), draining: make(chan struct{}),
	}
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), a.build.collector())

	opts := &socketio.Options{Options: engineio.Options{
		PingInterval:      cfg.PingInterval,
		PingTimeout:       cfg.PingTimeout,
		TCPKeepAlive:      cfg.TCPKeepAlive,
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
		// Credentials (cookies) only for listed origins: the Fetch standard
		// forbids them with "*".
		opts.CORS = &engineio.CORSOptions{Origins: cfg.CORSOrigins, Credentials: !slices.Contains(cfg.CORSOrigins, "*")}
	}
	if cfg.RedisURL != "" && cfg.Compat.usesBus() {
		if err := a.openCluster(cfg); err != nil {
			return nil, err
		}
		opts.Adapter = a.cluster.Adapter
	}
	opts.Parser = cfg.Admin.parser()
	if err := a.setupCompat(cfg, opts); err != nil {
		return nil, err
	}
	a.sio = socketio.NewServer(opts)
	if err := a.startAdminUI(); err != nil {
		return nil, err
	}
	a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "durasock_connected_clients",
		Help: "Engine.IO sessions open on this node.",
	}, func() float64 { return float64(a.sio.Engine().Count()) }))
	if cfg.Demo {
		setupDemo(a.sio, a.bus, a.cluster, log)
	}
	a.mon = newMonitor(a)
	return a, nil
}

// openCluster connects the cluster adapter to Redis. It does not wait for Redis:
// a node that starts while Redis is down serves its clients and joins the cluster
// when Redis appears (the monitor warns meanwhile).
func (a *app) openCluster(cfg *config) error {
	kind := redisbus.Streams
	if cfg.RedisMode == "pubsub" {
		kind = redisbus.PubSub
	}
	inboxes := 0
	if cfg.InterestRouting {
		inboxes = redisbus.DefaultInboxes
	}
	b, err := redisbus.Open(context.Background(), cfg.RedisURL, &redisbus.Options{
		Kind:         kind,
		WaitReplicas: cfg.WaitReplicas,
		Inboxes:      inboxes,
		Bus:          bus.Config{NodeID: cfg.NodeID, Outbox: cfg.Outbox, Retain: cfg.Retain, Logger: a.log, Registerer: a.registry},
	})
	if err != nil {
		return fmt.Errorf("-redis %s: %s", a.redisShown, a.scrub.scrub(err.Error()))
	}
	copts := &cluster.Options{Logger: a.log, Registerer: a.registry, InterestRouting: cfg.InterestRouting, InterestKeep: cfg.InterestKeep}
	c, err := cluster.New(b, copts)
	if err != nil {
		closeCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = b.Close(closeCtx) // nothing was published yet
		return fmt.Errorf("cluster: %w", err)
	}
	a.bus, a.cluster = b, c
	return nil
}

// handler is the main listener's handler. The admin endpoints are on it too
// unless -admin-addr moves them.
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(a.cfg.Path, a.sio)
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("POST /api/emit", a.emit)
	if a.cfg.AdminAddr == "" {
		a.mountAdmin(mux, false)
	}
	if a.cfg.Demo {
		mountDemo(mux, a.cfg.Path, a.cfg.DemoClientDir, a.log)
	}
	a.mountAdminUI(mux)
	return a.deadlines(mux)
}

// adminHandler serves -admin-addr.
func (a *app) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", a.healthz)
	mux.HandleFunc("GET /readyz", a.readyz)
	a.mountAdmin(mux, true)
	return a.deadlines(mux)
}

// deadlines bounds every request but WebSocket connections: its body must
// arrive within -read-timeout and its answer be taken within -write-timeout,
// each on top of the longest wait of the request (a long poll waits for up to
// -ping-interval, a published emit for its timeout). A client that never reads
// an answer holds its goroutine no longer than that.
func (a *app) deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isUpgrade(r) {
			var wait time.Duration
			switch {
			case strings.HasPrefix(r.URL.Path, a.cfg.Path):
				wait = a.cfg.PingInterval
			case r.URL.Path == "/api/emit":
				wait = maxEmitWait
			}
			readWait := time.Duration(0)
			if r.Method == http.MethodGet {
				// The server's background read of a waiting GET must not
				// time out before the wait does.
				readWait = wait
			}
			now := time.Now()
			rc := http.NewResponseController(w)
			// Errors mean the connection does not support deadlines (a test
			// recorder); nothing to bound then.
			_ = rc.SetReadDeadline(now.Add(readWait + a.cfg.ReadTimeout))
			_ = rc.SetWriteDeadline(now.Add(wait + a.cfg.WriteTimeout))
		}
		next.ServeHTTP(w, r)
	})
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (a *app) newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: a.cfg.ReadHeaderTimeout,
		IdleTimeout:       a.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
}

// serve runs the HTTP servers on ln (and adminLn, when not nil) until ctx is
// done, then drains.
func (a *app) serve(ctx context.Context, ln, adminLn net.Listener) error {
	a.http = a.newHTTPServer(a.handler())
	errc := make(chan error, 2)
	go func() { errc <- a.http.Serve(ln) }()
	if adminLn != nil {
		a.admin = a.newHTTPServer(a.adminHandler())
		go func() { errc <- a.admin.Serve(adminLn) }()
	}
	monCtx, stopMon := context.WithCancel(context.Background())
	var monDone sync.WaitGroup
	monDone.Go(func() { a.mon.run(monCtx) })
	defer func() {
		stopMon()
		monDone.Wait()
	}()
	a.logListening(ln, adminLn)

	select {
	case err := <-errc:
		a.shutdown(false)
		return err
	case <-ctx.Done():
	}
	return a.shutdown(true)
}

// logListening writes the line an operator looks for first: where, and how.
func (a *app) logListening(ln, adminLn net.Listener) {
	a.listen = listenURL(ln.Addr())
	attrs := []any{slog.String("url", a.listen+strings.TrimPrefix(a.cfg.Path, "/")), slog.String("version", a.build.Version)}
	if a.bus != nil {
		attrs = append(attrs, slog.String("mode", "cluster"), slog.String("redis", a.redisShown),
			slog.String("transport", a.cfg.RedisMode), slog.String("node", a.bus.NodeID()))
	} else {
		attrs = append(attrs, slog.String("mode", "single process (in-memory adapter; -redis runs a cluster)"))
	}
	if a.cfg.Demo {
		attrs = append(attrs, slog.String("demo", a.listen))
	}
	switch {
	case adminLn != nil:
		attrs = append(attrs, slog.String("admin", listenURL(adminLn.Addr())+"status"))
	case a.cfg.AdminToken != "":
		attrs = append(attrs, slog.String("admin", a.listen+"status (bearer token)"))
	default:
		attrs = append(attrs, slog.String("admin", a.listen+"status (from this machine only: -admin-token or -admin-addr for more)"))
	}
	a.log.Info("durasock listening", attrs...)
}

// listenURL is the http:// URL of a listening address, with a host name a
// browser on this machine can open.
func listenURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// shutdown runs once: readiness off for -shutdown-delay (still serving, when
// graceful), then the drain within -drain-timeout: every client is sent a
// proper close and waited for, the HTTP servers stop, other nodes are told
// this node leaves, and the outbox is given the rest of the time to reach
// Redis. It logs what it did and, when time ran out, what was left.
func (a *app) shutdown(graceful bool) error {
	select {
	case <-a.stopping:
		return nil
	default:
		close(a.stopping)
	}
	if d := a.cfg.ShutdownDelay; graceful && d > 0 {
		a.log.Info("shutting down: /readyz answers 503, still serving until the drain starts", "shutdown_delay", d)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-a.hurry:
			t.Stop()
			a.log.Info("second signal: draining now")
		}
	}
	close(a.draining)

	start := time.Now()
	clients := a.sio.Engine().Count()
	var before bus.Stats
	outbox := 0
	if a.bus != nil {
		before = a.bus.Stats()
		outbox = a.bus.Status().OutboxLen
	}
	a.log.Info("draining", "clients", clients, "outbox_messages", outbox, "drain_timeout", a.cfg.DrainTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.DrainTimeout)
	defer cancel()
	a.stopAdminUI()

	// The clients still open when time runs out are cut without a close:
	// they are counted before Shutdown is told to cut them.
	shutCtx, cutNow := context.WithCancel(context.Background())
	defer cutNow()
	shut := make(chan error, 1)
	go func() { shut <- a.sio.Shutdown(shutCtx) }()
	var sioErr error
	nCut := 0
	select {
	case sioErr = <-shut:
	case <-ctx.Done():
		nCut = a.sio.Engine().Count()
		cutNow()
		sioErr = <-shut
	}

	var problems []string
	if sioErr != nil && !errors.Is(sioErr, context.Canceled) {
		problems = append(problems, "closing clients: "+sioErr.Error())
	}
	for _, srv := range []*http.Server{a.http, a.admin} {
		if srv == nil {
			continue
		}
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close() // out of time: the remaining requests are cut
		}
	}
	if err := a.closeCompat(ctx); err != nil {
		problems = append(problems, "closing the compat adapters: "+err.Error())
	}
	if a.cluster != nil {
		if err := a.cluster.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			problems = append(problems, "leaving the cluster: "+err.Error())
		}
	}
	var published, dropped uint64
	if a.bus != nil {
		if err := a.bus.Close(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			problems = append(problems, "closing the bus: "+a.scrub.scrub(err.Error()))
		}
		after := a.bus.Stats()
		published = after.Published - before.Published
		dropped = after.DroppedClosed - before.DroppedClosed
	}
	took := time.Since(start).Round(time.Millisecond)
	if nCut > 0 {
		problems = append(problems, fmt.Sprintf("%d of %d clients had not closed and were cut", nCut, clients))
	}
	if dropped > 0 {
		problems = append(problems, fmt.Sprintf("%d outbox messages had not reached Redis and were dropped", dropped))
	}
	if len(problems) == 0 && sioErr != nil {
		problems = append(problems, "event handlers were still running")
	}
	if len(problems) == 0 {
		a.log.Info("drained", "clients_closed", clients, "outbox_published", published, "took", took)
		return nil
	}
	err := fmt.Errorf("drain incomplete after %v (-drain-timeout %v): %s", took, a.cfg.DrainTimeout, strings.Join(problems, "; "))
	a.log.Error("drain incomplete", "clients", clients, "clients_cut", nCut, "outbox_published", published,
		"outbox_dropped", dropped, "took", took, "drain_timeout", a.cfg.DrainTimeout, "problems", strings.Join(problems, "; "))
	return err
}
