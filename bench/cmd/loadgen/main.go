// Command loadgen reproduces durasock's headline numbers on one machine: it
// starts its own redis-server (temporary directory, free port on 127.0.0.1) and
// durasock nodes as separate processes, drives them with real Socket.IO clients
// and prints a table (JSON with -json).
//
//	go run ./bench/cmd/loadgen broadcast
//	go run ./bench/cmd/loadgen rooms
//	go run ./bench/cmd/loadgen redis-kill
//	go run ./bench/cmd/loadgen scale
//	go run ./bench/cmd/loadgen idle-memory
//	go run ./bench/cmd/loadgen all
//
// See bench/README.md for what every number means.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/durasock/durasock/internal/bench"
)

func main() {
	bench.NodeMain() // a relay node process started by this program
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: loadgen [flags] broadcast|rooms|scale|redis-kill|idle-memory|all")
		fs.PrintDefaults()
	}
	var (
		server      = fs.String("server", bench.ServerRelay, `nodes: "relay" (this program as a node; publishers emit on a socket) or "durasock" (cmd/durasock; publishers use POST /api/emit)`)
		durasockBin = fs.String("durasock-bin", "", "cmd/durasock binary for -server durasock (default: go build it)")
		transports  = fs.String("transports", "streams,pubsub", "Redis transports to run, comma-separated")
		jsonOut     = fs.Bool("json", false, "print JSON instead of tables")
		rates       = fs.String("rates", "12000", "broadcast: total events/s, comma-separated steps")
		duration    = fs.Duration("duration", 10*time.Second, "broadcast: duration of each step")
		subscribers = fs.Int("subscribers", 20, "broadcast: subscribers on node B; redis-kill: clients spread over both nodes")
		publishers  = fs.Int("publishers", 1, "broadcast: publishers on node A sharing the rate")
		size        = fs.Int("size", 0, "broadcast, redis-kill: payload bytes (0: about 30)")
		killRate    = fs.Float64("kill-rate", 200, "redis-kill: total events/s, split over the publishers")
		killPubs    = fs.Int("kill-publishers", 2, "redis-kill: 2: one publisher per node; 1: one publisher, on the first node")
		fsync       = fs.String("fsync", "everysec", "redis-kill: Redis appendfsync (everysec, always, no)")
		stopAtKill  = fs.Bool("stop-at-kill", false, "redis-kill: publishers stop when Redis is killed")
		slowClients = fs.Int("kill-slow-clients", 0, "redis-kill: clients of node 1 that stop reading at the kill (they must be cut as slow clients; the others must get everything)")
		before      = fs.Duration("before", 3*time.Second, "redis-kill: run time before the kill")
		outage      = fs.Duration("outage", 10*time.Second, "redis-kill: how long Redis stays dead")
		after       = fs.Duration("after", 5*time.Second, "redis-kill: run time after the restart")
		conns       = fs.String("conns", "10000", "idle-memory: idle connections, comma-separated ascending steps measured in turn on one node (e.g. 10000,50000,100000)")
		ping        = fs.Duration("ping-interval", 0, "nodes' Engine.IO ping interval (0: the server's default, 25s); idle-memory: a shorter one is the heartbeat load of more connections")
		sourceAddrs = fs.Int("source-addrs", 0, "idle-memory: loopback source addresses 127.0.0.1..N the clients dial from (0: one per 20 000 connections)")
		idleSettle  = fs.Duration("idle-settle", bench.DefaultIdleSettle, "idle-memory: wait after the last connection, over which the node's idle CPU is measured")
		roomRuns    = fs.String("runs", "relay:streams,node:pubsub,node:streams", "rooms: server:transport runs (servers relay, durasock, node)")
		roomRates   = fs.String("room-rates", "6000,12000,18000", "rooms: total events/s, comma-separated steps")
		roomPubs    = fs.Int("room-publishers", 4, "rooms: publishers spread over the nodes")
		nodes       = fs.Int("nodes", 2, "rooms: node processes")
		scaleNodes  = fs.String("scale-nodes", "1,2,4,8", "scale: cluster sizes (node processes), one run each")
		scaleRate   = fs.Float64("scale-rate", 2000, "scale: total events/s, the same for every cluster size")
		scaleSubs   = fs.Int("scale-subscribers", 64, "scale: subscribers spread over the nodes")
		scaleRooms  = fs.Int("scale-rooms", 32, "scale: rooms (subscriber i joins room i % rooms; event seq goes to room seq % rooms)")
		scaleTr     = fs.String("scale-transport", "streams", "scale: Redis transport")
		cpuProfile  = fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file (nodes serve /debug/pprof/)")
		sendQueue   = fs.Int("send-queue", 0, "relay nodes: Engine.IO send queue per session (0: the engine's default, 4096)")
		routing     = fs.Bool("routing", false, "durasock nodes: interest routing on (each node reads only its inbox: what its sockets' rooms need)")
	)
	var keepAlive time.Duration
	fs.Func("tcp-keepalive", "relay and durasock nodes: TCP keepalive of WebSocket connections after this idle time (0: none, the product's default; -1: Go's listener default, 15s)", func(s string) error {
		if s == "-1" {
			keepAlive = -1
			return nil
		}
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return errors.New("want a duration, 0 or -1")
		}
		keepAlive = d
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("one scenario expected")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	scenario := fs.Arg(0)
	switch scenario {
	case "broadcast", "rooms", "scale", "redis-kill", "idle-memory", "all":
	default:
		return fmt.Errorf("unknown scenario %q", scenario)
	}
	common := bench.Common{Server: *server, DurasockBin: *durasockBin, SendQueue: *sendQueue, PingInterval: *ping, TCPKeepAlive: keepAlive, Routing: *routing,
		Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	if *server == bench.ServerDurasock && common.DurasockBin == "" {
		dir, err := os.MkdirTemp("", "loadgen-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if common.DurasockBin, err = bench.BuildDurasock(ctx, dir); err != nil {
			return err
		}
	}
	rs, err := parseRates(*rates)
	if err != nil {
		return err
	}
	trs := strings.Split(*transports, ",")
	results := map[string]any{}
	var errs []error
	if scenario == "broadcast" || scenario == "all" {
		r, err := bench.Broadcast(ctx, bench.BroadcastConfig{Common: common, Transports: trs, Rates: rs,
			Duration: *duration, Subscribers: *subscribers, Publishers: *publishers, PayloadSize: *size})
		results["broadcast"] = r
		errs = append(errs, err)
		if !*jsonOut {
			fmt.Fprintln(stdout, "broadcast: 2 nodes, one Redis; subscribers on node B, publishers on node A")
			if err := bench.PrintBroadcast(stdout, r); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
	}
	if scenario == "rooms" || scenario == "all" {
		rr, err := parseRates(*roomRates)
		if err != nil {
			return err
		}
		r, sum, err := bench.Rooms(ctx, bench.RoomsConfig{Common: common, Runs: strings.Split(*roomRuns, ","), Nodes: *nodes,
			Rates: rr, Duration: *duration, Subscribers: *subscribers, Publishers: *roomPubs, PayloadSize: *size})
		results["rooms"] = map[string]any{"steps": r, "summary": sum}
		errs = append(errs, err)
		if !*jsonOut {
			fmt.Fprintf(stdout, "rooms: %d nodes, one Redis; %d subscribers and %d publishers spread over the nodes; every event emitted to a room cluster-wide\n",
				*nodes, *subscribers, *roomPubs)
			if err := bench.PrintRooms(stdout, r, sum); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
	}
	if scenario == "scale" || scenario == "all" {
		ns, err := parseInts(*scaleNodes)
		if err != nil {
			return fmt.Errorf("-scale-nodes: %w", err)
		}
		r, err := bench.Scale(ctx, bench.ScaleConfig{Common: common, Transport: *scaleTr, Nodes: ns, Rate: *scaleRate,
			Duration: *duration, Subscribers: *scaleSubs, Rooms: *scaleRooms, PayloadSize: *size})
		results["scale"] = r
		errs = append(errs, err)
		if !*jsonOut {
			fmt.Fprintf(stdout, "scale: %.0f events/s in total, %d subscribers in %d rooms spread over the nodes, one publisher per node; every event emitted to one room cluster-wide\n",
				*scaleRate, *scaleSubs, *scaleRooms)
			if err := bench.PrintScale(stdout, r); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
	}
	if scenario == "redis-kill" || scenario == "all" {
		r, err := bench.RedisKill(ctx, bench.RedisKillConfig{Common: common, Transports: trs, Clients: *subscribers,
			Rate: *killRate, Publishers: *killPubs, Fsync: *fsync, StopAtKill: *stopAtKill, SlowClients: *slowClients, Size: *size, Before: *before, Outage: *outage, After: *after})
		results["redis_kill"] = r
		errs = append(errs, err)
		if !*jsonOut {
			fmt.Fprintf(stdout, "redis-kill: 2 nodes, %d clients over both, %.0f events/s from %d publisher(s); Redis (AOF, appendfsync %s) SIGKILLed for %s\n",
				*subscribers, *killRate, *killPubs, *fsync, *outage)
			if err := bench.PrintRedisKill(stdout, r); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
	}
	if scenario == "idle-memory" || scenario == "all" {
		steps, err := parseInts(*conns)
		if err != nil {
			return fmt.Errorf("-conns: %w", err)
		}
		r, err := bench.Idle(ctx, bench.IdleConfig{Common: common, Conns: steps, SourceAddrs: *sourceAddrs, Settle: *idleSettle})
		results["idle_memory"] = r
		errs = append(errs, err)
		if !*jsonOut {
			fmt.Fprintf(stdout, "idle-memory: %s idle WebSocket connections to one node\n", *conns)
			if err := bench.PrintIdle(stdout, r); err != nil {
				return err
			}
			fmt.Fprintln(stdout)
		}
	}
	results["load_average"] = bench.LoadAverage()
	if !*jsonOut {
		fmt.Fprintf(stdout, "load average at the end: %s\n", bench.LoadAverage())
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// parseInts parses a comma-separated list of positive integers.
func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: want positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("-rates %q: want positive numbers", s)
		}
		out = append(out, v)
	}
	return out, nil
}
