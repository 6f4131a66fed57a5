package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/sioclient"
)

// IdleConfig configures the idle-memory scenario: one node without Redis and
// idle Socket.IO connections over WebSocket, added in steps and measured at
// each.
type IdleConfig struct {
	Common
	// Conns are the connection counts measured in turn, ascending, on one
	// node: each step dials up to its count, waits Settle and measures.
	// Default {10000}.
	Conns       []int
	Concurrency int           // dials at once; default 64
	Settle      time.Duration // wait after a step's last connection before measuring; default 30s, more than one ping interval
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
// port range (32768–60999); the sockets take their ports at connect
// (bindNoPort).
const connsPerSourceAddr = 20000

// maxSourceAddrs is how many loopback source addresses the idle scenario
// can use: 127.0.0.1 … 127.0.0.254.
const maxSourceAddrs = 254

// fileReserve is the open files a process of the idle scenario needs
// besides one per connection (listener, pipes, Redis, HTTP clients).
const fileReserve = 256

// IdleResult is the memory and CPU a node spends on idle connections, at one
// step of the idle scenario.
type IdleResult struct {
	Server string `json:"server"`
	Conns  int    `json:"conns"`
	// Per connection, from the difference between before the first
	// connection and now: resident set size of the node process, and (relay
	// nodes only) the Go runtime's HeapInuse+StackInuse after a GC.
	RSSPerConn float64 `json:"rss_bytes_per_conn"`
	// RSSDialPerConn is the same at the end of the step's dialing, before the
	// settle wait: it includes the garbage of the handshakes that the runtime
	// has not given back yet.
	RSSDialPerConn    float64    `json:"rss_dial_bytes_per_conn"`
	HeapStackPerConn  float64    `json:"heap_stack_bytes_per_conn,omitempty"`
	HeapPerConn       float64    `json:"heap_bytes_per_conn,omitempty"`
	StackPerConn      float64    `json:"stack_bytes_per_conn,omitempty"`
	GoroutinesPerConn float64    `json:"goroutines_per_conn,omitempty"`
	Goroutines        int        `json:"goroutines,omitempty"` // the node's, relay nodes only
	RSSBefore         uint64     `json:"rss_before"`
	RSSAfter          uint64     `json:"rss_after"`
	Before            *MemStatus `json:"before,omitempty"`
	After             *MemStatus `json:"after,omitempty"`
	DialSeconds       float64    `json:"dial_seconds"` // this step's dialing
	// IdleCPU is the node's CPU seconds per second (1.0: one core) during the
	// settle wait, when every connection is idle but for its heartbeats.
	IdleCPU float64 `json:"idle_cpu_cores"`
	// MachineCPU is the whole machine's busy CPU over the same wait, the
	// kernel's included (cores), and SoftirqCPU the part of it in softirq:
	// the TCP work of idle connections (keepalive probes, the packets of
	// heartbeats) is counted there, not in the node's own CPU. Both count
	// whatever else the machine runs.
	MachineCPU float64 `json:"machine_cpu_cores"`
	SoftirqCPU float64 `json:"softirq_cpu_cores"`
	// PingInterval is the node's; HeartbeatsPerSec = Conns / PingInterval,
	// and CPUPerHeartbeatUs the node's idle CPU divided by them: what one
	// heartbeat (a ping written, its pong read) costs, the runtime included.
	PingInterval      time.Duration `json:"ping_interval"`
	HeartbeatsPerSec  float64       `json:"heartbeats_per_sec"`
	CPUPerHeartbeatUs float64       `json:"cpu_per_heartbeat_us"`
	// LoadgenRSSPerConn is the load generator's own resident memory per client
	// connection: it runs on the same machine.
	LoadgenRSSPerConn float64 `json:"loadgen_rss_bytes_per_conn"`
	SourceAddrs       int     `json:"source_addrs"`
}

// Idle runs the idle-memory scenario and returns one result per step that
// was measured; a step that cannot run (the open-file limit) ends it with an
// error saying why, after the steps before it.
func Idle(ctx context.Context, cfg IdleConfig) (_ []IdleResult, err error) {
	steps := slices.Clone(cfg.Conns)
	if len(steps) == 0 {
		steps = []int{10000}
	}
	if !slices.IsSorted(steps) || steps[0] <= 0 {
		return nil, fmt.Errorf("bench: idle steps %v: want ascending positive connection counts", steps)
	}
	maxConns := steps[len(steps)-1]
	positiveOr(&cfg.Concurrency, 64)
	positiveOr(&cfg.Settle, DefaultIdleSettle)
	if cfg.SourceAddrs <= 0 {
		cfg.SourceAddrs = min((maxConns+connsPerSourceAddr-1)/connsPerSourceAddr, maxSourceAddrs)
	}
	if cfg.SourceAddrs > maxSourceAddrs {
		return nil, fmt.Errorf("bench: %d source addresses: at most %d (127.0.0.1 … 127.0.0.%d)", cfg.SourceAddrs, maxSourceAddrs, maxSourceAddrs)
	}
	pingInterval := cfg.PingInterval
	positiveOr(&pingInterval, engineio.DefaultPingInterval)
	// The node and this process each hold one descriptor per connection;
	// nodes inherit the limit raised here.
	limit, limitErr := RaiseFileLimitTo(uint64(maxConns) + fileReserve)
	e, err := startEnv(ctx, &cfg.Common, TransportLocal, 1)
	if err != nil {
		return nil, err
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
	before, rssBefore, err := measure()
	if err != nil {
		return nil, err
	}
	ownBefore, err := ReadVmRSS(os.Getpid())
	if err != nil {
		return nil, err
	}
	d := &idleDialer{url: node.SocketURL(), httpClients: sourceAddrClients(cfg.SourceAddrs), concurrency: cfg.Concurrency}
	var results []IdleResult
	for _, n := range steps {
		if need := uint64(n) + fileReserve; limitErr != nil || limit < need {
			cause := errors.Join(limitErr, fileLimitCause(need))
			if cause == nil {
				cause = errors.New("raise it (ulimit -n)")
			}
			return results, fmt.Errorf("bench: %d connections need %d open files in the node and in this process; the limit is %d: %w",
				n, need, limit, cause)
		}
		cfg.logf("idle-memory: dialing up to %d connections from %d source address(es)", n, cfg.SourceAddrs)
		res := IdleResult{Server: node.Server, Conns: n, SourceAddrs: cfg.SourceAddrs, RSSBefore: rssBefore, Before: before, PingInterval: pingInterval}
		start := time.Now()
		dialed, err := d.dial(ctx, len(e.clients), n)
		e.clients = append(e.clients, dialed...) // closed by e.close
		if err != nil {
			return results, err
		}
		res.DialSeconds = time.Since(start).Seconds()
		rssDial, rssDialErr := ReadVmRSS(node.PID())
		cpu0, cpuErr := cpuSeconds(node.PID())
		busy0, soft0, machineErr := machineCPU()
		settleStart := time.Now()
		if err := sleepCtx(ctx, cfg.Settle); err != nil {
			return results, err
		}
		settled := time.Since(settleStart).Seconds()
		if cpu1, err := cpuSeconds(node.PID()); err == nil && cpuErr == nil {
			res.IdleCPU = (cpu1 - cpu0) / settled
		}
		if busy1, soft1, err := machineCPU(); err == nil && machineErr == nil {
			res.MachineCPU, res.SoftirqCPU = (busy1-busy0)/settled, (soft1-soft0)/settled
		}
		if res.After, res.RSSAfter, err = measure(); err != nil {
			return results, err
		}
		if err := e.clientErr(); err != nil {
			return results, err
		}
		if own, err := ReadVmRSS(os.Getpid()); err == nil {
			res.LoadgenRSSPerConn = (float64(own) - float64(ownBefore)) / float64(n)
		}
		if rssDialErr == nil {
			res.RSSDialPerConn = (float64(rssDial) - float64(rssBefore)) / float64(n)
		}
		if err := res.perConn(); err != nil {
			return results, err
		}
		results = append(results, res)
	}
	cfg.logf("idle-memory: closing %d connections", len(e.clients))
	return results, nil
}

// perConn fills in the per-connection figures from the totals.
func (r *IdleResult) perConn() error {
	n := float64(r.Conns)
	r.RSSPerConn = (float64(r.RSSAfter) - float64(r.RSSBefore)) / n
	r.HeartbeatsPerSec = n / r.PingInterval.Seconds()
	r.CPUPerHeartbeatUs = r.IdleCPU / r.HeartbeatsPerSec * 1e6
	if r.After == nil { // not a relay node: no runtime figures
		return nil
	}
	if r.After.Clients < r.Conns {
		return fmt.Errorf("bench: node counts %d clients, want %d", r.After.Clients, r.Conns)
	}
	b, a := r.Before, r.After
	r.HeapPerConn = (float64(a.HeapInuse) - float64(b.HeapInuse)) / n
	r.StackPerConn = (float64(a.StackInuse) - float64(b.StackInuse)) / n
	r.HeapStackPerConn = r.HeapPerConn + r.StackPerConn
	r.Goroutines = a.Goroutines
	r.GoroutinesPerConn = float64(a.Goroutines-b.Goroutines) / n
	return nil
}

// idleDialer opens the idle scenario's connections, concurrency at a time,
// spread over its HTTP clients (one per source address).
type idleDialer struct {
	url         string
	httpClients []*http.Client
	concurrency int
}

// dial opens connections from (the count already open) up to to, and
// returns those it opened, also when it fails.
func (d *idleDialer) dial(ctx context.Context, from, to int) ([]benchClient, error) {
	dialed := make([]*sioclient.Client, max(to-from, 0))
	var (
		wg       sync.WaitGroup
		next     atomic.Int64
		mu       sync.Mutex
		firstErr error
	)
	for range d.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(dialed) {
					return
				}
				// Generous: in an emulated machine (bench/vm) a dial waits
				// behind the collections of this process's growing heap.
				dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
				c, err := sioclient.Dial(dctx, d.url, &sioclient.Options{OnEvent: func(*sioclient.Event) {},
					HTTPClient: d.httpClients[(from+i)%len(d.httpClients)]})
				cancel()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("bench: connection %d: %w", from+i, err)
					}
					mu.Unlock()
					next.Store(int64(len(dialed))) // stop dialing
					return
				}
				dialed[i] = c
			}
		}()
	}
	wg.Wait()
	var open []benchClient
	for _, c := range dialed {
		if c != nil {
			open = append(open, c)
		}
	}
	return open, firstErr
}

// sourceAddrClients returns one HTTP client per loopback source address
// 127.0.0.1 … 127.0.0.n; with n = 1, the default client. Their connections
// send no TCP keepalive probes (the node's side does, as the product does):
// at 100 000 connections the load generator's own probes, every 15 s each,
// were thousands a second for an emulated kernel (bench/vm).
func sourceAddrClients(n int) []*http.Client {
	if n <= 1 {
		return []*http.Client{http.DefaultClient}
	}
	cs := make([]*http.Client, n)
	for i := range cs {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}, Control: bindNoPort, KeepAlive: -1}
		cs[i] = &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	}
	return cs
}
