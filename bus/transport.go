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
	// broker kept.
	Subscribe(ctx context.Context, nodeID string, deliver func(Frame)) error
	// Ping checks that the broker answers.
	Ping(ctx context.Context) error
	// Close releases the connection; it is idempotent.
	Close() error
}
