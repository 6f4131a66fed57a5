package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
)

// IdleConfig configures the idle-memory scenario: one node without Redis and
// Conns idle Socket.IO connections over WebSocket.
type IdleConfig struct {
	Common
	Conns       int           // default 10000
	Concurrency int           // dials at once; default 64
	Settle      time.Duration // wait after the last connection before measuring; default 30s, more than one ping interval
	// SourceAddrs spreads the clients over the loopback source addresses
	// 127.0.0.1 … 127.0.0.N, each with its own ephemeral port range (about 28 000
	// ports on Linux by default); default one per 20 000 connections.
	SourceAddrs int
}

// DefaultIdleSettle is the idle scenario's wait before measuring: longer
// than the default ping interval (25 s), so that the idle CPU includes every
// connection's heartbeat and the runtime has had time to return the memory
// that dialing freed.
const DefaultIdleSettle = 30 * time.Second

// connsPerSourceAddr is how many connections the idle scenario opens from
// one loopback source address by default, below Linux's default ephemeral
// port range (32768–60999).
const connsPerSourceAddr = 20000

// IdleResult is the memory a node spends on idle connections.
type IdleResult struct {
	Server string `json:"server"`
	Conns  int    `json:"conns"`
	// Per connection, from the difference between before and after: resident set
	// size of the node process, and (relay nodes only) the Go runtime's
	// HeapInuse+StackInuse after a GC.
	RSSPerConn float64 `json:"rss_bytes_per_conn"`
	// RSSDialPerConn is the same at the end of dialing, before the settle
	// wait: it includes the garbage of the handshakes that the runtime has
	// not given back yet.
	RSSDialPerConn    float64    `json:"rss_dial_bytes_per_conn"`
	HeapStackPerConn  float64    `json:"heap_stack_bytes_per_conn,omitempty"`
	HeapPerConn       float64    `json:"heap_bytes_per_conn,omitempty"`
	StackPerConn      float64    `json:"stack_bytes_per_conn,omitempty"`
	GoroutinesPerConn float64    `json:"goroutines_per_conn,omitempty"`
	RSSBefore         uint64     `json:"rss_before"`
	RSSAfter          uint64     `json:"rss_after"`
	Before            *MemStatus `json:"before,omitempty"`
	After             *MemStatus `json:"after,omitempty"`
	DialSeconds       float64    `json:"dial_seconds"`
	// IdleCPU is the node's CPU seconds per second (1.0: one core) during the
	// settle wait, when every connection is idle but for its heartbeats.
	IdleCPU     float64 `json:"idle_cpu_cores"`
	SourceAddrs int     `json:"source_addrs"`
}

// Idle runs the idle-memory scenario.
func Idle(ctx context.Context, cfg IdleConfig) (_ IdleResult, err error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 10000
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 64
	}
	if cfg.Settle <= 0 {
		cfg.Settle = DefaultIdleSettle
	}
	res := IdleResult{Server: cfg.Server, Conns: cfg.Conns}
	if res.Server == "" {
		res.Server = ServerRelay
	}
	if cfg.SourceAddrs <= 0 {
		cfg.SourceAddrs = (cfg.Conns + connsPerSourceAddr - 1) / connsPerSourceAddr
	}
	res.SourceAddrs = cfg.SourceAddrs
	if limit, err := RaiseFileLimitTo(uint64(cfg.Conns) + 256); err == nil && limit < uint64(cfg.Conns)+256 {
		return res, fmt.Errorf("bench: open file limit %d is too low for %d connections (raise the hard limit: ulimit -Hn)", limit, cfg.Conns)
	}
	e, err := startEnv(ctx, &cfg.Common, TransportLocal, 1)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, e.close()) }()
	node := e.nodes[0]
	relay := node.Server == ServerRelay

	measure := func() (*MemStatus, uint64, error) {
		var m *MemStatus
		if relay {
			m = &MemStatus{}
			if err := getJSON(ctx, node.URL()+"/debug/mem", m); err != nil {
				return nil, 0, err
			}
		}
		rss, err := ReadVmRSS(node.PID())
		return m, rss, err
	}
	if res.Before, res.RSSBefore, err = measure(); err != nil {
		return res, err
	}
	clientsFor := sourceAddrClients(cfg.SourceAddrs)
	cfg.logf("idle-memory: dialing %d connections from %d source address(es)", cfg.Conns, cfg.SourceAddrs)
	start := time.Now()
	clients := make([]*sioclient.Client, cfg.Conns)
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
	)
	for range cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= cfg.Conns {
					return
				}
				dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				c, err := sioclient.Dial(dctx, node.SocketURL(), &sioclient.Options{OnEvent: func(*sioclient.Event) {},
					HTTPClient: clientsFor[i%len(clientsFor)]})
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("bench: connection %d: %w", i, err)
					}
					mu.Unlock()
					next.Store(int64(cfg.Conns)) // stop dialing
					return
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	for _, c := range clients {
		if c != nil {
			e.clients = append(e.clients, c)
		}
	}
	if firstErr != nil {
		return res, firstErr
	}
	res.DialSeconds = time.Since(start).Seconds()
	rssDial, rssDialErr := ReadVmRSS(node.PID())
	cpu0, cpuErr := cpuSeconds(node.PID())
	settleStart := time.Now()
	if err := sleepCtx(ctx, cfg.Settle); err != nil {
		return res, err
	}
	if cpu1, err := cpuSeconds(node.PID()); err == nil && cpuErr == nil {
		res.IdleCPU = (cpu1 - cpu0) / time.Since(settleStart).Seconds()
	}
	if res.After, res.RSSAfter, err = measure(); err != nil {
		return res, err
	}
	if err := e.clientErr(); err != nil {
		return res, err
	}
	n := float64(cfg.Conns)
	res.RSSPerConn = (float64(res.RSSAfter) - float64(res.RSSBefore)) / n
	if rssDialErr == nil {
		res.RSSDialPerConn = (float64(rssDial) - float64(res.RSSBefore)) / n
	}
	if relay {
		if res.After.Clients < cfg.Conns {
			return res, fmt.Errorf("bench: node counts %d clients, want %d", res.After.Clients, cfg.Conns)
		}
		b, a := res.Before, res.After
		res.HeapPerConn = (float64(a.HeapInuse) - float64(b.HeapInuse)) / n
		res.StackPerConn = (float64(a.StackInuse) - float64(b.StackInuse)) / n
		res.HeapStackPerConn = res.HeapPerConn + res.StackPerConn
		res.GoroutinesPerConn = float64(a.Goroutines-b.Goroutines) / n
	}
	cfg.logf("idle-memory: closing %d connections", cfg.Conns)
	return res, nil
}

// sourceAddrClients returns one HTTP client per loopback source address
// 127.0.0.1 … 127.0.0.n; with n = 1, the default client.
func sourceAddrClients(n int) []*http.Client {
	if n <= 1 {
		return []*http.Client{http.DefaultClient}
	}
	cs := make([]*http.Client, n)
	for i := range cs {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}}
		cs[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	}
	return cs
}
