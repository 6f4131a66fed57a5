// Package bus is the reliability core of the durasock cluster bus, independent of
// any broker: the Bus interface and its contract, and Reliable, its implementation
// over any Transport.
//
// Start with New: it wraps a Transport (package redisbus for Redis streams or
// pub/sub, or NewMemoryHub for tests and single-process use) into a Bus:
//
//	hub := bus.NewMemoryHub()
//	b, err := bus.New(hub.Transport(), &bus.Config{NodeID: "node-1"})
//	...
//	b.Receive(func(m bus.Message) { ... })   // messages of the other nodes
//	err = b.Publish(ctx, "room-42", payload)  // never waits for the broker
//	...
//	err = b.Close(ctx)                        // drains the outbox until ctx
//
// What Reliable adds to a bare Transport:
//
//   - Outbox: a bounded FIFO (messages, bytes, age; defaults 100 000, 64 MiB,
//     5 minutes) between Publish and the broker. Publish accepts or rejects at
//     once (ErrOutboxFull, ErrTooLarge); one sender goroutine drains the outbox in
//     order, in pipelined batches, and publishes a batch again after an error.
//     Drops happen only at a configured bound (max age, drop-oldest) or at a Close
//     that runs out of time, and each is counted, logged once per episode and
//     passed to Config.OnDrop.
//   - Retention: what the broker acknowledged stays in memory for
//     Config.Retain.Window (default 5 s; bounded in messages and bytes). A
//     broker can lose writes it answered (Redis appendfsync everysec killed
//     during a background fsync, a failover to a replica without the last
//     writes, a restart from an older snapshot): after the connection breaks,
//     the bus publishes the retained messages again, with their own seqs,
//     before anything newer and before a probe announces them. Receivers skip
//     those they have; those the broker lost arrive instead of a gap
//     (durasock_bus_republished_total). Over a transport that implements
//     SurvivorFinder (Redis streams, the memory hub), only those after the
//     newest one the broker still holds go out again, per partition (a broker
//     loses writes only as a suffix): nothing after a network cut, the lost
//     tail after a restart.
//   - Sequencing: every Publish gets a sequence number per (node, partition); the
//     partition comes from the key (FNV-1a), so one key keeps its order. Receivers
//     keep a high-water mark per (origin, instance, partition), for up to four
//     runs of one node id at once: replays are dropped as duplicates, missing
//     numbers are reported as gaps (Config.OnGap, metrics, logs). They forget a
//     silent run only after an hour of connected time, never while disconnected.
//   - Reconnects with exponential backoff and full jitter for publishing,
//     subscribing and pinging, interruptible by Close. While the bus is not
//     Connected it pings the broker every 100 ms (readiness pings, no attempts);
//     the first that answers after a failure ends the pending waits, so a node
//     resumes within about 200 ms of the broker's return (a sender on a
//     transport without a log, pub/sub, 200 ms later, which leaves the other
//     nodes time to subscribe again first).
//   - Start position: with a transport that keeps history (StartMarker: Redis
//     streams; the memory hub starts at Transport) the reliable plane starts at
//     New, so messages other nodes publish before Receive are delivered.
//   - State: Connected, Reconnecting, Failed (after Backoff.MaxAttempts; the bus
//     keeps buffering and retrying), Closed — Status, StateChanged,
//     Config.OnStateChange, one log line per transition.
//   - Liveness probes: every ProbeInterval the node publishes a probe per
//     partition it reads (with inbox partitions: on its own inbox only) and
//     expects it back through its own subscription; a
//     subscription that is silently dead is rebuilt. Each probe announces the
//     partition's last seq that left the outbox, so receivers report a lost tail
//     (Gap.Tail) even when its node publishes nothing more, and other nodes
//     report a node whose probes stop (durasock_bus_nodes_gone_total).
//   - Inbox partitions (interest routing): over a transport that implements
//     Inboxer, the reliable plane ends with inbox partitions; a node reads the
//     shared partitions and only its own inbox (InboxOf), and PublishTo sends a
//     message to one node's inbox, with everything Publish guarantees. Keys
//     hash over the shared partitions. On a partition it writes to and
//     sends no round-trip probe to (the shared ones and other nodes'
//     inboxes), a node announces its last seq when it changed, again after a
//     broken connection, every probe interval within the retain window (and
//     two liveness windows) of its last write there (a failover of that
//     partition's Cluster shard then meets the transport's primary guard,
//     and the retained messages go out again) and every 10 intervals for
//     minutes after, so the reader still reports a lost tail; the
//     announcement carries the time of its first message there, so a reader
//     reading since before it reports the loss of the first messages too,
//     and, while it comes every interval, how long it goes on doing so: a
//     writer silent meanwhile is reported gone. Probes thus cost O(nodes) in
//     the cluster; a node is heard only by the nodes it writes to.
//   - Node ids: a second running process with this node's id is detected and
//     reported (Status.NodeIDConflict, durasock_bus_node_id_conflicts_total, an
//     error log); see Config.NodeID.
//   - Positions: Message.ID is the transport's position of the frame (a Redis
//     stream entry id).
//   - Metrics with the durasock_ prefix (Config.Registerer) and Stats.
//
// As in every package of the module, New takes a pointer to its configuration
// (nil: every default; a zero field takes its default, -1 disables where that
// makes sense), and a nil Config.Logger means slog.Default().
//
// The wire format of a frame is described in codec.go and docs/PROTOCOL.md
// ("Envelope"); its decoder never panics on foreign bytes (FuzzDecodeFrame).
package bus
