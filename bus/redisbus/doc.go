// Package redisbus carries the durasock cluster bus over Redis: a streams
// transport (the default, resumable) and a pub/sub transport (lowest latency), on
// a single server, a Unix socket, Sentinel or Redis Cluster, all named by one URL.
//
// Start with Open, which returns the reliable bus of package bus over a Redis
// transport, and Options. NewTransport gives the bare transport (bus.Transport).
// ParseEndpoint documents the URL forms:
//
//	redis://[user:password@]host[:port][/db]
//	rediss://...?ca=/ca.pem&cert=/client.pem&key=/client.key   (TLS)
//	unix:///path/to/redis.sock
//	redis+sentinel://[user:password@]s1:26379,s2:26379/mastername
//	redis+cluster://[user:password@]h1:7000,h2:7001
//
// # Keys and channels
//
// With prefix P (Options.Prefix, default "durasock"), N partitions
// (Options.Partitions) and I inboxes (Options.Inboxes, Streams only):
//
//	{P:<p>}:stream         stream of partition p (Streams), entries with field "d"
//	{P:<p>}:replicated     written ("1") when the bus waits for replicas again (Streams, WaitReplicas)
//	{P:in:<b>}:stream      stream of inbox b, partition N+b (Streams, 0 <= b < I)
//	{P:in:<b>}:replicated  as {P:<p>}:replicated, for inbox b
//	{P:<p>}:pubsub         channel of partition p (PubSub)
//	{P:node:<id>}          direct channel of node id (both transports)
//	{P}:node:<id>          legacy direct channel of node id (earlier versions; still listened on)
//	{P}:all                direct channel of every node (both transports)
//
// Streams: Publish sends, in one pipeline, XADD {P:<p>}:stream MINID ~ <T>
// * d <frame> for every frame of a batch, where T is the Redis server's time (the
// id of the previous XADD on that partition) minus StreamRetention, then XTRIM
// {P:<p>}:stream MAXLEN ~ <StreamMaxLen> for each partition written (the memory
// cap), then WAIT when WaitReplicas is set and a frame does not have
// bus.Frame.NoWait. Readers use XREAD COUNT <c> BLOCK <BlockTimeout> STREAMS
// <keys> <ids> from the id of the last entry they delivered, with c adapted to
// stay within ReadBytes (at most ReadCount); on resume and every second while
// reading, a small Lua script in the same pipeline reports how many entries each
// stream received and holds, so entries trimmed before they were read are
// counted. An entry that no read can return (Redis drops the reader every time)
// is skipped after 3 attempts over at least SkipUnreadableAfter (10 s), its id
// found by a Lua script without reading it. Pub/sub: PUBLISH {P:<p>}:pubsub
// <frame>. Direct frames: PUBLISH {P:node:<id>} <frame> (then PUBLISH
// {P}:node:<id> <frame> when the first reached nobody, see "Rolling upgrades")
// or PUBLISH {P}:all <frame>.
// With WaitReplicas, a batch written while earlier frames wait for replicas
// goes only to the primary that holds the last of them (XRANGE of it first, on
// the same connection). On a Cluster each batch's commands of one slot go out
// in one pipeline on a connection pinned to the node that took the last
// write of their streams: a node that no longer serves the slot (a takeover
// while it keeps running) answers MOVED without writing, and Publish returns
// ErrPrimaryChanged instead of following the redirection, so the bus
// republishes what the old primary acknowledged last before anything newer,
// also on a partition this node only writes to (another node's inbox),
// whose failover breaks nothing of its own. Where that node is not known
// (after an error, a stream written once), the node the client's slot map
// names must first show (XRANGE <id> <id>, in a round trip that also asks
// CLUSTER MYID and CLUSTER SLOTS to pin the next writes there) the entry this
// transport wrote last to each stream, or Publish returns ErrPrimaryChanged
// without writing: one check per stream and change of primary. A slot that moves with its data is
// followed instead: while it is migrated (CLUSTER SETSLOT MIGRATING/IMPORTING,
// MIGRATE), the node answers ASK for a key it already gave away, and the
// commands it refused go, each after ASKING, in order, to the target (then
// INFO and WAIT there); after the resharding (CLUSTER SETSLOT NODE), a MOVED
// from a node that is still a primary (ROLE) and holds no key of the slot
// sends them to the new owner. Either way the node named must first show
// (XRANGE <id> <id>) the entry this transport wrote last to each stream
// redirected. A batch that must follow unconfirmed writes (WaitReplicas), or
// whose last entry the node named lacks, still returns ErrPrimaryChanged.
// Readers and history reads follow ASK and MOVED through the client (on a
// Cluster, XREAD goes on its own after the position checks).
// On Sentinel and Cluster every read also asks
// (XREVRANGE <key> <position> - COUNT 1, in the same pipeline on Sentinel,
// just before the XREAD on a Cluster) whether the server
// holds the reader's position; after a failover to a primary with another
// history the reader goes back to the last entry in common.
// Inboxes: the transport has N+I partitions, the N shared ones first. Every
// node reads the shared partitions, and with ReadPartitions (package bus
// calls it with the shared partitions and the node's inbox) only those it is
// given: the start recorded by MarkStart (one script per partition read),
// the XREAD (standalone and Sentinel: one over the keys read; Cluster: one
// reader per partition read) and its checks name no other partition. Publish,
// history reads, FindSurvivor and AwaitReplicas take any partition.
// A frame is the bytes of a bus envelope (see package bus and docs/PROTOCOL.md);
// this package never looks inside.
//
// The braces are Redis Cluster hash tags: each partition, each inbox and each
// node's direct channel has its own slot, so a cluster spreads the partitions,
// the inboxes, and the answers to the nodes, over its primaries. The all channel has one slot (a
// frame to all is one publish; it carries heartbeats, hellos and goodbyes, a
// few frames per node and heartbeat interval), shared with the legacy node
// channels. On Redis Cluster every channel is a sharded channel
// (SPUBLISH/SSUBSCRIBE), with one subscription per slot: a message travels only
// within its shard instead of over the whole cluster bus, and a failover of
// that shard closes the subscriber's connection, so Subscribe returns an error
// and the bus subscribes again on the new primary.
//
// # Rolling upgrades
//
// Earlier versions named a node's direct channel {P}:node:<id>. A node listens
// on both names of its id, so nodes of an earlier version, which publish on the
// old name, reach it. Send publishes a frame to a node on {P:node:<id>}; when
// Redis answers that nobody received it (a node of an earlier version, or one
// not subscribed right now) it publishes the frame on {P}:node:<id>, and goes
// there directly for that node during the next 5 seconds. The second publish
// follows only a first that reached nobody, so no node gets a frame twice, and
// no setting is needed in either direction of an upgrade or a rollback. A Redis
// ACL user limited to some channels needs both forms (&{P* covers every channel
// of prefix P). docs/PROTOCOL.md ("Compatibility") has the details.
//
// # Failure behaviour
//
// A transport never retries and never buffers (package bus does). It can be made
// while Redis is down: every call fails at once with an error wrapping
// ErrUnavailable until Redis answers, and then works. Calls are bounded by their
// ctx and by Options.DialTimeout and Options.WriteTimeout; a streams read that
// gets no answer within Options.BlockTimeout plus 2 seconds fails.
//
// Subscriptions run on connections of their own (not the one Publish and Send
// pipeline on), which rueidis pings while idle: a subscription on a dead link,
// one Redis disconnected (CLIENT KILL, client-output-buffer-limit when deliver is
// too slow) or one on a primary that failed over ends Subscribe with an error,
// and the bus subscribes again. The streams transport then resumes from the id
// of the last entry it delivered, so nothing Redis kept is lost; the pub/sub
// transport loses what was published meanwhile, and the bus reports the gap.
//
// WaitReplicas makes a batch count as published only once that many replicas
// acknowledged it (WAIT), so a Sentinel or Cluster failover cannot lose writes
// the bus already took out of its outbox. It applies to the streams transport.
// A WAIT that falls short returns ErrNotReplicated (wrapping
// bus.ErrNotReplicated): the batch is written; the bus keeps it in its outbox,
// writes later batches without waiting, and calls AwaitReplicas
// (bus.ReplicaWaiter) until the replicas confirm, so nothing is written twice
// and probes (which never wait) keep the node connected. Readers may see an
// entry before WAIT confirms it.
package redisbus
