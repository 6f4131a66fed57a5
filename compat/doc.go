// Package compat lets durasock work beside the Socket.IO deployments people
// already run.
//
// NodeCluster makes a durasock process a member of a cluster of Node socket.io
// servers that use @socket.io/redis-adapter: it speaks that adapter's protocol,
// classic (createAdapter: PUBLISH/PSUBSCRIBE on socket.io#<nsp>#…, requests on
// socket.io-request#<nsp>#, answers on socket.io-response#<nsp>#) or sharded
// (createShardedAdapter: SPUBLISH/SSUBSCRIBE), msgpack- or JSON-encoded as
// Node encodes them. Pass its Adapter method to socketio.NewServer:
//
//	nc, err := compat.NewNodeCluster(redisClient, &compat.Options{Mode: compat.Classic})
//	srv := socketio.NewServer(&socketio.Options{Adapter: nc.Adapter})
//
// Broadcasts (binary included), rooms and exceptions, broadcasts with acks,
// FetchSockets, ServerSideEmit with and without replies, AddSockets, DelSockets
// and DisconnectSockets work across Node and durasock nodes in both
// directions. The guarantees are Node's: pub/sub, no outbox, nothing kept
// across a Redis outage. It is a migration path: once no Node server is left,
// use package cluster.
//
// Listener applies what the emitters of other ecosystems publish into Redis —
// @socket.io/redis-emitter and python-socketio's pub/sub managers (their JSON
// form; pickled messages are refused) — to the sockets of this node, beside
// any adapter, the cluster adapter on Redis streams included. Wrap the
// server's adapter factory with Listener.Wrap.
//
// Both count every message received and every one not applied, by reason
// (Stats, and the Prometheus metrics durasock_compat_* and
// durasock_emitters_*), and log what they cannot apply at most once a second.
// docs/COMPAT.md has the details and the migration steps.
package compat
