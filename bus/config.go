package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config defaults. In Config a zero value means the default and -1 disables the
// bound where the field says so.
const (
	DefaultOutboxMaxMessages = 100_000
	DefaultOutboxMaxBytes    = 64 << 20
	DefaultOutboxMaxAge      = 5 * time.Minute
	DefaultBackoffBase       = 100 * time.Millisecond
	DefaultBackoffCap        = 10 * time.Second
	DefaultBatchSize         = 2048
	DefaultBatchBytes        = 1 << 20
	DefaultPublishTimeout    = 5 * time.Second
	DefaultProbeInterval     = time.Second
	DefaultProbeTimeout      = 3 * time.Second
	DefaultRetainWindow      = 5 * time.Second
	DefaultRetainMaxMessages = 100_000
	DefaultRetainMaxBytes    = 32 << 20
)

// ErrInvalidConfig is wrapped by the errors of New for a Config it cannot use.
var ErrInvalidConfig = errors.New("bus: invalid config")

// OverflowPolicy says what Publish does when the outbox is at a bound.
type OverflowPolicy int

const (
	// RejectNew makes Publish return ErrOutboxFull at once; nothing already
	// accepted is dropped. The default.
	RejectNew OverflowPolicy = iota
	// DropOldest makes room by dropping the oldest messages of the outbox (reason
	// "overflow"), so that the newest state wins.
	DropOldest
)

func (p OverflowPolicy) String() string {
	switch p {
	case RejectNew:
		return "reject-new"
	case DropOldest:
		return "drop-oldest"
	}
	return fmt.Sprintf("OverflowPolicy(%d)", int(p))
}

// OutboxConfig bounds the outbox, the FIFO of accepted messages that the broker
// has not acknowledged yet. Memory stays within MaxBytes (plus per-message
// bookkeeping) under any outage length.
type OutboxConfig struct {
	// MaxMessages bounds the number of messages. Default 100 000; -1: no bound.
	MaxMessages int
	// MaxBytes bounds the encoded size of the messages. Default 64 MiB; -1: no
	// bound. Publish of a larger single message returns ErrTooLarge.
	MaxBytes int64
	// MaxAge drops messages that waited longer (reason "max_age"): after a long
	// outage, old events are worth less than a bounded delay. Default 5 minutes;
	// -1: no age bound.
	MaxAge time.Duration
	// Overflow is the policy at the count and byte bounds. Default RejectNew.
	Overflow OverflowPolicy
	// Dir, when set, keeps a copy of the outbox in this directory (created if
	// needed; one directory per node process, locked while it runs), so that a
	// node that is killed or crashes publishes, when it starts again on the same
	// directory, every message it had accepted and the broker had not taken,
	// in order and, at receivers, exactly once. The directory also keeps the
	// node id: with NodeID empty, a restart takes the id it had. Disk use stays
	// within MaxBytes plus one 8 MiB segment and small bookkeeping. Default ""
	// (memory only: a crash loses what the outbox held; Close drops it).
	Dir string
	// Fsync is when the disk outbox forces its writes to stable storage.
	// Default FsyncInterval (once a second). Every policy survives the process
	// being killed; FsyncAlways also survives a host crash, at the cost of one
	// fsync per Publish (shared by concurrent calls).
	Fsync FsyncPolicy
}

// RetainConfig bounds what the bus keeps of the messages the broker already
// acknowledged, so that it can publish them again when the connection breaks:
// a broker can lose writes it answered. Redis with appendfsync everysec (its
// default) replies to a write whose AOF write it postpones up to 2 s while a
// background fsync runs, and the fsync itself covers up to 1 s: a kill then
// loses up to about 3 s of acknowledged writes. A failover to a replica that
// had not received the last writes, and a restart from an older snapshot, lose
// them too. After the connection broke (a failed publish, ping or
// subscription, or a transport error wrapping ErrPrimaryChanged, such as a
// Cluster slot that moved), the bus publishes the retained messages again, in
// order and with their own origin, instance, partition and seq, before
// anything newer and before a probe announces them: receivers skip those they
// have, and those the broker lost arrive instead of being reported as a gap.
// It does so after every break: the copies the broker acknowledged again are
// retained for a window from then. A transport implementing SurvivorFinder
// (Redis streams) tells which of them the broker still holds: a broker loses
// acknowledged writes only as a suffix of each partition's log (an AOF, a
// snapshot and a replica are prefixes of the writes), so the bus publishes
// again only the retained messages after the newest one still there, per
// partition; nothing after a network cut or a restart that lost nothing.
//
// Retained messages are in memory only (the disk outbox releases a message
// when the broker acknowledges it). The window counts from the last time the
// broker was seen healthy, so an outage longer than the window still
// republishes what was acknowledged in the window before it; a republish that
// fails forgets nothing and is tried again whole. Messages accepted longer
// than Outbox.MaxAge before a republish are not published again (receivers may
// have forgotten their run): they are counted as evicted and logged.
type RetainConfig struct {
	// Window is how long after its acknowledgment a message is kept. Default
	// 5 s: the 3 s Redis can lose under everysec plus a margin for the time
	// the bus takes to see the break (a ping interval). -1 disables retention
	// (and republishing).
	Window time.Duration
	// MaxMessages bounds the retained messages; beyond it the oldest are
	// forgotten (durasock_bus_retained_evicted_total). Default 100 000; -1: no
	// bound.
	MaxMessages int
	// MaxBytes bounds their encoded size, likewise. Default 32 MiB; -1: no
	// bound.
	MaxBytes int64
}

// BackoffConfig shapes the waits between attempts after a broker error, for
// publishing, subscribing and probing alike: exponential with full jitter, the
// wait before attempt n+1 is uniform in [0, min(Cap, Base*2^(n-1))].
//
// A long wait does not delay the return to service: while the bus is not
// Connected (and probes are enabled) it pings the broker every 100 ms, each
// ping bounded by ProbeTimeout. These readiness pings are not attempts: they
// change neither the attempt count nor the state. The first one that answers
// after a failed ping ends every pending wait: the subscription and the
// publish are attempted again within a jitter of at most 100 ms. On a
// transport without a log (pub/sub) the publish waits 200 ms more (so that the
// other nodes, which see the broker back within their own 100 ms, are
// subscribed again before the backlog goes out); Redis streams keep the
// backlog for readers that come back later, so there it does not wait. Errors
// while the broker answers pings (a refused write) keep their full waits.
type BackoffConfig struct {
	// Base is the ceiling of the first wait. Default 100 ms.
	Base time.Duration
	// Cap is the largest ceiling. Default 10 s.
	Cap time.Duration
	// MaxAttempts consecutive failures make the bus Failed. A Failed bus keeps
	// buffering within the outbox bounds and keeps trying at the cap. Default 0:
	// never Failed.
	MaxAttempts int
}

// Config configures New.
type Config struct {
	// NodeID is this node's id in the cluster, 1 to 255 bytes. Default: 16 random
	// hex digits, new at every start. A stable id is fine too: every process start
	// also draws a random instance number, so receivers tell two runs apart, also
	// when a lagging reader sees the frames of the old and the new run
	// interleaved.
	//
	// Ids must be unique among running processes. Two live processes with one id
	// (a rolling deploy that starts the new process before the old one stopped)
	// are a configuration error that the bus detects and reports but does not
	// refuse: each delivers the other's reliable-plane messages written after it
	// started as another node's
	// (they are real events for its clients), drops the other's direct-plane
	// messages (no reply could be addressed to it), logs an error at most once a
	// minute, counts durasock_bus_node_id_conflicts_total and sets
	// Status.NodeIDConflict for a minute after the other's last frame (a readiness
	// check should fail on it). Other nodes keep the two runs apart (up to four
	// runs per id) and count durasock_bus_peer_id_conflicts_total. Requests
	// addressed to the id (Send) reach either process.
	NodeID string
	// Outbox bounds the messages waiting for the broker.
	Outbox OutboxConfig
	// Backoff shapes reconnect waits.
	Backoff BackoffConfig
	// Retain keeps acknowledged messages for a while, to publish them again
	// when the connection breaks (the broker may have lost them).
	Retain RetainConfig
	// BatchSize is the most frames written per Transport.Publish (one pipelined
	// round trip). Default 2048. A batch is what the outbox holds when the
	// sender is free, up to BatchSize and BatchBytes: the sender never waits
	// for a batch to fill, so a larger bound costs no latency at low rates and
	// drains a backlog in fewer round trips.
	BatchSize int
	// BatchBytes is the most bytes written per Transport.Publish; a larger single
	// frame goes alone. Default 1 MiB.
	BatchBytes int
	// PublishTimeout bounds one Transport.Publish; a publish that times out is
	// retried like any failed one. Default 5 s.
	PublishTimeout time.Duration
	// ProbeInterval is the period of liveness checks: a Ping, then (once Receive
	// was called) one probe frame per partition this node reads (with inbox
	// partitions, see Inboxer: on its own inbox only) published through the
	// reliable plane and expected back through this node's own subscription.
	// Probes also announce the last seq per partition that left the outbox, so
	// that receivers report the loss of a node's last messages (a bus that
	// never receives sends these announcements when they change and every 10
	// intervals; with inbox partitions, every bus sends them on the partitions
	// it wrote to and sends no probe to when they change, every interval for a
	// few seconds after a write, every 10 intervals for minutes after, and
	// again after a broken connection; every bus sends a final one at Close);
	// and other nodes report a node whose probes, or the every-interval
	// announcements it promised, stop (Stats.NodesGoneSilent, NodesClosed
	// after a final one). Nodes must share ProbeInterval and ProbeTimeout.
	// Default 1 s;
	// -1 disables pings and probes (the bus then starts as Connected and only
	// publish and subscribe errors change its state), including the readiness
	// pings that end backoff waits when the broker returns (BackoffConfig).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a ping may take and how long the probes may take to
	// come back. A probe that does not come back (while its partition delivers
	// nothing else and the handler is not running) is a probe failure: the
	// subscription is rebuilt, except in the rounds of the first ProbeTimeout
	// under a new subscription (a warm-up: rounds that wait 25 ms, 50 ms, …
	// and begin again, since pub/sub loses probes published before the
	// broker had the subscription). Default 3 s.
	ProbeTimeout time.Duration
	// OnDrop is called for every batch of accepted messages dropped by a bound
	// (max age, drop-oldest) or by a Close that ran out of time. It runs on the
	// goroutine that dropped (Publish or the sender) and must not block.
	OnDrop func(Drop)
	// OnGap is called when a receiver finds messages of another node missing (the
	// broker lost them, or their publisher dropped them). It runs on the receive
	// goroutine before the message after the gap is delivered (for a tail gap,
	// Gap.Tail, when the probe that revealed it arrives); it must not block.
	OnGap func(Gap)
	// OnStateChange is called with the new status at every state change, in order,
	// on a goroutine of the bus.
	OnStateChange func(Status)
	// Logger receives one line per state change and per drop or gap episode, never
	// one per message. Default slog.Default().
	Logger *slog.Logger
	// Registerer, when set, gets the durasock_ metrics of the bus. Wrap it
	// (prometheus.WrapRegistererWith) to run several buses in one process. Without
	// it the metrics are still kept; Stats reads them.
	Registerer prometheus.Registerer
}

// withDefaults resolves zero values and checks the rest.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, args ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if len(c.NodeID) > 255 {
		return bad("node id of %d bytes, at most 255", len(c.NodeID))
	}
	o := &c.Outbox
	switch {
	case o.MaxMessages == 0:
		o.MaxMessages = DefaultOutboxMaxMessages
	case o.MaxMessages < -1:
		return bad("Outbox.MaxMessages %d", o.MaxMessages)
	}
	switch {
	case o.MaxBytes == 0:
		o.MaxBytes = DefaultOutboxMaxBytes
	case o.MaxBytes < -1:
		return bad("Outbox.MaxBytes %d", o.MaxBytes)
	}
	switch {
	case o.MaxAge == 0:
		o.MaxAge = DefaultOutboxMaxAge
	case o.MaxAge < -1:
		return bad("Outbox.MaxAge %v", o.MaxAge)
	}
	if o.Overflow != RejectNew && o.Overflow != DropOldest {
		return bad("Outbox.Overflow %v", o.Overflow)
	}
	if o.Fsync < FsyncInterval || o.Fsync > FsyncNever {
		return bad("Outbox.Fsync %v", o.Fsync)
	}
	rt := &c.Retain
	switch {
	case rt.Window == 0:
		rt.Window = DefaultRetainWindow
	case rt.Window < -1:
		return bad("Retain.Window %v", rt.Window)
	}
	switch {
	case rt.MaxMessages == 0:
		rt.MaxMessages = DefaultRetainMaxMessages
	case rt.MaxMessages < -1:
		return bad("Retain.MaxMessages %d", rt.MaxMessages)
	}
	switch {
	case rt.MaxBytes == 0:
		rt.MaxBytes = DefaultRetainMaxBytes
	case rt.MaxBytes < -1:
		return bad("Retain.MaxBytes %d", rt.MaxBytes)
	}
	b := &c.Backoff
	switch {
	case b.Base == 0:
		b.Base = DefaultBackoffBase
	case b.Base < 0:
		return bad("Backoff.Base %v", b.Base)
	}
	switch {
	case b.Cap == 0:
		b.Cap = max(DefaultBackoffCap, b.Base)
	case b.Cap < b.Base:
		return bad("Backoff.Cap %v below Backoff.Base %v", b.Cap, b.Base)
	}
	if b.MaxAttempts < 0 {
		return bad("Backoff.MaxAttempts %d", b.MaxAttempts)
	}
	switch {
	case c.BatchSize == 0:
		c.BatchSize = DefaultBatchSize
	case c.BatchSize < 0:
		return bad("BatchSize %d", c.BatchSize)
	}
	switch {
	case c.BatchBytes == 0:
		c.BatchBytes = DefaultBatchBytes
	case c.BatchBytes < 0:
		return bad("BatchBytes %d", c.BatchBytes)
	}
	switch {
	case c.PublishTimeout == 0:
		c.PublishTimeout = DefaultPublishTimeout
	case c.PublishTimeout < 0:
		return bad("PublishTimeout %v", c.PublishTimeout)
	}
	switch {
	case c.ProbeInterval == 0:
		c.ProbeInterval = DefaultProbeInterval
	case c.ProbeInterval < -1:
		return bad("ProbeInterval %v", c.ProbeInterval)
	}
	switch {
	case c.ProbeTimeout == 0:
		c.ProbeTimeout = DefaultProbeTimeout
	case c.ProbeTimeout < 0:
		return bad("ProbeTimeout %v", c.ProbeTimeout)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// DropReason says why accepted messages were dropped.
type DropReason string

// Drop reasons (the reason label of durasock_bus_dropped_total).
const (
	// DropMaxAge: the messages waited longer than Outbox.MaxAge.
	DropMaxAge DropReason = "max_age"
	// DropOverflow: the drop-oldest policy made room for newer messages.
	DropOverflow DropReason = "overflow"
	// DropClosed: Close ran out of time before the broker took them.
	DropClosed DropReason = "closed"
)

// SeqRange is a run of sequence numbers of one partition, First <= Last.
type SeqRange struct {
	Partition   int
	First, Last uint64
}

// Drop describes accepted messages that will not be delivered (or, for frames
// whose publish was in progress, whose delivery is unknown).
type Drop struct {
	Reason DropReason
	// Origin is this node's id.
	Origin string
	Count  int
	Bytes  int64
	// Oldest is when the oldest dropped message was accepted.
	Oldest time.Time
	// Seqs are the dropped sequence numbers, one range per partition. Receivers
	// will report them as a gap.
	Seqs []SeqRange
}

// Gap describes messages of another node that a receiver never got.
type Gap struct {
	Origin    string
	Partition int
	// After is the last sequence received before the gap; Next the one received
	// after it. Missing is Next-After-1.
	After, Next uint64
	Missing     uint64
	// Tail is set for a gap found by the origin's probe rather than by a later
	// message: the probe announced that every seq up to Next-1 had been published
	// (or dropped by the origin's outbox), and After was the last one received.
	// Such a gap is reported even when the origin publishes nothing more.
	Tail bool
}
