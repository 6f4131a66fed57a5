package parser

import "encoding/json"

// Type is a Socket.IO v5 packet type.
type Type byte

// Packet types of the Socket.IO v5 protocol.
const (
	Connect      Type = 0
	Disconnect   Type = 1
	Event        Type = 2
	Ack          Type = 3
	ConnectError Type = 4
	BinaryEvent  Type = 5
	BinaryAck    Type = 6
)

// Packet is a decoded Socket.IO packet.
//
// Data is the packet's JSON payload exactly as it appeared on the wire (or as the
// application built it): for EVENT and ACK a JSON array, for CONNECT and
// CONNECT_ERROR an object. Binary attachments are referenced from Data by
// {"_placeholder":true,"num":N} and carried in Attachments, so JSON arguments pass
// through byte-exact and binary is never base64-encoded.
type Packet struct {
	Type        Type
	Namespace   string // "/" when absent on the wire
	ID          uint64 // ack id, valid when HasID
	HasID       bool
	Data        json.RawMessage
	Attachments [][]byte
}

// Encoded is a packet ready for the wire: Text is the Engine.IO message payload of
// the packet (without the Engine.IO "4" prefix) and Attachments follow it as binary
// messages. An Encoded value is immutable once made, so one may be written to many
// sockets.
type Encoded struct {
	Text        []byte
	Attachments [][]byte

	// msgpack is the packet in the Msgpack format, made by the first
	// connection that needs it and shared by the others.
	msgpack alternate
}
