// Package parser encodes and decodes Socket.IO v5 packets, including binary
// attachments. It is shared by package socketio and the adapters, which carry
// packets between server processes.
package parser
