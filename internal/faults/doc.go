// Package faults holds the fault tests of durasock: the proof of the reliability
// contract (G1–G7 in docs/RELIABILITY.md) against real redis-server processes
// that the tests kill, restart, pause, cut off and fail over. It has no code of
// its own outside its tests.
//
// Start with harness_test.go. Every scenario runs the same topology: three
// durasock nodes in the test process (each a redisbus bus, a cluster.Cluster and
// a socketio.Server on its own httptest server), real WebSocket Socket.IO clients
// (internal/sioclient) on every node, and a publisher on every node that
// broadcasts numbered events (node, seq) at a steady rate while the fault
// happens. Afterwards every client's events are compared with what every
// publisher emitted and what its bus accepted:
//
//   - lost: accepted events a client never got;
//   - duplicated: events a client got more than once;
//   - reordered: events a client got after a later one of the same publisher.
//
// What each scenario proves:
//
//   - Clients on the publisher's own node get every event while Redis is away,
//     before it comes back (G1): checked by count in every scenario.
//   - Redis killed with SIGKILL and restarted with AOF (appendfsync always), on
//     streams: nothing lost, duplicated or reordered (G2–G4). On pub/sub,
//     events published by other nodes while a subscription is down are lost by
//     the broker, and every one of them is reported as a gap: for each
//     receiving node and origin, lost == gap messages reported (never silent).
//   - Redis restarted without persistence: nothing emitted during the outage is
//     lost (it waited in the outboxes); whatever the restart erased is reported
//     as a gap (lost == gap messages reported). One node's link is blackholed
//     just before the kill so that the restart surely erases entries it had not
//     read: that node must report them.
//   - Sentinel failover and Redis Cluster failover with WaitReplicas=1: nothing
//     lost, duplicated or reordered (G7). This is asserted as a guarantee, not
//     as "every loss is a gap": a message leaves the outbox only once a replica
//     acknowledged it, so the promoted replica has it. The old primary is
//     started again (it rejoins as a replica) because without any replica WAIT
//     cannot succeed and messages wait in the outbox.
//   - Sentinel failover to a lagging replica (two replicas, the sentinels prefer
//     the one whose replication link is broken) and Redis Cluster failover to a
//     lagging replica (CLUSTER FAILOVER TAKEOVER while the old primary runs),
//     with WaitReplicas=0: the promoted replica lacks what the old primary
//     acknowledged last (a marker key proves it). Every message lost so is
//     reported: for each receiving node and origin, lost == gap messages
//     reported.
//   - The link between one node and Redis cut, slowed and blackholed (a
//     half-open TCP connection) through a fault proxy: the liveness probe
//     detects the blackhole, the node recovers after the link is restored, and
//     nothing is lost (G5).
//   - CLIENT PAUSE, CLIENT KILL (by type and by address) and a reader killed
//     by client-output-buffer-limit: nothing lost (streams).
//   - A node started while Redis is down serves its clients at once, buffers,
//     and joins the cluster when Redis appears; its buffered events reach every
//     other node. Events the other nodes emitted before it joined are not owed
//     to it (its stream reading starts when it first reaches Redis); from its
//     first event of each node on it misses nothing. Once it delivers and
//     publishes, it says Connected within two probe periods, even when its
//     first liveness probe was lost.
//   - An outage longer than the outbox bounds: reject-new returns
//     bus.ErrOutboxFull to the emitter and nothing accepted is lost;
//     drop-oldest and max age drop only as configured, every drop is counted
//     (Stats, OnDrop) and every receiver reports the matching gap: what a node
//     lost is exactly what it reported missing, and every sequence number it
//     reported missing is one the publisher's OnDrop named. (A drop may name
//     frames of a publish that was in progress and reached Redis after all;
//     bus.Drop documents that their delivery is unknown. The tests log them as
//     dropped_but_delivered.) The buses are Connected again afterwards with an
//     empty outbox.
//   - Cross-node requests (FetchSockets, ServerSideEmitWithAck) while the bus
//     is down return an error within their timeout; they never hang.
//
// Each scenario logs one line starting with "SUMMARY" with its counts and the
// bus counters (drops by reason, gaps, duplicates dropped, replays,
// reconnects, probe failures). Tests assert counts, never speeds.
//
// Flags: -faults.outage sets the outage length (default 2.5s; 10s for the
// documented soak), -faults.rate the events per second per publisher (default
// 100), -faults.long runs the soak (10 s outages at 200 events/s)
// and -faults.logs prints the nodes' logs of passing scenarios too.
//
// Interest routing: -faults.routing runs every scenario with the nodes'
// buses given redisbus.DefaultInboxes inbox partitions and their clusters
// InterestRouting, so that the events travel on the inboxes of the nodes with
// clients; the assertions are the same. A node's clients count as connected
// once AwaitRouting("/") returned on it (every live node applied its
// interest), also again after warm-up, and a publisher emits its first event
// once AwaitRoutingReady returned on its node (it knows every live node's
// interest): a node started while Redis is down starts emitting only after
// it reached Redis and heard the others. The pub/sub scenarios run without
// routing (that transport has no inboxes), and the Redis Cluster failovers
// aim at the primary of the first node's inbox instead of the shared
// partition of "/". The summary line says routing=on with the messages routed
// and the inbox writes they took. The default run includes one routed
// scenario: Redis killed and restarted with AOF, on streams.
package faults
