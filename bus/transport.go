package bus

import "context"

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
