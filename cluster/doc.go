// Package cluster makes many durasock processes behave as one Socket.IO server:
// its adapter carries every adapter operation of a namespace to the other
// processes over a bus (package bus; Redis transports in bus/redisbus).
//
// Start with New, then hand Cluster.Adapter to the server as its adapter factory:
//
//	b, err := redisbus.Open(ctx, "redis://127.0.0.1:6379", nil)
//	c, err := cluster.New(b, nil)
//	srv := socketio.NewServer(&socketio.Options{Adapter: c.Adapter})
//
// As in every package of the module, New takes a pointer to its options (nil:
// every default; a zero field takes its default), and a nil Options.Logger
// means slog.Default().
//
// One Cluster serves every namespace of a process. On shutdown, close the server,
// then the Cluster, then the bus.
//
// # Semantics
//
// Everything behaves as on a single node:
//
//   - Broadcast writes to the matching local sockets before it returns, whatever
//     the state of the bus (G1), then publishes the packet on the bus's reliable
//     plane. An error of Publish (outbox full) is returned to the caller. Binary
//     attachments travel as raw bytes.
//   - AddSockets, DelSockets and DisconnectSockets are applied locally, published on
//     the reliable plane and, while the bus is connected, confirmed by every known
//     node before they return.
//   - FetchSockets, ServerSideEmit with replies and BroadcastWithAck are requests:
//     they too are published on the reliable plane, carrying the requester's
//     deadline, and collect the answers of every known node, which come back on
//     the bus's direct plane, until all arrived or ctx is done
//     (Options.RequestTimeout when ctx has no deadline); then they return what
//     arrived with a *adapter.MissingRepliesError naming what did not. While the
//     bus is not connected they fail at once with adapter.ErrUnavailable; they
//     never wait in the outbox. A request that reaches a node after its deadline
//     (replayed after an outage) is not served there (Stats.ExpiredRequests). An
//     emit with an ack to a socket of another node is a BroadcastWithAck to the
//     room named by its id.
//   - ServerSideEmit without replies travels on the reliable plane.
//
// Order: every message of one node and one namespace — broadcasts, socket
// operations, server-side emits and requests, with or without acks — is applied
// on every other node in the order this node issued it, exactly once. A
// broadcast followed by an emit with an ack reaches a socket of another node in
// that order; a server-side emit followed by one with replies reaches the other
// node's handler in that order. Answers are not ordered with anything.
//
// Serving other nodes' requests never blocks: a node applies a request when it
// arrives, in order, and sends its answers through two bounded lanes with
// goroutines of their own — control (join/leave/disconnect confirmations,
// hello answers, fetch answers) and replies (ack counts and replies, server-side
// emit replies) — so that confirmations and fetches never wait behind acks
// (Options.MaxServing bounds each lane). A broadcast with acks of another node
// holds no goroutine while its sockets have not replied: it answers from the
// sockets' ack callbacks until the requester's deadline (at most one hour).
// Options.MaxRelays bounds how many are open at once; beyond it one is refused
// (Stats.RefusedRelays) and the requester names this node missing.
//
// Nodes find each other by hellos, and say every Options.HeartbeatInterval
// that they are alive: on Redis by writing their entry in a membership record
// there and reading back only what changed (bus.Roster: one small command per
// node, where heartbeats to every node cost N messages delivered N times),
// otherwise, and to nodes that do not write the record, by heartbeats. A node
// that closes says goodbye and one that goes silent is forgotten after
// Options.NodeTimeout, so that requests do not wait for it. Nodes lists the
// others.
//
// # Interest routing
//
// With Options.InterestRouting, on a bus whose transport has inbox partitions
// (bus.Reliable.Routing: the Redis streams transport with
// redisbus.Options.Inboxes), a node receives only what concerns its sockets.
// Each node announces to the others, per namespace, the rooms its sockets are
// in (as hash buckets) and whether it has sockets; a routed namespace
// publishes each message to the inbox of every node it concerns instead of
// once to the partition every node reads. Order, exactly-once and replay are
// the bus's, as above, since each node reads its messages from one
// partition. Requests and server-side emits go to every live node, and to
// the nodes the bus has heard whose interest is not known; requests wait for
// the live nodes (heard by heartbeat), socket operations for exactly the live
// nodes they went to. A join
// counts on another node once its announcement has arrived there; a
// socketsJoin counts at once on the node that sends it. Cluster.AwaitRouting
// waits until every live node has applied this node's joins so far, and
// Cluster.AwaitRoutingReady until a node that started or reconnected knows
// every live node's interest, those it cannot hear itself included (for a
// readiness check). Namespaces that Options.Recoverable names are not
// routed. A routed namespace keeps sessions: a client restored on another
// node gets what it missed from its earlier node's inbox, by a handoff in
// which every node says where its messages to the client's rooms went from
// the earlier inbox to the new one.
// docs/SCALING.md ("Interest routing") has the details and the costs.
//
// A process that is no server publishes into a cluster with package emitter.
//
// Messages are encoded as described in docs/PROTOCOL.md ("Cluster messages").
// A message that does not decode is dropped, counted (Stats.DecodeErrors and
// durasock_cluster_decode_errors_total) and logged.
package cluster
