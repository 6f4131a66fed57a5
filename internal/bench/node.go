package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/socketio"
)

// NodeConfig configures a relay node: a Socket.IO server built like cmd/durasock
// (the cluster adapter over the reliable Redis bus, or the in-memory adapter)
// whose only application logic is the relay: an event "pub" from a client is
// broadcast as "ev" to every other socket of the main namespace, across nodes.
type NodeConfig struct {
	Addr      string // listen address; default 127.0.0.1:0
	RedisURL  string // empty: in-memory adapter, one process
	Transport string // "streams" (default) or "pubsub"
	SendQueue int    // Engine.IO send queue per session; 0: the engine's default
	// PingInterval is the Engine.IO ping interval; 0: the engine's default.
	PingInterval time.Duration
	// TCPKeepAlive is engineio.Options.TCPKeepAlive.
	TCPKeepAlive time.Duration
	// Routing turns interest routing on: redisbus inboxes
	// (redisbus.DefaultInboxes) and cluster.Options.InterestRouting.
	Routing bool
	Logger  *slog.Logger
}

// Event names of the relay protocol.
const (
	PublishEvent     = "pub"     // client -> node: [payload], broadcast to every other socket
	PublishRoomEvent = "pubroom" // client -> node: [payload], emitted to Room cluster-wide
	PublishToEvent   = "pubto"   // client -> node: [room, payload], emitted to that room cluster-wide
	RelayEvent       = "ev"      // node -> clients: [payload]
	// Room is the room PublishRoomEvent reaches. A client joins the room named
	// in its handshake auth {"room": name}.
	Room = "subs"
)

// NodeStatus is the JSON of a relay node's GET /status.
type NodeStatus struct {
	Clients    int         `json:"clients"`
	Node       string      `json:"node,omitempty"`
	Nodes      []string    `json:"nodes,omitempty"`
	Bus        *bus.Status `json:"bus,omitempty"`
	BusStats   *bus.Stats  `json:"bus_stats,omitempty"`
	EmitErrors uint64      `json:"emit_errors"`
	// Cuts counts the clients the node's Engine.IO server cut, by reason.
	Cuts engineio.Stats `json:"cuts"`
}

// MemStatus is the JSON of a relay node's GET /debug/mem, measured after a GC.
type MemStatus struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	Sys        uint64 `json:"sys"`
	Goroutines int    `json:"goroutines"`
	VmRSS      uint64 `json:"vm_rss"` // bytes, from /proc/self/status (0 elsewhere)
	Clients    int    `json:"clients"`
}

// RunNode serves a relay node until ctx is done. ready is called with the
// listening address once it accepts connections.
func RunNode(ctx context.Context, cfg NodeConfig, ready func(addr string)) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	addr := cfg.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	// A long connect timeout, for the reason of the header timeout below: a
	// client's CONNECT can wait behind the load generator's collections.
	opts := &socketio.Options{ConnectTimeout: 5 * time.Minute,
		Options: engineio.Options{Logger: log, SendQueueSize: cfg.SendQueue, PingInterval: cfg.PingInterval,
			TCPKeepAlive: cfg.TCPKeepAlive}}
	var (
		rb *bus.Reliable
		cl *cluster.Cluster
	)
	if cfg.RedisURL != "" {
		kind := redisbus.Streams
		switch cfg.Transport {
		case "", "streams":
		case "pubsub":
			kind = redisbus.PubSub
		default:
			return fmt.Errorf("bench: transport %q: want streams or pubsub", cfg.Transport)
		}
		var err error
		ropts := &redisbus.Options{Kind: kind, Bus: bus.Config{Logger: log}}
		if cfg.Routing {
			ropts.Inboxes = redisbus.DefaultInboxes
		}
		rb, err = redisbus.Open(ctx, cfg.RedisURL, ropts)
		if err != nil {
			return fmt.Errorf("bench: redis bus: %w", err)
		}
		cl, err = cluster.New(rb, &cluster.Options{Logger: log, InterestRouting: cfg.Routing})
		if err != nil {
			return errors.Join(fmt.Errorf("bench: cluster: %w", err), closeBus(rb))
		}
		opts.Adapter = cl.Adapter
	}
	srv := socketio.NewServer(opts)
	var emitErrors atomic.Uint64
	srv.OnConnection(func(s *socketio.Socket) {
		var auth struct{ Room string }
		if err := json.Unmarshal(s.Handshake().Auth, &auth); err == nil && auth.Room != "" {
			s.Join(auth.Room)
		}
		s.On(PublishRoomEvent, func(e *socketio.Event) {
			if len(e.Args) != 1 {
				emitErrors.Add(1)
				return
			}
			if err := srv.Of("/").To(Room).Emit(context.Background(), RelayEvent, e.Args[0]); err != nil {
				if emitErrors.Add(1) == 1 {
					log.Warn("relay: room emit failed", "err", err)
				}
			}
		})
		s.On(PublishToEvent, func(e *socketio.Event) {
			var room string
			if len(e.Args) != 2 || json.Unmarshal(e.Args[0], &room) != nil {
				emitErrors.Add(1)
				return
			}
			if err := srv.Of("/").To(room).Emit(context.Background(), RelayEvent, e.Args[1]); err != nil {
				if emitErrors.Add(1) == 1 {
					log.Warn("relay: room emit failed", "err", err)
				}
			}
		})
		s.On(PublishEvent, func(e *socketio.Event) {
			if len(e.Args) != 1 {
				emitErrors.Add(1)
				return
			}
			if err := s.Broadcast().Emit(context.Background(), RelayEvent, e.Args[0]); err != nil {
				if emitErrors.Add(1) == 1 {
					log.Warn("relay: broadcast failed", "err", err)
				}
			}
		})
	})

	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		st := NodeStatus{Clients: srv.Engine().Count(), EmitErrors: emitErrors.Load(), Cuts: srv.Engine().Stats()}
		if rb != nil {
			bs, stats := rb.Status(), rb.Stats()
			bs.StateName = bs.State.String()
			st.Node, st.Nodes, st.Bus, st.BusStats = rb.NodeID(), cl.Nodes(), &bs, &stats
		}
		writeJSON(w, st)
	})
	mux.HandleFunc("GET /debug/mem", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		rss, err := ReadVmRSS(os.Getpid())
		if err != nil {
			rss = 0 // not Linux: the MemStats numbers stand alone
		}
		writeJSON(w, MemStatus{HeapInuse: m.HeapInuse, StackInuse: m.StackInuse, HeapAlloc: m.HeapAlloc,
			Sys: m.Sys, Goroutines: runtime.NumGoroutine(), VmRSS: rss, Clients: srv.Engine().Count()})
	})
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return errors.Join(fmt.Errorf("bench: listen: %w", err), closeCluster(cl, rb))
	}
	// A long header timeout: on a saturated or emulated machine (bench/vm)
	// a client's first bytes can wait for seconds behind its own process's
	// collections, and a benchmark node has no slow-header attack to fear.
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 2 * time.Minute}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if ready != nil {
		ready(ln.Addr().String())
	}
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := []error{srv.Shutdown(shutCtx), hs.Shutdown(shutCtx), closeCluster(cl, rb)}
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		errs = append(errs, serveErr)
	}
	return errors.Join(errs...)
}

func closeCluster(cl *cluster.Cluster, rb *bus.Reliable) error {
	if rb == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var err error
	if cl != nil {
		err = cl.Close(ctx)
	}
	return errors.Join(err, rb.Close(ctx))
}

func closeBus(rb *bus.Reliable) error { return closeCluster(nil, rb) }

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	// A write error means the caller went away.
	_ = json.NewEncoder(w).Encode(v)
}

// ReadVmRSS returns the resident set size of a process, in bytes, from
// /proc/<pid>/status.
func ReadVmRSS(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest)
			if len(f) < 1 {
				break
			}
			kb, err := strconv.ParseUint(string(f[0]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bench: VmRSS %q: %w", rest, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS in /proc/%d/status", pid)
}
