package parser

import "sync/atomic"

// Frame is one Engine.IO message of an encoded packet.
type Frame struct {
	Data   []byte
	Binary bool
}

// Parser is the Socket.IO wire format a server speaks with its clients, as the
// parser option of the reference server: JSON (the default) or Msgpack (the
// format of the npm package socket.io-msgpack-parser). Every client of a server
// must use the server's parser.
//
// Inside durasock a packet always travels as an Encoded in the JSON format:
// adapters, the cluster bus and the recovery history carry that form, so they
// work with any parser; a Parser only translates at the connection's edge.
type Parser interface {
	// Frames returns the Engine.IO messages that carry e. The frames may be
	// shared by every connection that writes e and must not be modified. An
	// error means e cannot be expressed in this format.
	Frames(e *Encoded) ([]Frame, error)
	// NewDecoder returns the decoder of one connection's messages. A packet
	// with more than maxAttachments binary parts is an error (0 means
	// DefaultMaxAttachments).
	NewDecoder(maxAttachments int) FrameDecoder
}

// FrameDecoder turns the Engine.IO messages of one connection into packets. It
// is not safe for concurrent use. Every error it returns wraps ErrInvalid: the
// connection should be closed with reason "parse error".
type FrameDecoder interface {
	// Add takes one message and returns the packet it completes, or nil while
	// the parts of a packet are still to come. The packet may keep data.
	Add(data []byte, binary bool) (*Packet, error)
	// Reset drops a partially received packet.
	Reset()
}

// JSON is the default parser of Socket.IO v5: a text message per packet,
// followed by its binary attachments as binary messages.
var JSON Parser = jsonParser{}

type jsonParser struct{}

func (jsonParser) Frames(e *Encoded) ([]Frame, error) {
	f := make([]Frame, 0, 1+len(e.Attachments))
	f = append(f, Frame{Data: e.Text})
	for _, a := range e.Attachments {
		f = append(f, Frame{Data: a, Binary: true})
	}
	return f, nil
}

func (jsonParser) NewDecoder(maxAttachments int) FrameDecoder {
	return &Decoder{MaxAttachments: maxAttachments}
}

// Add takes a text or binary message, as AddText and AddBinary.
func (d *Decoder) Add(data []byte, binary bool) (*Packet, error) {
	if binary {
		return d.AddBinary(data)
	}
	return d.AddText(data)
}

var _ FrameDecoder = (*Decoder)(nil)

// altFrames is an Encoded in a format other than JSON, made once for all the
// connections that write it.
type altFrames struct {
	frames []Frame
	err    error
}

// alternate holds the msgpack form of an Encoded once one connection needed it.
type alternate = atomic.Pointer[altFrames]
