// Package nemesis is durasock's Jepsen-style fault suite: node processes, a
// seeded random nemesis and a checker of recorded histories.
//
// Start with scenario.go: Scenarios lists the named runs, RunScenario runs one
// (Start, the scenario's nemesis program between steady phases, Finish, Check).
// The pieces:
//
//   - node.go: the node program. The harness starts this executable again with
//     the node's configuration in an environment variable (NodeMain must come
//     first in TestMain or main); the node is durasock built like cmd/durasock
//     (redisbus + cluster + socketio) whose application lets sockets join rooms
//     and lets a publisher socket broadcast numbered events, acking whether the
//     bus accepted each. Every gap, drop, state change and late request is
//     written to stdout as it happens, so the harness knows what a node
//     reported even when it is SIGKILLed a moment later.
//   - run.go, proc.go: a Run is one redis-server (AOF always, everysec, no, or
//     none) with a TCP fault proxy per node slot (internal/redistest), or a
//     Sentinel set (Config.Sentinel, Config.Replicas) or a Redis Cluster (Config.Cluster); N node processes, WebSocket clients
//     (internal/sioclient) in several namespaces and rooms, and publishers on
//     every node (plain broadcasts, or every n-th one with acknowledgements);
//     everything on 127.0.0.1 with free ports and stopped by PID in Close.
//   - workload.go: clients reconnect when their connection ends (to their home
//     node if usable, else another); each connection is a session of the
//     history. Publishers emit at their share of Config.Rate and follow their
//     home node through restarts; tail publishers stop for good at the first
//     fault; AckEvery and AckPairs mix in broadcasts with acknowledgements,
//     MuteAcks adds clients that never answer them.
//   - jsclients.go, js/clients.mjs: official socket.io-client clients
//     (Config.OfficialClients, from interop/node_modules) in one node process,
//     each behind a load balancer of its own that sends a new connection to
//     its home node or another; they reconnect with connection state
//     recovery, and a recovered session spans its reconnects.
//   - emitter.go: publishers that emit through the emitter package from the
//     harness process (Config.EmitterPublishers), one origin of their own.
//   - nemesis.go: the operations (node SIGKILL and restart with the same or a
//     new id, SIGTERM drain, SIGSTOP/SIGCONT, two processes with one id; Redis
//     SIGKILL and restart from its AOF or empty, CLIENT PAUSE, CLIENT KILL,
//     maxmemory below its use, Sentinel and Cluster failover, a failover to a
//     lagging replica (its replication link broken while the primary takes
//     writes; on Sentinel the sentinels prefer it, on Cluster CLUSTER FAILOVER
//     TAKEOVER), a replica down (a Sentinel replica, or the Cluster replica of
//     a stream partition's primary); stream ids moved ahead of Redis' clock; a node's link to
//     Redis cut, blackholed, slowed, or dead one way: its reading connections,
//     its publishing connections, or only the replies; clients bounced) and
//     Schedule, which draws rounds of one or two concurrent steps from a seed,
//     from a shuffled deck of the operations.
//   - check.go: Check proves, per (publisher session, client session), that
//     every accepted event sent after the session was ready arrived exactly
//     once and in order, or that the loss is covered by the gaps its receiving
//     node reported about the origin and the drops the origin counted. It
//     counts losses of events that never left a SIGKILLed origin apart (what
//     "accepted" means when a process dies, G9), every client disconnect
//     that no nemesis step explains, and every request of a node (a
//     broadcast, a broadcast with acknowledgements) that returned more than
//     lateMargin past its timeout. A broadcast with acknowledgements that a
//     whole node never answered is unknown, not accepted: that node may not
//     have served it. It also names the steps after which
//     nothing visibly changed (a fault that tested nothing). Verdict.Table
//     prints the verdict and, on failure, the first missing, duplicated and
//     reordered event with the history around it; Write saves histories and
//     verdicts as JSON.
//
// Interest routing (Options.Routing, -nemesis.routing, the command's -routing)
// runs any scenario with the nodes' buses given redisbus.DefaultInboxes inbox
// partitions and the cluster's InterestRouting on; the checker is the same.
// The routed namespaces' messages go to the inboxes of the nodes with sockets
// in their rooms. A node acks a join only once the cluster says every live
// node has applied it (AwaitRouting), as a join resolves after its
// subscription with @socket.io/redis-adapter's sharded mode: a session is
// owed events from then on (a cluster without AwaitRouting is logged once,
// and its joins are acked at once). A join not routed within a few seconds (a peer
// frozen, Redis down) is answered so, and the Go client asks again on the
// same connection. A node listens only once it knows every live node's
// interest (AwaitRoutingReady, at most 20 s), as durasock's /readyz holds a
// load balancer back. Namespaces whose clients recover across nodes are not
// routed (an offset must name a stream every node can continue from): the
// namespaces of the official clients keep the shared partitions, so a
// scenario with official clients still exercises the shared path there and
// routes its other namespaces (cmd/durasock with -recovery routes none).
// Redis Cluster operations on "the partition of a node slot" then act on
// that node's inbox, and a clock jump moves the inboxes' ids too.
//
// The default test run (go test ./...) runs the scenario "short", seed 1,
// faults the product is expected to survive, twice: without interest routing
// and with it (about 40 s each; -nemesis.scenario short runs only the first,
// -nemesis.routing only the second). compare.sh runs
// scenarios on an older commit and on this checkout (a defect before and after
// its fix). Other runs:
//
//	go test ./internal/nemesis -run TestNemesis -nemesis.scenario soak -nemesis.duration 30m -nemesis.seed 7 -nemesis.out /tmp/soak -timeout 2h
//	go run ./internal/nemesis/cmd/nemesis -duration 30m -seed 7 -out /tmp/soak   # the same without go test
//	go test ./internal/nemesis -run TestNemesis -nemesis.scenario overlap -v
//	go test ./internal/nemesis -run TestNemesis -nemesis.ops node-kill,redis-kill -nemesis.seed 3 -v
//	go test ./internal/nemesis -run TestNemesis -nemesis.scenario tail-loss -nemesis.routing -v   # with interest routing
//	go test ./internal/nemesis -run TestNemesis -nemesis.scenario all -nemesis.table -nemesis.out /tmp/n -v -timeout 90m   # docs/RELIABILITY.md's table
//
// A failing run prints its seed; the same seed gives the same nemesis
// schedule (the timing of the workload around it varies).
package nemesis
