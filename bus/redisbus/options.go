package redisbus

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// Kind selects the transport.
type Kind int

// Transport kinds.
const (
	// Streams (the default) carries the reliable plane on Redis streams: XADD with
	// approximate MAXLEN trimming, read with XREAD BLOCK from the last id applied,
	// so a broken connection resumes where it stopped.
	Streams Kind = iota
	// PubSub carries the reliable plane on pub/sub channels (sharded on Redis
	// Cluster): the lowest latency, but what is published while a subscription is
	// down is lost (the bus detects and counts it as a gap).
	PubSub
)

func (k Kind) String() string {
	switch k {
	case Streams:
		return "streams"
	case PubSub:
		return "pubsub"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Defaults of Options.
const (
	DefaultPrefix           = "durasock"
	DefaultStreamPartitions = 8
	DefaultPubSubPartitions = 1
	DefaultStreamMaxLen     = 100_000
	DefaultBlockTimeout     = 5 * time.Second
	DefaultReadCount        = 512
	DefaultWaitTimeout      = time.Second
	DefaultDialTimeout      = 5 * time.Second
	DefaultWriteTimeout     = 5 * time.Second
	maxPartitions           = 1024
	minBlockTimeout         = 10 * time.Millisecond
	readMargin              = 2 * time.Second
)

// Options configure a transport. The zero value works: every zero field takes the
// default named in its comment, and -1 disables where that is said.
type Options struct {
	// URL names the Redis deployment (see ParseEndpoint). Open's url argument,
	// when not empty, takes its place.
	URL string
	// Kind is Streams (default) or PubSub.
	Kind Kind
	// Prefix starts every key and channel name. Default "durasock". Nodes of one
	// cluster must use the same Prefix; different clusters can share a Redis with
	// different prefixes.
	Prefix string
	// Partitions is the number of streams or channels of the reliable plane.
	// Default 8 for Streams (so a Redis Cluster spreads them over its primaries),
	// 1 for PubSub. Every node of a cluster must use the same number.
	Partitions int
	// StreamMaxLen bounds each stream with XADD MAXLEN ~ N (approximate, cheap
	// trimming). Default 100 000 entries per partition; -1 disables trimming.
	// A node disconnected for longer than the stream holds loses the trimmed
	// entries; the bus reports them as a gap.
	StreamMaxLen int64
	// BlockTimeout is the XREAD BLOCK time of the streams reader. Default 5s. A
	// read that gets no answer within BlockTimeout plus 2s fails Subscribe, which
	// catches a connection that died without closing.
	BlockTimeout time.Duration
	// ReadCount is the XREAD COUNT per stream and read. Default 512.
	ReadCount int64
	// WaitReplicas, when above 0, makes Publish send WAIT WaitReplicas WaitTimeout
	// after each batch (on the same connection) and fail with ErrNotReplicated
	// when fewer replicas acknowledged it, so that a failover cannot lose writes
	// Redis acknowledged but had not replicated. 0 (default) is off. Streams
	// only: the PubSub transport stores nothing and ignores it. On a Cluster the
	// count applies to each primary a batch touches.
	WaitReplicas int
	// WaitTimeout bounds WAIT. Default 1s.
	WaitTimeout time.Duration
	// DialTimeout bounds connecting to a server. Default 5s. The URL parameter
	// dial_timeout overrides it.
	DialTimeout time.Duration
	// WriteTimeout bounds writing a command and waiting for a non-blocking
	// command's reply on a connection (rueidis ConnWriteTimeout). Default 5s. The
	// URL parameter write_timeout overrides it.
	WriteTimeout time.Duration

	// Username and Password, when set, replace those of the URL.
	Username string
	Password string
	// SentinelUsername and SentinelPassword, when set, replace the URL's
	// sentinel_username and sentinel_password.
	SentinelUsername string
	SentinelPassword string

	// TLSConfig, when set, is used as is (cloned) for every connection and the
	// TLS fields below and in the URL are ignored.
	TLSConfig *tls.Config
	// CAFile, CertFile and KeyFile are PEM files: the CA to verify servers with
	// (default: the system pool) and a client certificate. They enable TLS even
	// for a redis:// URL and replace the URL's ca, cert and key.
	CAFile   string
	CertFile string
	KeyFile  string
	// InsecureSkipVerify disables server certificate verification (tests only).
	InsecureSkipVerify bool

	// Bus configures the reliable core that Open wraps around the transport
	// (node id, outbox bounds, backoff, probes, hooks, metrics); see bus.Config.
	Bus bus.Config

	// ConfigureClient, when set, is called with the final rueidis configuration
	// before the client is made, for settings this type does not cover.
	ConfigureClient func(*rueidis.ClientOption)
}

func (o *Options) setDefaults() {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Partitions == 0 {
		o.Partitions = DefaultStreamPartitions
		if o.Kind == PubSub {
			o.Partitions = DefaultPubSubPartitions
		}
	}
	if o.StreamMaxLen == 0 {
		o.StreamMaxLen = DefaultStreamMaxLen
	}
	if o.BlockTimeout == 0 {
		o.BlockTimeout = DefaultBlockTimeout
	}
	if o.ReadCount == 0 {
		o.ReadCount = DefaultReadCount
	}
	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = DefaultDialTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
}

func (o *Options) validate() error {
	switch {
	case o.Kind != Streams && o.Kind != PubSub:
		return fmt.Errorf("%w: unknown Kind %d", ErrBadOptions, int(o.Kind))
	case o.Partitions < 1 || o.Partitions > maxPartitions:
		return fmt.Errorf("%w: Partitions %d not in 1..%d", ErrBadOptions, o.Partitions, maxPartitions)
	case o.StreamMaxLen < -1:
		return fmt.Errorf("%w: StreamMaxLen %d (use -1 to disable trimming)", ErrBadOptions, o.StreamMaxLen)
	case o.BlockTimeout < minBlockTimeout:
		return fmt.Errorf("%w: BlockTimeout %v below %v", ErrBadOptions, o.BlockTimeout, minBlockTimeout)
	case o.ReadCount < 1:
		return fmt.Errorf("%w: ReadCount %d", ErrBadOptions, o.ReadCount)
	case o.WaitReplicas < 0:
		return fmt.Errorf("%w: WaitReplicas %d", ErrBadOptions, o.WaitReplicas)
	case o.WaitTimeout < time.Millisecond:
		return fmt.Errorf("%w: WaitTimeout %v", ErrBadOptions, o.WaitTimeout)
	case o.DialTimeout < 0 || o.WriteTimeout < 0:
		return fmt.Errorf("%w: negative timeout", ErrBadOptions)
	case strings.ContainsAny(o.Prefix, "{}\r\n "):
		return fmt.Errorf("%w: Prefix %q must not contain braces, spaces or newlines", ErrBadOptions, o.Prefix)
	}
	return nil
}
