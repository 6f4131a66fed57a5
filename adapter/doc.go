// Package adapter defines how a Socket.IO namespace reaches its sockets: the Adapter
// interface and its delivery contract, and the in-memory adapter used by a single
// server process. Package cluster provides the adapter for many processes.
//
// Start with Adapter, which states the contract, and NewMemory, the default
// Factory. A server calls the Factory once per namespace, Join(id) when a socket
// connects, LeaveAll(id) when it disconnects, and routes every emit that is not for
// a single socket through Broadcast or BroadcastWithAck.
//
// Memory (made by NewLocal) is also the local part of a cluster adapter: its
// methods apply to the sockets of this node only, and the ...Local variants
// (BroadcastLocal, BroadcastWithAckRecipients, AddSocketsLocal, DelSocketsLocal, DisconnectSocketsLocal, FetchSocketsLocal,
// SocketIDs) apply an operation that arrived from another node.
//
// Package adaptertest holds the conformance suite every adapter passes, and test
// doubles of Namespace and Socket.
package adapter
