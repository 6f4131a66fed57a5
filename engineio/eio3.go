package engineio

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Engine.IO protocol v3, spoken by Socket.IO 2.x clients when
// Options.AllowEIO3 is on. What differs from v4:
//
//   - the client pings ("2") and the server answers ("3"); a session whose
//     client sends no ping for PingInterval+PingTimeout is closed;
//   - a polling payload is a run of "<length>:<packet>" where the length
//     counts UTF-16 code units (the length of a JavaScript string), and a
//     binary message is "b4<base64>";
//   - a client that supports binary (no "b64" query parameter) gets a
//     payload with binary messages in the binary encoding: for each packet a
//     byte 0 (text) or 1 (binary), the decimal digits of its length as byte
//     values 0-9, a byte 255, then the packet: text as UTF-8, binary as the
//     type byte 4 and the data; it may POST that encoding too (Content-Type
//     application/octet-stream);
//   - a binary WebSocket message starts with the type byte 4.

// maxV3LengthDigits bounds the length field of a v3 payload packet: more
// digits than any MaxPayload needs is a malformed payload, not a large one.
const maxV3LengthDigits = 12

// utf16Len returns the length of b, UTF-8, in UTF-16 code units. An invalid
// byte counts as one unit, as the replacement character JavaScript decodes it
// to.
func utf16Len(b []byte) int {
	n := 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r >= 0x10000 {
			n += 2
		} else {
			n++
		}
		b = b[size:]
	}
	return n
}

// cutUTF16 splits b after n UTF-16 code units; ok is false when b is shorter
// or the cut would split a surrogate pair.
func cutUTF16(b []byte, n int) (head, tail []byte, ok bool) {
	i := 0
	for n > 0 {
		if i >= len(b) {
			return nil, nil, false
		}
		r, size := utf8.DecodeRune(b[i:])
		units := 1
		if r >= 0x10000 {
			units = 2
		}
		if units > n {
			return nil, nil, false
		}
		n -= units
		i += size
	}
	return b[:i], b[i:], true
}

// v3PacketText appends the text encoding of one frame.
func v3PacketText(dst []byte, f *frame) []byte {
	if f.msg.Binary {
		dst = append(dst, 'b', packetMessage)
		return base64.StdEncoding.AppendEncode(dst, f.msg.Data)
	}
	dst = append(dst, f.typ)
	return append(dst, f.msg.Data...)
}

// appendPayloadV3 appends the v3 text encoding of frames.
func appendPayloadV3(dst []byte, frames []frame) []byte {
	var one []byte
	for i := range frames {
		one = v3PacketText(one[:0], &frames[i])
		dst = strconv.AppendInt(dst, int64(utf16Len(one)), 10)
		dst = append(dst, ':')
		dst = append(dst, one...)
	}
	return dst
}

// appendPayloadV3Binary appends the v3 binary encoding of frames.
func appendPayloadV3Binary(dst []byte, frames []frame) []byte {
	appendLen := func(dst []byte, n int) []byte {
		for _, d := range strconv.Itoa(n) {
			dst = append(dst, byte(d-'0'))
		}
		return append(dst, 0xff)
	}
	for i := range frames {
		f := &frames[i]
		if f.msg.Binary {
			dst = append(dst, 1)
			dst = appendLen(dst, 1+len(f.msg.Data))
			dst = append(dst, packetMessage-'0')
			dst = append(dst, f.msg.Data...)
			continue
		}
		dst = append(dst, 0)
		dst = appendLen(dst, 1+len(f.msg.Data))
		dst = append(dst, f.typ)
		dst = append(dst, f.msg.Data...)
	}
	return dst
}

// hasBinary reports whether a frame is a binary message.
func hasBinary(frames []frame) bool {
	for i := range frames {
		if frames[i].msg.Binary {
			return true
		}
	}
	return false
}

// decodePayloadV3 decodes a v3 polling payload a client posted: the binary
// encoding when binary is set (Content-Type application/octet-stream), else
// the text one. Every packet must be valid, otherwise nothing is returned.
func decodePayloadV3(b []byte, binary bool) ([]packet, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty payload", errInvalidPacket)
	}
	if binary {
		return decodePayloadV3Binary(b)
	}
	var pkts []packet
	for len(b) > 0 {
		colon := bytes.IndexByte(b, ':')
		if colon <= 0 || colon > maxV3LengthDigits {
			return nil, fmt.Errorf("%w: v3 payload: bad length", errInvalidPacket)
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%w: v3 payload: bad length %q", errInvalidPacket, b[:colon])
		}
		msg, rest, ok := cutUTF16(b[colon+1:], n)
		if !ok {
			return nil, fmt.Errorf("%w: v3 payload: length %d beyond the payload", errInvalidPacket, n)
		}
		b = rest
		if len(msg) == 0 {
			continue
		}
		p, err := decodePacketV3Text(msg)
		if err != nil {
			return nil, err
		}
		pkts = append(pkts, p)
	}
	return pkts, nil
}

// decodePacketV3Text decodes one text packet, "b4<base64>" for binary.
func decodePacketV3Text(msg []byte) (packet, error) {
	if msg[0] != 'b' {
		return decodePacket(msg)
	}
	if len(msg) < 2 || msg[1] != packetMessage {
		return packet{}, fmt.Errorf("%w: v3 base64 packet is not a message", errInvalidPacket)
	}
	data := make([]byte, base64.StdEncoding.DecodedLen(len(msg)-2))
	n, err := base64.StdEncoding.Decode(data, msg[2:])
	if err != nil {
		return packet{}, fmt.Errorf("%w: bad base64: %w", errInvalidPacket, err)
	}
	return packet{typ: packetMessage, data: data[:n], binary: true}, nil
}

func decodePayloadV3Binary(b []byte) ([]packet, error) {
	var pkts []packet
	for len(b) > 0 {
		isText := b[0] == 0
		if b[0] > 1 {
			return nil, fmt.Errorf("%w: v3 binary payload: bad kind %d", errInvalidPacket, b[0])
		}
		n, i := 0, 1
		for ; i < len(b) && b[i] != 0xff; i++ {
			if b[i] > 9 || i > maxV3LengthDigits {
				return nil, fmt.Errorf("%w: v3 binary payload: bad length", errInvalidPacket)
			}
			n = n*10 + int(b[i])
		}
		if i == 1 || i >= len(b) || n > len(b)-i-1 {
			return nil, fmt.Errorf("%w: v3 binary payload: bad length", errInvalidPacket)
		}
		msg := b[i+1 : i+1+n]
		b = b[i+1+n:]
		if len(msg) == 0 {
			return nil, fmt.Errorf("%w: v3 binary payload: empty packet", errInvalidPacket)
		}
		if isText {
			p, err := decodePacketV3Text(msg)
			if err != nil {
				return nil, err
			}
			pkts = append(pkts, p)
			continue
		}
		if msg[0] != packetMessage-'0' {
			return nil, fmt.Errorf("%w: v3 binary packet of type %d", errInvalidPacket, msg[0])
		}
		pkts = append(pkts, packet{typ: packetMessage, data: msg[1:], binary: true})
	}
	return pkts, nil
}

// onClientPing answers a v3 client's ping and restarts the wait for the
// next one.
func (s *Session) onClientPing(data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != stateOpen {
		return
	}
	wait := s.srv.opts.PingInterval + s.srv.opts.PingTimeout
	s.srv.hb.schedule(s, wait)
	s.queue = append(s.queue, frame{typ: packetPong, msg: Message{Data: data}})
	s.flushLocked()
}
