package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/engineio"
)

// config is everything the binary can be told, by flag or by environment variable.
// A flag given on the command line wins over the environment.
type config struct {
	Addr         string
	Path         string
	CORSOrigins  []string
	PingInterval time.Duration
	PingTimeout  time.Duration
	MaxPayload   int64
	SendQueue    int
	SendBytes    int
	SlowClient   time.Duration
	Recovery     time.Duration
	RedisURL     string
	RedisMode    string // "streams" or "pubsub"
	WaitReplicas int
	EmitToken    string
	Outbox       bus.OutboxConfig
	DrainTimeout time.Duration
	LogLevel     slog.Level
	Demo         bool
	Compat       compatConfig // nodecompat.go
}

// envPrefix is the prefix of every environment variable the binary reads.
const envPrefix = "DURASOCK_"

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("durasock", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cors, level, overflow, fsync string
	fs.StringVar(&c.Addr, "addr", ":3000", "listen address (env DURASOCK_ADDR)")
	fs.StringVar(&c.Path, "path", "/socket.io/", "Socket.IO endpoint path (env DURASOCK_PATH)")
	fs.StringVar(&cors, "cors-origins", "", `comma-separated allowed CORS origins, or "*" (env DURASOCK_CORS_ORIGINS)`)
	fs.DurationVar(&c.PingInterval, "ping-interval", 25*time.Second, "Engine.IO ping interval (env DURASOCK_PING_INTERVAL)")
	fs.DurationVar(&c.PingTimeout, "ping-timeout", 20*time.Second, "Engine.IO ping timeout (env DURASOCK_PING_TIMEOUT)")
	fs.Int64Var(&c.MaxPayload, "max-payload", 1_000_000, "largest accepted message in bytes (env DURASOCK_MAX_PAYLOAD)")
	fs.IntVar(&c.SendQueue, "send-queue", engineio.DefaultSendQueueSize, "messages queued per client before a client that cannot keep up is disconnected (env DURASOCK_SEND_QUEUE)")
	fs.IntVar(&c.SendBytes, "send-queue-bytes", engineio.DefaultSendQueueBytes, "bytes queued per client, the byte bound of -send-queue; -1 disables it (env DURASOCK_SEND_QUEUE_BYTES)")
	fs.DurationVar(&c.SlowClient, "slow-client-timeout", engineio.DefaultSlowClientTimeout, "a client that takes nothing of its full send queue for this long while other nodes' events wait for it is disconnected (\"slow client\"); -1ns waits without bound (env DURASOCK_SLOW_CLIENT_TIMEOUT)")
	fs.DurationVar(&c.Recovery, "recovery", 0, "connection state recovery: how long the session of a client whose connection broke is kept for it, with the events it misses; 0 disables (env DURASOCK_RECOVERY)")
	fs.StringVar(&c.RedisURL, "redis", "", "Redis URL for the cluster adapter: redis://, rediss://, unix://, redis+sentinel://, redis+cluster:// (env DURASOCK_REDIS_URL); empty runs one process with the in-memory adapter")
	fs.StringVar(&c.RedisMode, "redis-transport", "streams", `cluster bus transport: "streams" (durable, default) or "pubsub" (env DURASOCK_REDIS_TRANSPORT)`)
	fs.IntVar(&c.WaitReplicas, "redis-wait-replicas", 0, "replicas that must have a batch before it leaves the outbox (Redis WAIT); 1 keeps Sentinel and Cluster failovers from losing writes (env DURASOCK_REDIS_WAIT_REPLICAS)")
	fs.IntVar(&c.Outbox.MaxMessages, "outbox-max-messages", bus.DefaultOutboxMaxMessages, "most cross-node messages buffered while Redis is unreachable (env DURASOCK_OUTBOX_MAX_MESSAGES)")
	fs.Int64Var(&c.Outbox.MaxBytes, "outbox-max-bytes", bus.DefaultOutboxMaxBytes, "most bytes buffered while Redis is unreachable (env DURASOCK_OUTBOX_MAX_BYTES)")
	fs.DurationVar(&c.Outbox.MaxAge, "outbox-max-age", bus.DefaultOutboxMaxAge, "buffered messages older than this are dropped, counted and logged (env DURASOCK_OUTBOX_MAX_AGE)")
	fs.StringVar(&overflow, "outbox-overflow", "reject-new", `what a full outbox does: "reject-new" (the emit fails) or "drop-oldest" (env DURASOCK_OUTBOX_OVERFLOW)`)
	fs.StringVar(&c.Outbox.Dir, "outbox-dir", "", "keep the outbox in this directory too, so that a node killed or crashed publishes at its next start what it had accepted and Redis had not taken; one directory per node process; it also keeps the node id (env DURASOCK_OUTBOX_DIR)")
	fs.StringVar(&fsync, "outbox-fsync", "interval", `when the disk outbox syncs to stable storage: "interval" (every second; a host crash may lose the last second), "always" (every emit), "never" (env DURASOCK_OUTBOX_FSYNC)`)
	fs.StringVar(&c.EmitToken, "emit-token", "", "bearer token that enables the HTTP emit API at POST /api/emit (env DURASOCK_EMIT_TOKEN)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", 10*time.Second, "how long shutdown waits for clients and the outbox (env DURASOCK_DRAIN_TIMEOUT)")
	fs.StringVar(&level, "log-level", "info", "debug, info, warn or error (env DURASOCK_LOG_LEVEL)")
	registerCompatFlags(fs, &c.Compat)
	fs.BoolVar(&c.Demo, "demo", true, "serve the demo chat page at / (env DURASOCK_DEMO)")

	// Environment first, as flag defaults; the command line then overrides them.
	var envErrs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := envPrefix + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if f.Name == "redis" {
			name = envPrefix + "REDIS_URL"
		}
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil {
				envErrs = append(envErrs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
		}
	})
	if err := errors.Join(envErrs...); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, o := range strings.Split(cors, ",") {
		if o = strings.TrimSpace(o); o != "" {
			c.CORSOrigins = append(c.CORSOrigins, o)
		}
	}
	if err := c.Compat.validate(c.RedisURL); err != nil {
		return nil, err
	}
	if err := c.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	switch overflow {
	case "reject-new":
		c.Outbox.Overflow = bus.RejectNew
	case "drop-oldest":
		c.Outbox.Overflow = bus.DropOldest
	default:
		return nil, fmt.Errorf("-outbox-overflow %q: want reject-new or drop-oldest", overflow)
	}
	if c.SlowClient < 0 {
		c.SlowClient = -1 // engineio: no bound
	}
	p, err := bus.ParseFsyncPolicy(fsync)
	if err != nil {
		return nil, fmt.Errorf("-outbox-fsync: %w", err)
	}
	c.Outbox.Fsync = p
	switch {
	case c.Outbox.MaxMessages <= 0 || c.Outbox.MaxBytes <= 0 || c.Outbox.MaxAge <= 0:
		return nil, errors.New("-outbox-max-messages, -outbox-max-bytes and -outbox-max-age must be positive")
	case !strings.HasPrefix(c.Path, "/") || !strings.HasSuffix(c.Path, "/"):
		return nil, fmt.Errorf("-path %q must start and end with /", c.Path)
	case c.PingInterval <= 0 || c.PingTimeout <= 0:
		return nil, errors.New("-ping-interval and -ping-timeout must be positive")
	case c.Recovery < 0:
		return nil, errors.New("-recovery must not be negative")
	case c.SendBytes == 0 || c.SendBytes < -1:
		return nil, errors.New("-send-queue-bytes must be positive, or -1")
	case c.SlowClient == 0:
		return nil, errors.New("-slow-client-timeout must not be 0 (negative: no bound)")
	case c.SendQueue <= 0:
		return nil, errors.New("-send-queue must be positive")
	case c.MaxPayload <= 0:
		return nil, errors.New("-max-payload must be positive")
	case c.WaitReplicas < 0:
		return nil, errors.New("-redis-wait-replicas must not be negative")
	case c.DrainTimeout <= 0:
		return nil, errors.New("-drain-timeout must be positive")
	case c.RedisMode != "streams" && c.RedisMode != "pubsub":
		return nil, fmt.Errorf("-redis-transport %q: want streams or pubsub", c.RedisMode)
	}
	return c, nil
}
