package engineio

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Engine.IO v4 packet types, as their ASCII digit.
const (
	packetOpen    byte = '0'
	packetClose   byte = '1'
	packetPing    byte = '2'
	packetPong    byte = '3'
	packetMessage byte = '4'
	packetUpgrade byte = '5'
	packetNoop    byte = '6'
)

// payloadSeparator joins packets in a polling payload.
const payloadSeparator = 0x1e

// errInvalidPacket is wrapped by every decoding error.
var errInvalidPacket = errors.New("engineio: invalid packet")

// packet is one decoded packet received from a client. data aliases the input.
type packet struct {
	typ    byte
	data   []byte
	binary bool
}

// frame is one packet waiting to be written to a client. For a message, msg is the
// caller's Message, shared with other sessions and never modified.
type frame struct {
	typ byte
	msg Message
}

// decodePacket decodes one text packet ("4hello").
func decodePacket(b []byte) (packet, error) {
	if len(b) == 0 {
		return packet{}, fmt.Errorf("%w: empty packet", errInvalidPacket)
	}
	t := b[0]
	if t < packetOpen || t > packetNoop {
		return packet{}, fmt.Errorf("%w: unknown packet type %q", errInvalidPacket, t)
	}
	return packet{typ: t, data: b[1:]}, nil
}

// decodePayload decodes a polling payload: packets separated by 0x1e, where a
// binary message is "b" followed by its base64 encoding. Every packet must be valid,
// otherwise nothing is returned.
func decodePayload(b []byte) ([]packet, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty payload", errInvalidPacket)
	}
	pkts := make([]packet, 0, bytes.Count(b, []byte{payloadSeparator})+1)
	for {
		part, rest, more := bytes.Cut(b, []byte{payloadSeparator})
		if len(part) > 0 && part[0] == 'b' {
			data := make([]byte, base64.StdEncoding.DecodedLen(len(part)-1))
			n, err := base64.StdEncoding.Decode(data, part[1:])
			if err != nil {
				return nil, fmt.Errorf("%w: bad base64: %w", errInvalidPacket, err)
			}
			pkts = append(pkts, packet{typ: packetMessage, data: data[:n], binary: true})
		} else {
			p, err := decodePacket(part)
			if err != nil {
				return nil, err
			}
			pkts = append(pkts, p)
		}
		if !more {
			return pkts, nil
		}
		b = rest
	}
}

// appendPayload appends the polling encoding of frames to dst.
func appendPayload(dst []byte, frames []frame) []byte {
	for i := range frames {
		if i > 0 {
			dst = append(dst, payloadSeparator)
		}
		f := &frames[i]
		if f.msg.Binary {
			dst = append(dst, 'b')
			dst = base64.StdEncoding.AppendEncode(dst, f.msg.Data)
			continue
		}
		dst = append(dst, f.typ)
		dst = append(dst, f.msg.Data...)
	}
	return dst
}

// payloadLen is the length of appendPayload's output, to size buffers exactly.
func payloadLen(frames []frame) int {
	n := 0
	for i := range frames {
		if i > 0 {
			n++
		}
		if frames[i].msg.Binary {
			n += 1 + base64.StdEncoding.EncodedLen(len(frames[i].msg.Data))
		} else {
			n += 1 + len(frames[i].msg.Data)
		}
	}
	return n
}

// openPacketData is the JSON of the open packet, with exactly the keys of the
// protocol in their usual order. sid is made of base64url characters only, so it
// needs no escaping.
func openPacketData(sid string, upgrades []string, pingInterval, pingTimeout time.Duration, maxPayload int64) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"sid":"`...)
	b = append(b, sid...)
	b = append(b, `","upgrades":[`...)
	for i, u := range upgrades {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, u)
	}
	b = append(b, `],"pingInterval":`...)
	b = strconv.AppendInt(b, pingInterval.Milliseconds(), 10)
	b = append(b, `,"pingTimeout":`...)
	b = strconv.AppendInt(b, pingTimeout.Milliseconds(), 10)
	b = append(b, `,"maxPayload":`...)
	b = strconv.AppendInt(b, maxPayload, 10)
	b = append(b, '}')
	return b
}
