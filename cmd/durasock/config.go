package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/engineio"
)

// config is everything the binary can be told, by flag or by environment variable.
// A flag given on the command line wins over the environment.
type config struct {
	Addr         string
	AdminAddr    string // "" serves the admin endpoints on Addr
	AdminToken   string // "" admits loopback clients and -admin-addr only
	Path         string
	CORSOrigins  []string
	PingInterval time.Duration
	PingTimeout  time.Duration
	// TCPKeepAlive: engineio.Options.TCPKeepAlive (0: off on WebSocket
	// connections, -1: as the listener set it).
	TCPKeepAlive time.Duration
	MaxPayload   int64
	SendQueue    int
	SendBytes    int
	SlowClient   time.Duration
	Recovery     time.Duration
	RedisURL     string
	RedisMode    string // "streams" or "pubsub"
	WaitReplicas int
	// InterestRouting: each node reads only its inbox (redisbus inboxes,
	// cluster.Options.InterestRouting).
	InterestRouting bool
	// InterestKeep: cluster.Options.InterestKeep.
	InterestKeep time.Duration
	NodeID       string
	EmitToken    string
	Outbox       bus.OutboxConfig
	Retain       bus.RetainConfig
	// ReadyNeedsBus keeps /readyz at 503 until the bus reached Redis once.
	ReadyNeedsBus bool
	ShutdownDelay time.Duration
	DrainTimeout  time.Duration
	// HTTP server timeouts.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	LogLevel          slog.Level
	Demo              bool
	Version           bool
	Admin             adminConfig  // -parser and -admin-ui*, see adminui.go
	Compat            compatConfig // -cluster-protocol, -emitters…, see nodecompat.go
	// DemoClientDir holds socket.io-client's dist for the demo page.
	DemoClientDir string
}

// envPrefix is the prefix of every environment variable the binary reads.
const envPrefix = "DURASOCK_"

// envName is the environment variable of flag name.
func envName(name string) string {
	if name == "redis" {
		return envPrefix + "REDIS_URL"
	}
	return envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// errUsage wraps a configuration error so that main adds how to list the flags.
type errUsage struct{ err error }

func (e errUsage) Error() string { return e.err.Error() + " (durasock -h lists every flag)" }
func (e errUsage) Unwrap() error { return e.err }

// flagSet declares every flag into c; the string-typed choices land in the
// returned choices, checked by parseConfig.
func flagSet(c *config) (*flag.FlagSet, *choices) {
	ch := &choices{}
	fs := flag.NewFlagSet("durasock", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned, usage printed on -h only
	dur := func(p *time.Duration, name string, def time.Duration, usage string) {
		*p = def
		fs.Var(durationFlag{p: p}, name, usage)
	}
	durOrOff := func(p *time.Duration, name string, def time.Duration, usage string) {
		*p = def
		fs.Var(durationFlag{p: p, minusOne: true}, name, usage)
	}
	num := func(p *int, name string, def int, usage string) {
		*p = def
		fs.Var(intFlag{p: p}, name, usage)
	}
	num64 := func(p *int64, name string, def int64, usage string) {
		*p = def
		fs.Var(int64Flag{p: p}, name, usage)
	}
	boolean := func(p *bool, name string, def bool, usage string) {
		*p = def
		fs.Var(boolFlag{p: p}, name, usage)
	}
	fs.StringVar(&c.Addr, "addr", ":3000", "listen address of Socket.IO, the demo, /healthz and /readyz; \":3000\" is every interface, \"127.0.0.1:3000\" this machine only")
	fs.StringVar(&c.AdminAddr, "admin-addr", "", "serve /status, /dashboard and /metrics on this address (e.g. 127.0.0.1:9090) instead of -addr")
	fs.StringVar(&c.AdminToken, "admin-token", "", "bearer token for /status, /dashboard and /metrics; without it they answer only clients on this machine (loopback) or on -admin-addr")
	fs.StringVar(&c.Path, "path", "/socket.io/", "Socket.IO endpoint path")
	fs.StringVar(&ch.cors, "cors-origins", "", `comma-separated allowed CORS origins (with credentials), or "*" (any origin, without credentials)`)
	dur(&c.PingInterval, "ping-interval", 25*time.Second, "Engine.IO ping interval")
	dur(&c.PingTimeout, "ping-timeout", 20*time.Second, "Engine.IO ping timeout")
	durOrOff(&c.TCPKeepAlive, "tcp-keepalive", 0, "TCP keepalive probes of WebSocket connections after this much idle time; 0: none (the Engine.IO heartbeat finds dead peers sooner), -1: Go's default (15s)")
	num64(&c.MaxPayload, "max-payload", 1_000_000, "largest accepted message in bytes")
	num(&c.SendQueue, "send-queue", engineio.DefaultSendQueueSize, "messages queued per client before a client that cannot keep up is disconnected")
	num(&c.SendBytes, "send-queue-bytes", engineio.DefaultSendQueueBytes, "bytes queued per client, the byte bound of -send-queue; -1 disables it")
	durOrOff(&c.SlowClient, "slow-client-timeout", engineio.DefaultSlowClientTimeout, "a client that takes nothing of its full send queue for this long while other nodes' events wait for it is disconnected (\"slow client\"); -1 waits without bound")
	dur(&c.Recovery, "recovery", 0, "connection state recovery: how long the session of a client whose connection broke is kept for it, with the events it misses; 0 disables")
	fs.StringVar(&c.RedisURL, "redis", "", "Redis URL for the cluster adapter: redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// (env DURASOCK_REDIS_URL); empty runs one process with the in-memory adapter")
	fs.StringVar(&c.RedisMode, "redis-transport", "streams", `cluster bus transport: "streams" (durable, default) or "pubsub"`)
	num(&c.WaitReplicas, "redis-wait-replicas", 0, "replicas that must have a batch before it leaves the outbox (Redis WAIT); 1 keeps Sentinel and Cluster failovers from losing writes")
	boolean(&c.InterestRouting, "interest-routing", false, "with -redis streams: a node reads only the messages of its sockets' rooms (an inbox stream per node), not every message of the cluster; with -recovery, a client whose node is gone recovers on another node from its earlier node's inbox; every node of a cluster must use the same setting")
	dur(&c.InterestKeep, "interest-keep", time.Hour, "with -interest-routing: how long a node goes on writing to the inbox of a node it no longer hears (cut off from Redis, or stopped without goodbye) what that node's sockets asked for, so that it reads, once back, what it missed; counted in this node's own connected time; at least 3 × the 5 s heartbeat interval")
	fs.StringVar(&c.NodeID, "node-id", "", "this node's name in the cluster, unique among running processes (default: random at every start, or the one kept in -outbox-dir)")
	num(&c.Outbox.MaxMessages, "outbox-max-messages", bus.DefaultOutboxMaxMessages, "most cross-node messages buffered while Redis is unreachable; 0: default, -1: no bound")
	num64(&c.Outbox.MaxBytes, "outbox-max-bytes", bus.DefaultOutboxMaxBytes, "most bytes buffered while Redis is unreachable (also 64MiB, 512KiB); 0: default, -1: no bound")
	durOrOff(&c.Outbox.MaxAge, "outbox-max-age", bus.DefaultOutboxMaxAge, "buffered messages older than this are dropped, counted and logged; 0: default, -1: no bound")
	durOrOff(&c.Retain.Window, "retain-window", bus.DefaultRetainWindow, "how long a message Redis acknowledged is kept to be published again after the connection breaks (Redis may lose what it answered: appendfsync everysec on a kill, a failover to a lagging replica); 0: default, -1: off")
	num(&c.Retain.MaxMessages, "retain-max-messages", bus.DefaultRetainMaxMessages, "most acknowledged messages kept for -retain-window; 0: default, -1: no bound")
	num64(&c.Retain.MaxBytes, "retain-max-bytes", bus.DefaultRetainMaxBytes, "most bytes of acknowledged messages kept for -retain-window; 0: default, -1: no bound")
	fs.StringVar(&ch.overflow, "outbox-overflow", "reject-new", `what a full outbox does: "reject-new" (the emit fails) or "drop-oldest"`)
	fs.StringVar(&c.Outbox.Dir, "outbox-dir", "", "keep the outbox in this directory too, so that a node killed or crashed publishes at its next start what it had accepted and Redis had not taken; one directory per node process; it also keeps the node id")
	fs.StringVar(&ch.fsync, "outbox-fsync", "interval", `when the disk outbox syncs to stable storage: "interval" (every second; a host crash may lose the last second), "always" (every emit), "never"`)
	fs.StringVar(&c.EmitToken, "emit-token", "", "bearer token that enables the HTTP emit API at POST /api/emit")
	boolean(&c.ReadyNeedsBus, "ready-needs-redis", true, "with -redis, /readyz answers 503 until the node has reached Redis once")
	dur(&c.ShutdownDelay, "shutdown-delay", 0, "after SIGTERM, how long /readyz answers 503 while everything is still served, so that load balancers stop sending new clients before the drain")
	dur(&c.DrainTimeout, "drain-timeout", 10*time.Second, "how long the drain waits for clients to close and the outbox to reach Redis")
	dur(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has to send the headers of a request")
	dur(&c.ReadTimeout, "read-timeout", 30*time.Second, "time a client has to send a whole request (not WebSocket connections)")
	dur(&c.WriteTimeout, "write-timeout", 15*time.Second, "time a client has to take an answer, on top of the longest wait of the request (a long poll waits up to -ping-interval); not WebSocket connections")
	dur(&c.IdleTimeout, "idle-timeout", 60*time.Second, "an idle keep-alive HTTP connection is closed after this")
	fs.StringVar(&ch.level, "log-level", "info", "debug, info, warn or error")
	boolean(&c.Demo, "demo", true, "serve the demo chat page at /")
	boolean(&c.Version, "version", false, "print the version and exit")
	c.Admin.flags(fs)
	registerCompatFlags(fs, &c.Compat)
	fs.StringVar(&c.DemoClientDir, "demo-client-dir", "", "directory of the Socket.IO browser client the demo page loads (socket.io-client's dist from npm); default: node_modules/socket.io-client/dist or interop/node_modules/socket.io-client/dist if present")
	return fs, ch
}

// choices are the flags parsed from strings after the flag package is done.
type choices struct{ cors, level, overflow, fsync string }

// usage prints the flags.
func usage(w io.Writer) {
	fs, _ := flagSet(&config{})
	fmt.Fprintf(w, "Usage: durasock [flags]\n\n"+
		"A Socket.IO server. Without -redis it runs one process; with -redis every process\n"+
		"on that Redis serves one application. Every flag can also be set by an\n"+
		"environment variable: DURASOCK_ and the flag name in upper case, - as _\n"+
		"(the Redis URL is DURASOCK_REDIS_URL). A flag on the command line wins.\n\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs, ch := flagSet(c)

	// Environment first, as flag defaults; the command line then overrides them.
	var envErrs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envName(f.Name)
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	if err := errors.Join(envErrs...); err != nil {
		return nil, errUsage{err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stderr)
			return nil, err
		}
		return nil, errUsage{err}
	}
	if fs.NArg() > 0 {
		return nil, errUsage{fmt.Errorf("unexpected argument %q: flags start with -", fs.Arg(0))}
	}
	if c.Version {
		return c, nil
	}
	if err := c.resolve(ch); err != nil {
		return nil, errUsage{err}
	}
	return c, nil
}

// resolve checks the values and turns the string choices into settings.
func (c *config) resolve(ch *choices) error {
	if err := c.Admin.check(); err != nil {
		return err
	}
	if err := c.Compat.validate(c.RedisURL); err != nil {
		return err
	}
	for _, o := range strings.Split(ch.cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.CORSOrigins = append(c.CORSOrigins, o)
		}
	}
	switch strings.ToLower(ch.level) {
	case "debug":
		c.LogLevel = slog.LevelDebug
	case "info":
		c.LogLevel = slog.LevelInfo
	case "warn", "warning":
		c.LogLevel = slog.LevelWarn
	case "error":
		c.LogLevel = slog.LevelError
	default:
		return fmt.Errorf("-log-level %q: want debug, info, warn or error", ch.level)
	}
	switch ch.overflow {
	case "reject-new":
		c.Outbox.Overflow = bus.RejectNew
	case "drop-oldest":
		c.Outbox.Overflow = bus.DropOldest
	default:
		return fmt.Errorf("-outbox-overflow %q: want reject-new or drop-oldest", ch.overflow)
	}
	p, err := bus.ParseFsyncPolicy(ch.fsync)
	if err != nil {
		return fmt.Errorf("-outbox-fsync %q: want interval, always or never", ch.fsync)
	}
	c.Outbox.Fsync = p
	// 0 means the default, -1 no bound, as in bus.OutboxConfig.
	if c.Outbox.MaxMessages == 0 {
		c.Outbox.MaxMessages = bus.DefaultOutboxMaxMessages
	}
	if c.Outbox.MaxBytes == 0 {
		c.Outbox.MaxBytes = bus.DefaultOutboxMaxBytes
	}
	if c.Outbox.MaxAge == 0 {
		c.Outbox.MaxAge = bus.DefaultOutboxMaxAge
	}
	if c.SlowClient < 0 {
		c.SlowClient = -1 // engineio: no bound
	}
	for _, a := range []struct{ flag, addr string }{{"-addr", c.Addr}, {"-admin-addr", c.AdminAddr}} {
		if a.addr == "" && a.flag == "-admin-addr" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.addr); err != nil || port == "" {
			return fmt.Errorf("%s %q: want host:port, like :3000 or 127.0.0.1:3000", a.flag, a.addr)
		}
	}
	positive := []struct {
		name string
		v    time.Duration
	}{
		{"-ping-interval", c.PingInterval}, {"-ping-timeout", c.PingTimeout}, {"-drain-timeout", c.DrainTimeout},
		{"-read-header-timeout", c.ReadHeaderTimeout}, {"-read-timeout", c.ReadTimeout},
		{"-write-timeout", c.WriteTimeout}, {"-idle-timeout", c.IdleTimeout},
	}
	for _, p := range positive {
		if p.v <= 0 {
			return fmt.Errorf("%s %v: must be more than 0", p.name, p.v)
		}
	}
	switch {
	case c.Outbox.MaxMessages < -1:
		return fmt.Errorf("-outbox-max-messages %d: want a positive number, 0 (default) or -1 (no bound)", c.Outbox.MaxMessages)
	case c.Outbox.MaxBytes < -1:
		return fmt.Errorf("-outbox-max-bytes %d: want a positive number, 0 (default) or -1 (no bound)", c.Outbox.MaxBytes)
	case c.Retain.Window < -1:
		return fmt.Errorf("-retain-window %v: want a positive duration, 0 (default) or -1 (off)", c.Retain.Window)
	case c.Retain.MaxMessages < -1:
		return fmt.Errorf("-retain-max-messages %d: want a positive number, 0 (default) or -1 (no bound)", c.Retain.MaxMessages)
	case c.Retain.MaxBytes < -1:
		return fmt.Errorf("-retain-max-bytes %d: want a positive number, 0 (default) or -1 (no bound)", c.Retain.MaxBytes)
	case c.Outbox.MaxAge < -1:
		return fmt.Errorf("-outbox-max-age %v: want a positive duration, 0 (default) or -1 (no bound)", c.Outbox.MaxAge)
	case !strings.HasPrefix(c.Path, "/") || !strings.HasSuffix(c.Path, "/"):
		return fmt.Errorf("-path %q must start and end with /, like /socket.io/", c.Path)
	case c.TCPKeepAlive < -1:
		return fmt.Errorf("-tcp-keepalive %v: want a positive duration, 0 (off) or -1 (Go's default)", c.TCPKeepAlive)
	case c.Recovery < 0:
		return fmt.Errorf("-recovery %v: must not be negative (0 turns recovery off)", c.Recovery)
	case c.ShutdownDelay < 0:
		return fmt.Errorf("-shutdown-delay %v: must not be negative", c.ShutdownDelay)
	case c.SendBytes == 0 || c.SendBytes < -1:
		return fmt.Errorf("-send-queue-bytes %d: want a positive number, or -1 (no byte bound)", c.SendBytes)
	case c.SlowClient == 0:
		return errors.New("-slow-client-timeout 0: want a duration, or -1 (no bound)")
	case c.SendQueue <= 0:
		return fmt.Errorf("-send-queue %d: must be positive", c.SendQueue)
	case c.MaxPayload <= 0:
		return fmt.Errorf("-max-payload %d: must be positive", c.MaxPayload)
	case c.WaitReplicas < 0:
		return fmt.Errorf("-redis-wait-replicas %d: must not be negative", c.WaitReplicas)
	case c.RedisMode != "streams" && c.RedisMode != "pubsub":
		return fmt.Errorf("-redis-transport %q: want streams or pubsub", c.RedisMode)
	case c.InterestKeep < 15*time.Second:
		return fmt.Errorf("-interest-keep %v: must be at least 15s (the node timeout: 3 heartbeat intervals)", c.InterestKeep)
	case c.InterestRouting && c.RedisMode != "streams":
		return errors.New("-interest-routing needs -redis-transport streams (a node's inbox is a stream)")
	case c.AdminAddr != "" && c.AdminAddr == c.Addr:
		return fmt.Errorf("-admin-addr %q is -addr too: give it another port, or leave it out", c.AdminAddr)
	}
	return nil
}
