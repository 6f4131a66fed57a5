package nemesis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// nodeEnv marks a node process: the test binary (or any program that calls
// NodeMain first) started again with this variable holding the node's JSON
// configuration.
const nodeEnv = "DURASOCK_NEMESIS_NODE"

// Event names of the node's application protocol.
const (
	joinEvent    = "join" // client -> node: [rooms...], acked with "ok"
	publishEvent = "pub"  // publisher -> node: [room, publisher, seq, payload?, withAck?], acked "ok" or an error
	dataEvent    = "e"    // node -> clients: [publisher, seq, payload?]
)

// streamPrefix is the redisbus Prefix of the nodes.
const streamPrefix = "nemesis"

// nodeConfig is what a node process is told at start.
type nodeConfig struct {
	RedisURL      string        `json:"redis_url"`
	NodeID        string        `json:"node_id"`
	Namespaces    []string      `json:"namespaces"`
	SendQueue     int           `json:"send_queue,omitempty"`
	OutboxMax     int           `json:"outbox_max,omitempty"`
	OutboxMaxAge  time.Duration `json:"outbox_max_age,omitempty"`
	StreamMaxLen  int64         `json:"stream_max_len,omitempty"`
	ReadCount     int64         `json:"read_count,omitempty"`
	PingInterval  time.Duration `json:"ping_interval,omitempty"`
	PingTimeout   time.Duration `json:"ping_timeout,omitempty"`
	DrainTimeout  time.Duration `json:"drain_timeout,omitempty"`
	ProbeInterval time.Duration `json:"probe_interval,omitempty"`
	WaitReplicas  int           `json:"wait_replicas,omitempty"`
	// Recovery, when above 0, enables connection state recovery with this
	// MaxDisconnectionDuration.
	Recovery time.Duration `json:"recovery,omitempty"`
	// AckAsync answers a publish with acknowledgements at once and lets the
	// broadcast wait for its replies in the background.
	AckAsync bool `json:"ack_async,omitempty"`
	// Routing opens the bus with redisbus.DefaultInboxes inbox partitions
	// and the cluster with interest routing; a join is acked once the other
	// nodes apply it (routingAwaiter).
	Routing bool `json:"routing,omitempty"`
}

// nodeStatus is the JSON of a node's GET /status.
type nodeStatus struct {
	Node    string     `json:"node"`
	Nodes   []string   `json:"nodes"`
	Clients int        `json:"clients"`
	Bus     bus.Status `json:"bus"`
	Stats   bus.Stats  `json:"stats"`
	// Goroutines and RSS (bytes, 0 where /proc is missing) show leaks in soaks.
	Goroutines int    `json:"goroutines"`
	RSS        uint64 `json:"rss"`
}

// report is one line a node writes on its stdout for the harness: every gap,
// drop and state change as it happens, so that what a node reported is known
// even when it is SIGKILLed a moment later.
type report struct {
	Kind      string `json:"k"` // "listening", "gap", "drop", "state", "drained", "late"
	Addr      string `json:"addr,omitempty"`
	Origin    string `json:"origin,omitempty"`
	Partition int    `json:"partition,omitempty"`
	After     uint64 `json:"after,omitempty"`
	Next      uint64 `json:"next,omitempty"`
	Missing   uint64 `json:"missing,omitempty"`
	Reason    string `json:"reason,omitempty"`
	Count     int    `json:"count,omitempty"`
	State     string `json:"state,omitempty"`
	Err       string `json:"err,omitempty"`
	// A request that returned past its timeout (kind "late"): what it was,
	// its timeout and how long it took, in milliseconds.
	Op        string `json:"op,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
	TookMs    int64  `json:"took_ms,omitempty"`
	// At is when the harness read the report (set by the harness).
	At int64 `json:"at,omitempty"`
}

// reporter writes reports to stdout, one JSON object per line, unbuffered.
type reporter struct {
	mu sync.Mutex
	w  io.Writer
}

func (r *reporter) send(rep report) {
	b, err := json.Marshal(rep)
	if err != nil {
		panic(err) // a report has only plain fields
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// A write error means the harness is gone; the process will be killed.
	_, _ = r.w.Write(append(b, '\n'))
}

// NodeMain runs this process as a nemesis node when the harness started it as
// one, and then exits; otherwise it returns at once. Call it first in TestMain
// (before goleak) or main.
func NodeMain() {
	raw := os.Getenv(nodeEnv)
	if raw == "" {
		return
	}
	var cfg nodeConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "nemesis node: bad config:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	rep := &reporter{w: os.Stdout}
	err := runNode(ctx, cfg, rep, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nemesis node:", err)
		rep.send(report{Kind: "drained", Err: err.Error()})
		os.Exit(1)
	}
	rep.send(report{Kind: "drained"})
	os.Exit(0)
}

// runNode is one durasock node built like cmd/durasock (the cluster adapter over
// the reliable Redis bus) whose application is the nemesis workload: sockets
// join rooms on "join", and "pub" broadcasts [publisher, seq] as "e" to a room
// of the socket's namespace and acks whether the bus accepted it. It serves
// until ctx ends, then drains like the binary does on SIGTERM.
func runNode(ctx context.Context, cfg nodeConfig, rep *reporter, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	probe := cfg.ProbeInterval
	if probe == 0 {
		probe = 500 * time.Millisecond
	}
	inboxes := 0
	if cfg.Routing {
		inboxes = redisbus.DefaultInboxes
	}
	b, err := redisbus.Open(context.Background(), cfg.RedisURL, &redisbus.Options{
		Prefix:       streamPrefix,
		Inboxes:      inboxes,
		BlockTimeout: time.Second,
		DialTimeout:  time.Second,
		WriteTimeout: time.Second,
		StreamMaxLen: cfg.StreamMaxLen,
		ReadCount:    cfg.ReadCount,
		WaitReplicas: cfg.WaitReplicas,
		Bus: bus.Config{
			NodeID:        cfg.NodeID,
			Outbox:        bus.OutboxConfig{MaxMessages: cfg.OutboxMax, MaxAge: cfg.OutboxMaxAge},
			Backoff:       bus.BackoffConfig{Base: 50 * time.Millisecond, Cap: time.Second},
			ProbeInterval: probe,
			Logger:        log,
			OnGap: func(g bus.Gap) {
				rep.send(report{Kind: "gap", Origin: g.Origin, Partition: g.Partition, After: g.After, Next: g.Next, Missing: g.Missing})
			},
			OnDrop: func(d bus.Drop) {
				rep.send(report{Kind: "drop", Origin: d.Origin, Reason: string(d.Reason), Count: d.Count})
			},
			OnStateChange: func(s bus.Status) {
				rep.send(report{Kind: "state", State: s.State.String(), Err: s.LastError})
			},
		},
		ConfigureClient: func(co *rueidis.ClientOption) { co.ClientName = "nemesis-" + cfg.NodeID },
	})
	if err != nil {
		return fmt.Errorf("redis bus: %w", err)
	}
	cl, err := cluster.New(b, &cluster.Options{Logger: log, RequestTimeout: 2 * time.Second,
		InterestRouting: cfg.Routing})
	if err != nil {
		return errors.Join(fmt.Errorf("cluster: %w", err), closeNodeBus(nil, b, time.Second))
	}
	var awaiter routingAwaiter
	if cfg.Routing {
		var ok bool
		if awaiter, ok = any(cl).(routingAwaiter); !ok {
			log.Error("nemesis node: interest routing is on but the cluster cannot tell when the other nodes " +
				"apply a join (no AwaitRouting): joins are acked at once, and events sent to a room just joined " +
				"may miss the nodes that do not know it yet")
		}
	}
	opts := &socketio.Options{
		Adapter: cl.Adapter,
		Options: engineio.Options{
			Logger:        log,
			SendQueueSize: cfg.SendQueue,
			PingInterval:  cfg.PingInterval,
			PingTimeout:   cfg.PingTimeout,
		},
	}
	setRecovery(opts, cfg.Recovery)
	srv := socketio.NewServer(opts)
	var async *sync.WaitGroup
	if cfg.AckAsync {
		async = &sync.WaitGroup{}
		defer async.Wait() // after Shutdown: the broadcasts end by their timeout
	}
	for _, name := range cfg.Namespaces {
		nsp := srv.Of(name)
		nsp.OnConnection(func(s *socketio.Socket) { serveSocket(nsp, s, awaiter, log, rep, async) })
	}

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		st := nodeStatus{Node: b.NodeID(), Nodes: cl.Nodes(), Clients: srv.Engine().Count(), Bus: b.Status(), Stats: b.Stats(),
			Goroutines: runtime.NumGoroutine(), RSS: readRSS()}
		st.Bus.StateName = st.Bus.State.String()
		w.Header().Set("Content-Type", "application/json")
		// A write error means the caller went away.
		_ = json.NewEncoder(w).Encode(st)
	})
	if cfg.Routing {
		// Like durasock's /readyz: a node that served before it knew the
		// other nodes' rooms would route its first events to no one.
		rctx, cancel := context.WithTimeout(ctx, routingReadyTimeout)
		if err := cl.AwaitRoutingReady(rctx); err != nil {
			log.Error("nemesis node: serving before interest routing is ready", "err", err)
		}
		cancel()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return errors.Join(fmt.Errorf("listen: %w", err), closeNodeBus(cl, b, time.Second))
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	rep.send(report{Kind: "listening", Addr: ln.Addr().String()})

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	drain := cfg.DrainTimeout
	if drain <= 0 {
		drain = 10 * time.Second
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	errs := []error{srv.Shutdown(shutCtx), hs.Shutdown(shutCtx)}
	if err := cl.Close(shutCtx); err != nil {
		errs = append(errs, fmt.Errorf("cluster close: %w", err))
	}
	if err := b.Close(shutCtx); err != nil {
		errs = append(errs, fmt.Errorf("bus close: %w", err))
	}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		errs = append(errs, serveErr)
	}
	return errors.Join(errs...)
}

// routingReadyTimeout bounds how long a node with interest routing waits,
// before it listens, to know every live node's interest: below the 30 s the
// harness waits for a node to listen, above a Redis outage of the nemesis plus
// the 1.25 heartbeat intervals AwaitRoutingReady takes once connected.
const routingReadyTimeout = 20 * time.Second

// routingAwaiter is what a cluster with interest routing offers to wait until
// every live node has applied this node's interest (rooms) in a namespace.
// With routing, a room joined here counts cluster-wide only then: a broadcast
// from another node sent before may not be routed to this node. As with
// @socket.io/redis-adapter's sharded mode, where a join resolves once the
// subscription is made, the node acks a join only after AwaitRouting, so a
// session is ready (and owed every event) only once the cluster routes its
// rooms here. It is found by type assertion, so that the node builds with
// clusters that lack it.
type routingAwaiter interface {
	AwaitRouting(ctx context.Context, nsp string) error
}

// joinRoutingTimeout bounds a join's wait for AwaitRouting: below the time
// the clients wait for the join's ack (joinTimeout, which also covers a Go
// client's dial, and the 10 s of js/clients.mjs), so that a client hears the
// answer and asks again rather than timing out.
const joinRoutingTimeout = 3 * time.Second

// notRoutedPrefix starts the answer to a join that the cluster did not route
// within joinRoutingTimeout: the session is not ready, the client asks again.
const notRoutedPrefix = "join not routed: "

// serveSocket is the workload's application on one socket. awaiter, when not
// nil, is waited on before a join is acked.
func serveSocket(nsp *socketio.Namespace, s *socketio.Socket, awaiter routingAwaiter, log *slog.Logger, rep *reporter, async *sync.WaitGroup) {
	s.On(joinEvent, func(e *socketio.Event) {
		var rooms []string
		for _, a := range e.Args {
			var r string
			if err := json.Unmarshal(a, &r); err != nil {
				_ = e.Ack("bad room")
				return
			}
			rooms = append(rooms, r)
		}
		s.Join(rooms...)
		res := "ok"
		if awaiter != nil {
			// The wait runs on this socket's handler runner: the client
			// sends nothing else before the ack.
			ctx, cancel := context.WithTimeout(context.Background(), joinRoutingTimeout)
			err := awaiter.AwaitRouting(ctx, nsp.Name())
			cancel()
			if err != nil {
				res = notRoutedPrefix + err.Error()
			}
		}
		if err := e.Ack(res); err != nil {
			log.Warn("nemesis node: join ack", "err", err)
		}
	})
	s.On(publishEvent, func(e *socketio.Event) {
		var room string
		var pub int
		var seq uint64
		if err := e.Bind(&room, &pub, &seq); err != nil {
			_ = e.Ack("bad publish: " + err.Error())
			return
		}
		var withAck bool
		if len(e.Args) > 4 {
			if err := json.Unmarshal(e.Args[4], &withAck); err != nil {
				_ = e.Ack("bad publish: " + err.Error())
				return
			}
		}
		// A pair: seq to room as a plain broadcast, then seq+1 to pairRoom
		// with acknowledgements, back to back.
		var pairRoom string
		if len(e.Args) > 5 {
			if err := json.Unmarshal(e.Args[5], &pairRoom); err != nil {
				_ = e.Ack("bad publish: " + err.Error())
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		payload := func(seq uint64) []any {
			args := []any{pub, seq}
			if len(e.Args) > 3 {
				// The payload, passed on as is (copied: a background
				// broadcast outlives the event).
				args = append(args, json.RawMessage(slices.Clone(e.Args[3])))
			}
			return args
		}
		withAcks := func(room string, seq uint64) error {
			// The request plane: a broadcast whose clients answer. Its answers
			// do not matter here, its order among the plain broadcasts does.
			const timeout = 3 * time.Second
			start := time.Now()
			_, err := nsp.To(room).Timeout(timeout).EmitWithAck(ctx, dataEvent, payload(seq)...)
			checkLate(rep, "broadcast with acks", timeout, time.Since(start))
			return ackOutcome(err)
		}
		emit := func(room string, seq uint64) error {
			start := time.Now()
			err := nsp.To(room).Emit(ctx, dataEvent, payload(seq)...)
			checkLate(rep, "broadcast", publishTimeout, time.Since(start))
			return err
		}
		var err error
		switch {
		case pairRoom != "":
			err = emit(room, seq)
			if err == nil {
				err = withAcks(pairRoom, seq+1)
			}
		case withAck && async != nil:
			args := payload(seq)
			async.Add(1)
			go func() {
				defer async.Done()
				const timeout = 10 * time.Second
				actx, acancel := context.WithTimeout(context.Background(), 12*time.Second)
				defer acancel()
				start := time.Now()
				_, err := nsp.To(room).Timeout(timeout).EmitWithAck(actx, dataEvent, args...)
				checkLate(rep, "broadcast with acks (async)", timeout, time.Since(start))
				var missing *adapter.MissingRepliesError
				if err != nil && !errors.As(err, &missing) {
					log.Warn("nemesis node: broadcast with acks", "seq", seq, "err", err)
				}
			}()
		case withAck:
			err = withAcks(room, seq)
		default:
			err = emit(room, seq)
		}
		res := "ok"
		if err != nil {
			res = err.Error()
		}
		// The publisher may be gone; its history then says "unknown".
		_ = e.Ack(res)
	})
}

// publishTimeout bounds a node's broadcast of one publish.
const publishTimeout = 5 * time.Second

// lateMargin is how much past its timeout a request may return before it
// counts as late: far above scheduling delays on a loaded machine, far below
// a request that waits for something its timeout should have ended.
const lateMargin = 10 * time.Second

// checkLate reports a request that returned more than lateMargin past its
// timeout.
func checkLate(rep *reporter, op string, timeout, took time.Duration) {
	if took <= timeout+lateMargin {
		return
	}
	rep.send(report{Kind: "late", Op: op, TimeoutMs: timeout.Milliseconds(), TookMs: took.Milliseconds()})
}

// unknownPrefix starts the answer to a publish whose delivery cannot be
// known: the publisher records it as unknown, not accepted.
const unknownPrefix = "unknown: "

// ackOutcome is the outcome of a broadcast with acknowledgements for its
// publisher. Sockets that did not answer in time still got the event (their
// node counted them): accepted. A node that never answered may not have
// served the request at all (a node serves no request past its deadline, as
// after a replay): what its sockets got is unknown.
func ackOutcome(err error) error {
	var missing *adapter.MissingRepliesError
	if !errors.As(err, &missing) {
		return err
	}
	for _, m := range missing.Missing {
		if strings.HasPrefix(m, "node:") {
			return fmt.Errorf("%s%w", unknownPrefix, err)
		}
	}
	return nil
}

// readRSS returns this process's resident set size from /proc/self/status, or 0.
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if kb, err := strconv.ParseUint(f[0], 10, 64); err == nil {
					return kb * 1024
				}
			}
		}
	}
	return 0
}

func closeNodeBus(cl *cluster.Cluster, b *bus.Reliable, d time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var err error
	if cl != nil {
		err = cl.Close(ctx)
	}
	return errors.Join(err, b.Close(ctx))
}
