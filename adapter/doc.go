// Package adapter defines how a Socket.IO namespace reaches its sockets: the Adapter
// interface and its delivery contract, and the in-memory adapter used by a single
// server process. Package cluster provides the adapter for many processes.
//
// Start with Adapter.
package adapter
