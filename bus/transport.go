package bus

import (
	"context"
	"errors"
)

// Frame is an encoded bus envelope on its way to or from a broker. The reliable bus
// (New) encodes and decodes frames; a Transport only carries their bytes.
type Frame struct {
	// Partition selects the stream or channel of the reliable plane
	// (0 <= Partition < Transport.Partitions()). It is -1 for a direct frame
	// (the best-effort plane of Send).
	Partition int
	Data      []byte
	// ID is the transport's position of the frame: a Redis stream entry id;
	// empty where the transport has none (pub/sub, direct frames). Transports set
	// it on the frames they deliver; Publish ignores it. Within a partition the
	// ids a transport delivers increase (MemoryHub: "0-1", "0-2", ..., compared
	// like Redis stream ids).
	ID string
	// NoWait asks the transport not to wait for replicas (Redis WAIT) after
	// writing this frame, even when it is configured to. The bus sets it on
	// liveness probes, whose only job is to check the path to the broker and
	// back, and on data frames while the broker is under-replicated (it then
	// waits for replicas itself through ReplicaWaiter). A batch waits when at
	// least one of its frames does not have NoWait.
	NoWait bool
	// Probe marks a liveness probe (the bus sets NoWait on it too). Only its
	// round trip matters: a ReplicaWaiter does not count it among the writes
	// replicas must confirm, and writes it to whichever primary serves.
	Probe bool
}

// ErrNotReplicated is the error (wrapped) a Transport's Publish returns when it
// wrote every frame of the batch to the broker but fewer replicas than it is
// configured to wait for acknowledged them in time. The frames are in the
// broker's log (readers may already have them); they are not yet safe from a
// failover. A bus over a Transport that also implements ReplicaWaiter does not
// publish them again: it keeps them in the outbox, waits for replicas with
// AwaitReplicas, and reports the condition as under-replication (Status,
// metric, log), not as a connection failure. Without ReplicaWaiter the bus
// treats it as any publish error.
var ErrNotReplicated = errors.New("bus: written, not yet replicated")

// ErrPrimaryChanged is the error (wrapped) a ReplicaWaiter returns when writes
// that replicas had not confirmed went to a primary that no longer serves (a
// failover, or a restart that lost them). AwaitReplicas returns it instead of
// confirming them; Publish returns it, before writing anything, for a batch
// whose frames would land on another primary than those unconfirmed writes:
// a receiver reading the new primary would otherwise see newer messages of
// this node before the lost ones, report those as a gap and drop them when
// they come again. The bus writes the unconfirmed frames again at once, ahead
// of the refused batch; receivers drop the duplicates.
var ErrPrimaryChanged = errors.New("bus: the primary changed before replicas confirmed the writes")

// ReplicaWaiter is implemented by a Transport whose Publish can return
// ErrNotReplicated (Redis streams with WaitReplicas).
type ReplicaWaiter interface {
	// AwaitReplicas waits until everything this transport wrote so far to the
	// given partitions is acknowledged by the configured number of replicas.
	// It returns nil when it is, an error wrapping ErrNotReplicated when it is
	// still not after the transport's wait timeout, and any other error when
	// the broker could not be asked (the bus then publishes the frames again,
	// since a failover may have lost them; receivers drop duplicates), in
	// particular ErrPrimaryChanged.
	//
	// Its Publish must also keep this node's order across a failover: while
	// frames of a partition wait for replicas, it writes further non-probe
	// frames of that partition only to the primary that holds them, and
	// otherwise returns ErrPrimaryChanged without writing them. A transport
	// that forgets the writes waiting for replicas when a Publish returns
	// ErrPrimaryChanged (any frames, probes too) must then return
	// ErrPrimaryChanged from the next AwaitReplicas of those partitions, not
	// nil: the sender may ask before the caller of that Publish told the bus,
	// and would confirm writes the new primary may lack.
	AwaitReplicas(ctx context.Context, partitions []int) error
}

// Transport is a broker connection driven by the reliable bus. Package redisbus
// implements it over Redis streams and over Redis pub/sub; NewMemoryHub provides an
// in-process one.
//
// A Transport never retries and never buffers: every call reports failure at once
// with an error, and the bus decides what to do (back off, retry, rebuild). A
// Transport must be usable while its broker is unreachable: calls fail until it is
// back, and then succeed without any other action.
type Transport interface {
	// Partitions is the number of partitions of the reliable plane (at least 1).
	Partitions() int
	// Publish writes frames in order (per partition) to the reliable plane. On
	// error the outcome of any frame of the batch is unknown; the bus publishes them
	// again and receivers drop the duplicates.
	Publish(ctx context.Context, frames []Frame) error
	// Send writes one frame to the best-effort plane: to node `to`, or to every
	// node when to is "".
	Send(ctx context.Context, to string, data []byte) error
	// Subscribe receives until ctx is done or the connection fails, and returns the
	// reason. deliver is called sequentially, in order per partition, for every frame
	// of the reliable plane (including this node's own) and every direct frame
	// addressed to nodeID or to all. A Transport that can (streams) resumes each call
	// where the previous one stopped, so a broken connection loses nothing the
	// broker kept. The first call starts where StartMarker.MarkStart fixed the
	// start, or, for a Transport without a start fixed earlier, at its own
	// beginning (pub/sub has no history).
	Subscribe(ctx context.Context, nodeID string, deliver func(Frame)) error
	// Ping checks that the broker answers.
	Ping(ctx context.Context) error
	// Close releases the connection; it is idempotent.
	Close() error
}

// StartMarker is implemented by a Transport whose reliable plane keeps a log it
// can read from a position (Redis streams). New calls MarkStart as soon as the
// broker answers, so that the first Subscribe, at Receive, delivers what other
// nodes published from New on instead of only what they publish after Receive.
// A Transport whose start is fixed at its creation (NewMemoryHub) or that has no
// history (pub/sub) does not implement it.
type StartMarker interface {
	// MarkStart fixes, on its first success, the position the first Subscribe
	// reads from: the current end of every partition. It is idempotent, and a
	// Subscribe that runs before any MarkStart succeeded fixes it itself.
	MarkStart(ctx context.Context) error
}

// SurvivorFinder is implemented by a Transport whose reliable plane keeps a
// log it can read backwards (Redis streams, NewMemoryHub). After a break the
// bus asks it which of the messages the broker acknowledged last (Config.Retain)
// the broker still holds, and publishes again only those after the newest that
// survived, instead of the whole retention window: a broker loses
// acknowledged writes only as a suffix of its log (an AOF or a snapshot is a
// prefix of the writes, and so is a replica), on each partition, so when a
// message survived, everything written before it to its partition did too. A
// Transport without it gets the whole window published again.
type SurvivorFinder interface {
	// FindSurvivor reads partition's log from its newest entry backwards, at
	// most limit entries, and calls match with each entry's frame bytes (which
	// it must not keep). It stops at the first entry for which match returns
	// i >= 0 and returns i, or returns -1 when match returned -2 (nothing
	// older can match), the log ended, or limit entries were read. It may
	// skip entries this transport wrote after the last Publish that
	// succeeded before the break (nothing of them is asked for). A log it
	// can never read (a command refused for good) counts as nothing found.
	// An error means the broker could not be asked now: the republish
	// fails like a failed publish, and the bus tries again after a backoff.
	FindSurvivor(ctx context.Context, partition, limit int, match func(data []byte) int) (int, error)
}

// Inboxer is implemented by a Transport whose reliable plane ends with inbox
// partitions (interest routing): after its shared partitions
// (0..Partitions()-Inboxes()-1), read by every node, come Inboxes() partitions
// of which each node reads only its own (InboxOf). A message for one node goes
// to that node's inbox partition, so a node receives what concerns it instead
// of everything; it stays an ordinary message of its partition (sequence,
// outbox, retention, republish, gap detection). Two node ids whose inbox is the
// same partition both read it and both get its messages.
type Inboxer interface {
	// Inboxes is the number of inbox partitions at the end of Partitions() (0: none).
	Inboxes() int
	// ReadPartitions restricts what Subscribe and MarkStart read to parts (sorted,
	// distinct). New calls it once, before MarkStart, when Inboxes() > 0.
	ReadPartitions(parts []int)
}

// InboxOf returns the inbox partition of node on a reliable plane of shared
// shared partitions followed by inboxes inbox partitions: shared plus the
// FNV-1a (32 bit) hash of node modulo inboxes, the hash Publish uses for keys.
// Every node computes the same partition for a node id without asking anyone.
func InboxOf(node string, shared, inboxes int) int {
	return shared + partitionOf(node, inboxes)
}
