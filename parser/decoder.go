package parser

import "fmt"

// DefaultMaxAttachments is the attachment limit of a Decoder whose MaxAttachments
// is zero.
const DefaultMaxAttachments = 64

// DefaultMaxAttachmentBytes is the attachment byte limit of a Decoder whose
// MaxAttachmentBytes is zero: what one connection may hold in attachments of
// a packet that is not complete yet.
const DefaultMaxAttachmentBytes = 8 << 20

// Decoder reassembles packets from the Engine.IO messages of one connection: a
// BINARY_EVENT or BINARY_ACK text message is followed by its attachments as binary
// messages. A Decoder is not safe for concurrent use; a connection reads its
// messages in order on one goroutine.
type Decoder struct {
	// MaxAttachments bounds the attachments one packet may announce (0 means
	// DefaultMaxAttachments). A packet that announces more is an error.
	MaxAttachments int
	// MaxAttachmentBytes bounds the bytes of the attachments of one packet,
	// which the decoder holds until the last one arrives (0 means
	// DefaultMaxAttachmentBytes). An attachment that would exceed it is an
	// error wrapping ErrAttachmentsTooLarge, and the packet is dropped.
	MaxAttachmentBytes int

	pending  *Packet
	expected int
	held     int // bytes of pending.Attachments
}

// AddText decodes a text message. It returns the packet when it is complete, or
// nil while the attachments it announced are still to come.
func (d *Decoder) AddText(text []byte) (*Packet, error) {
	if d.pending != nil {
		d.Reset()
		return nil, ErrUnexpectedText
	}
	p, n, err := Decode(text)
	if err != nil {
		return nil, err
	}
	if p.Type != BinaryEvent && p.Type != BinaryAck {
		return p, nil
	}
	limit := d.MaxAttachments
	if limit <= 0 {
		limit = DefaultMaxAttachments
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %d announced, at most %d allowed", ErrTooManyAttachments, n, limit)
	}
	if n == 0 {
		return p, checkPlaceholders(p)
	}
	// The packet outlives the message buffer while attachments arrive.
	p.Data = append([]byte(nil), p.Data...)
	p.Attachments = make([][]byte, 0, n)
	d.pending, d.expected = p, n
	return nil, nil
}

// AddBinary takes a binary message. It returns the packet when this was its last
// attachment. The packet keeps b; the caller must not reuse it.
func (d *Decoder) AddBinary(b []byte) (*Packet, error) {
	p := d.pending
	if p == nil {
		return nil, ErrUnexpectedBinary
	}
	limit := d.MaxAttachmentBytes
	if limit <= 0 {
		limit = DefaultMaxAttachmentBytes
	}
	if len(b) > limit-d.held {
		held := d.held
		d.Reset()
		return nil, fmt.Errorf("%w: %d bytes held, %d more arrived, at most %d allowed", ErrAttachmentsTooLarge, held, len(b), limit)
	}
	d.held += len(b)
	p.Attachments = append(p.Attachments, b)
	if len(p.Attachments) < d.expected {
		return nil, nil
	}
	d.Reset()
	if err := checkPlaceholders(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Pending reports whether the decoder waits for attachments.
func (d *Decoder) Pending() bool { return d.pending != nil }

// Reset drops a partially received packet.
func (d *Decoder) Reset() { d.pending, d.expected, d.held = nil, 0, 0 }
