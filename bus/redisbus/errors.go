package redisbus

import (
	"errors"
	"fmt"

	"github.com/durasock/durasock/bus"
)

// Errors returned by this package. Errors from Redis or the network are wrapped
// with %w, so errors.Is finds both these and the cause.
var (
	// ErrBadURL reports a Redis URL or option that cannot work; see URLError.
	ErrBadURL = errors.New("redisbus: invalid Redis URL")
	// ErrBadOptions reports an Options field out of range.
	ErrBadOptions = errors.New("redisbus: invalid options")
	// ErrClosed is returned by calls after Close.
	ErrClosed = errors.New("redisbus: transport closed")
	// ErrUnavailable wraps the reason Redis could not be reached (dial refused,
	// timed out, authentication failed while connecting).
	ErrUnavailable = errors.New("redisbus: redis unavailable")
	// ErrNotReplicated is returned by Publish and AwaitReplicas when
	// WaitReplicas is set and fewer replicas than asked acknowledged the writes
	// within WaitTimeout. The writes are on the primary (readers may already
	// have them). It wraps bus.ErrNotReplicated: the bus keeps the batch in
	// its outbox and waits for replicas again, without writing it again.
	ErrNotReplicated = fmt.Errorf("redisbus: batch not acknowledged by enough replicas: %w", bus.ErrNotReplicated)
	// ErrPrimaryChanged is returned by AwaitReplicas when writes that replicas
	// had not confirmed went to another primary than the one serving now (a
	// failover, or a restart that lost them), and by Publish, which then
	// writes nothing, for a batch that would follow such writes on a primary
	// that does not hold them. On a Cluster, Publish and AwaitReplicas also
	// return it, with WaitReplicas 0 too, when the node that served a slot
	// answers MOVED and is no longer a primary (a failover or takeover), or
	// answers MOVED or ASK for a batch that must follow unconfirmed writes,
	// when a redirection names a node that lacks the entry this transport
	// wrote last to a stream of the batch (the slot did not move with its
	// data: its keys deleted on the old owner, or a migration given up), when
	// the commands of one slot get redirections to different nodes, or when
	// the node named is not in the client's map: the commands of that slot
	// were not written (those of other slots, and of that slot before the
	// redirection, may have been). A redirection of a slot that moved with its
	// data (a migration, a resharding) is followed instead. The bus writes again what the old primary may have lost, ahead
	// of the batch; receivers drop the duplicates. It wraps
	// bus.ErrPrimaryChanged.
	ErrPrimaryChanged = fmt.Errorf("redisbus: unconfirmed writes are not on the serving primary: %w", bus.ErrPrimaryChanged)
	// ErrSubscriptionEnded is returned by Subscribe when Redis ended a
	// subscription on its own (for example a sharded channel's slot moved).
	ErrSubscriptionEnded = errors.New("redisbus: subscription ended by the server")
	// ErrBadPartition is returned by Publish for a frame whose partition is out
	// of range.
	ErrBadPartition = errors.New("redisbus: partition out of range")
)
