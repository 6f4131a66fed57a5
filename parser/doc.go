// Package parser is the Socket.IO protocol (v5) as bytes: it encodes and decodes
// packets, including binary attachments, in the JSON format and in the msgpack
// format of socket.io-msgpack-parser. It is a protocol package of its own, below
// everything that carries packets: the server (package socketio), the adapters
// and the cluster, the emitter and the Node-compatible dialects all use it, and
// it imports none of them.
package parser
