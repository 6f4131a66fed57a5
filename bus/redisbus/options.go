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
	// Streams (the default) carries the reliable plane on Redis streams: XADD
	// trimmed by time (MINID) with a length cap, read with XREAD BLOCK from the
	// last id applied,
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
	// DefaultInboxes is the number of inbox partitions a cluster with
	// interest routing usually takes (Options.Inboxes): with a few dozen
	// nodes, few of them share an inbox.
	DefaultInboxes             = 256
	DefaultStreamMaxLen        = 1_000_000
	DefaultStreamRetention     = bus.DefaultOutboxMaxAge + time.Minute
	DefaultReadBytes           = 4 << 20
	DefaultSkipUnreadableAfter = 10 * time.Second
	DefaultBlockTimeout        = 5 * time.Second
	DefaultReadCount           = 512
	DefaultWaitTimeout         = time.Second
	DefaultDialTimeout         = 5 * time.Second
	DefaultWriteTimeout        = 5 * time.Second
	maxPartitions              = 1024
	minBlockTimeout            = 10 * time.Millisecond
	readMargin                 = 2 * time.Second
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
	// Inboxes is the number of inbox partitions that follow the Partitions
	// shared ones (Streams only): the transport's Partitions() is then
	// Partitions+Inboxes, and inbox partition Partitions+b is the stream
	// InboxKey(Prefix, b), with a hash tag of its own, so a Redis Cluster
	// spreads the inboxes over its primaries. A node reads the shared
	// partitions and only its own inbox (ReadPartitions, called by package
	// bus), so what is published for one node is read by that node alone.
	// Default 0: none, every node reads every partition. Partitions+Inboxes
	// is at most 1024. The URL parameter inboxes overrides it. Every node of
	// a cluster must use the same number.
	Inboxes int
	// StreamRetention is how long a stream keeps its entries: each XADD trims
	// with MINID ~ (the Redis server's time, read from the ids XADD returns,
	// minus StreamRetention), so the history is sized in time whatever the
	// rate. Default Bus.Outbox.MaxAge (bus.DefaultOutboxMaxAge when unset or
	// disabled) + 1 minute; -1 disables trimming by time. It must be at least the nodes' Outbox.MaxAge (plus the longest
	// time a reader may lag behind): a node may publish a message up to MaxAge
	// after accepting it, and a reader must still find it. Memory: the rate of
	// a partition times StreamRetention times the entry size
	// (docs/OPERATIONS.md).
	StreamRetention time.Duration
	// StreamMaxLen caps each stream's length as a memory safety net, with
	// XTRIM MAXLEN ~ N each time a partition took N/1000 entries (at least 1)
	// since its last trim (Redis takes one trim strategy per XADD, so the cap
	// is its own command; checking it every thousandth of the cap keeps it off
	// the per-batch command count and overshoots it by at most 0.1 %). Default 1 000 000 entries per
	// partition; -1 disables the cap. Entries it removes before their
	// retention time are counted (durasock_redisbus_stream_cap_trimmed_total)
	// and logged; a reader that had not read them reports them
	// (durasock_redisbus_reader_behind_trim_total) and the bus reports the
	// missing seqs as a gap.
	StreamMaxLen int64
	// BlockTimeout is the XREAD BLOCK time of the streams reader. Default 5s. A
	// read that gets no answer within BlockTimeout plus 2s fails Subscribe, which
	// catches a connection that died without closing.
	BlockTimeout time.Duration
	// ReadCount is the most XREAD COUNT per stream and read. Default 512.
	ReadCount int64
	// ReadBytes bounds the bytes a reader holds: the reader adapts COUNT
	// from the sizes of the entries it read, starting at 1 and doubling while
	// within budget, so the read it delivers and the next one, read ahead
	// meanwhile, stay within ReadBytes together (or one entry per partition
	// each, when entries are larger). Default 4 MiB; -1 disables (COUNT
	// is then always ReadCount). An entry whose reads fail again and again
	// while Redis keeps answering (larger than the client output buffer
	// limit, which makes Redis drop the reader) is skipped once it failed 3
	// times over at least SkipUnreadableAfter, counted
	// (durasock_redisbus_read_skipped_total) and logged; the bus reports its
	// seq as a gap.
	ReadBytes int64
	// SkipUnreadableAfter is how long reads at one position must keep failing,
	// while Redis answers, before that entry is skipped: long enough that a
	// short-lived cause (an operator lowering client-output-buffer-limit for a
	// moment) loses nothing. Default 10 s.
	SkipUnreadableAfter time.Duration
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
	if o.StreamRetention == 0 {
		o.StreamRetention = DefaultStreamRetention
		if o.Bus.Outbox.MaxAge > 0 {
			o.StreamRetention = o.Bus.Outbox.MaxAge + time.Minute
		}
	}
	if o.ReadBytes == 0 {
		o.ReadBytes = DefaultReadBytes
	}
	if o.SkipUnreadableAfter <= 0 {
		o.SkipUnreadableAfter = DefaultSkipUnreadableAfter
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
	case o.Inboxes < 0:
		return fmt.Errorf("%w: Inboxes %d (use 0 for none)", ErrBadOptions, o.Inboxes)
	case o.Inboxes > 0 && o.Kind == PubSub:
		// An inbox is read by its node only and must keep what arrives
		// while that node is away: a stream, not a channel.
		return fmt.Errorf("%w: Inboxes %d with the pub/sub transport (inbox partitions need Kind Streams)", ErrBadOptions, o.Inboxes)
	case o.Partitions+o.Inboxes > maxPartitions:
		return fmt.Errorf("%w: Partitions %d + Inboxes %d above %d", ErrBadOptions, o.Partitions, o.Inboxes, maxPartitions)
	case o.StreamMaxLen < -1:
		return fmt.Errorf("%w: StreamMaxLen %d (use -1 to disable trimming)", ErrBadOptions, o.StreamMaxLen)
	case o.StreamRetention < -1 || (o.StreamRetention > 0 && o.StreamRetention < time.Millisecond):
		return fmt.Errorf("%w: StreamRetention %v (use -1 to disable trimming by time)", ErrBadOptions, o.StreamRetention)
	case o.ReadBytes < -1:
		return fmt.Errorf("%w: ReadBytes %d (use -1 for no byte budget)", ErrBadOptions, o.ReadBytes)
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
