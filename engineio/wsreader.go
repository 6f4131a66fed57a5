package engineio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"unicode/utf8"
)

// pooledReader is what a connection's frames are read from. An idle
// connection keeps no read buffer: a read takes a buffer from the pool for
// what one system call returns, and gives it back as soon as it is drained. A
// reader that parks its connection has drained it, so a parked connection
// holds no buffer.
//
// With direct set (connections that are never parked, whose reader waits in
// reads and would hold a pooled buffer while idle), it reads into a small
// buffer of the connection's own instead.
//
// An error that comes with bytes is dropped: the connection returns it again
// on the next read.
type pooledReader struct {
	conn   net.Conn
	buf    *[]byte // from readPool while it holds unread bytes; with direct, the connection's own
	r, w   int32   // unread bytes are (*buf)[r:w]
	direct bool
}

// Sizes of read buffers: pooled ones take the many small messages of a
// burst in one system call; a connection that is never parked keeps a small
// one, as it holds it while idle.
const (
	readBufferSize       = 4 << 10
	directReadBufferSize = 256
)

var readPool = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

// Read reads into p; a p at least as large as a read buffer is read into
// directly once the buffer is drained.
func (pr *pooledReader) Read(p []byte) (int, error) {
	if pr.r == pr.w {
		size := readBufferSize
		if pr.direct {
			size = directReadBufferSize
		}
		if len(p) >= size {
			return pr.conn.Read(p)
		}
		if err := pr.more(); err != nil {
			return 0, err
		}
	}
	return pr.take(p), nil
}

// readFull fills p. Unlike Read, it never hands p to the connection, so a p
// on the caller's stack stays there.
func (pr *pooledReader) readFull(p []byte) error {
	for len(p) > 0 {
		if pr.r == pr.w {
			if err := pr.more(); err != nil {
				return err
			}
		}
		p = p[pr.take(p):]
	}
	return nil
}

// more reads from the connection into the buffer, which is empty.
func (pr *pooledReader) more() error {
	if pr.buf == nil {
		if pr.direct {
			b := make([]byte, directReadBufferSize)
			pr.buf = &b
		} else {
			pr.buf = readPool.Get().(*[]byte)
		}
	}
	n, err := pr.conn.Read(*pr.buf)
	if n <= 0 {
		pr.release()
		if err == nil {
			err = io.ErrNoProgress // net.Conn reads do not do this
		}
		return err
	}
	pr.r, pr.w = 0, int32(n)
	return nil
}

// take copies buffered bytes into p.
func (pr *pooledReader) take(p []byte) int {
	n := copy(p, (*pr.buf)[pr.r:pr.w])
	pr.r += int32(n)
	if pr.r == pr.w {
		pr.release()
	}
	return n
}

// fill makes b the first bytes Read returns.
func (pr *pooledReader) fill(b []byte) {
	buf := readPool.Get().(*[]byte)
	if len(b) > len(*buf) {
		readPool.Put(buf)
		big := make([]byte, len(b))
		buf = &big
	}
	pr.buf, pr.r, pr.w = buf, 0, int32(copy(*buf, b))
}

// buffered reports the bytes read from the connection and not yet returned.
func (pr *pooledReader) buffered() int { return int(pr.w - pr.r) }

// drop forgets unread bytes, for a reader that ends.
func (pr *pooledReader) drop() {
	pr.direct = false
	pr.release()
}

// release gives the drained buffer back; a direct reader keeps its own.
func (pr *pooledReader) release() {
	pr.r, pr.w = 0, 0
	if pr.buf == nil {
		return
	}
	switch len(*pr.buf) {
	case readBufferSize:
		readPool.Put(pr.buf)
	case directReadBufferSize:
		if pr.direct {
			return
		}
	}
	pr.buf = nil
}

// WebSocket opcodes (RFC 6455 section 5.2).
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa
)

// Frame header bits.
const (
	finBit  = 0x80
	rsv1Bit = 0x40 // a compressed message (RFC 7692)
	maskBit = 0x80
)

// Close status codes (RFC 6455 section 7.4.1).
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocolError = 1002
	closeNoStatus      = 1005 // never sent: no status in the close frame
	closeInvalidData   = 1007
	closePolicy        = 1008
	closeTooBig        = 1009
)

// maxControlPayload is the largest payload of a control frame.
const maxControlPayload = 125

// readChunk is how much of a large frame's payload is allocated before its
// bytes arrive, so that a peer that announces a large frame and sends
// nothing holds little.
const readChunk = 64 << 10

var (
	// errWSTooBig: a message exceeded MaxPayload. The close frame (1009) is
	// sent and the rest of the frame is discarded by the next read, which
	// waits for the peer's close frame.
	errWSTooBig = errors.New("engineio: websocket message too big")
	// errWSClosed: the close handshake is over.
	errWSClosed = errors.New("engineio: websocket closed")
)

// wsProtocolError is a frame the peer must not send; the close frame with
// code has been sent and the connection ends.
type wsProtocolError struct {
	code   uint16
	reason string
}

func (e *wsProtocolError) Error() string {
	return fmt.Sprintf("engineio: websocket protocol error (%d): %s", e.code, e.reason)
}

// wsFrameHeader is a decoded frame header.
type wsFrameHeader struct {
	fin    bool
	rsv    byte // the three RSV bits, in place
	opcode byte
	length uint64
	key    [4]byte
}

// readFrameHeader reads one frame header from a client, which must mask
// its frames.
func (c *wsConn) readFrameHeader() (wsFrameHeader, error) {
	var b [14]byte
	var h wsFrameHeader
	if err := c.src.readFull(b[:2]); err != nil {
		return h, err
	}
	h.fin = b[0]&finBit != 0
	h.rsv = b[0] & 0x70
	h.opcode = b[0] & 0x0f
	if b[1]&maskBit == 0 {
		return h, &wsProtocolError{closeProtocolError, "unmasked client frame"}
	}
	h.length = uint64(b[1] & 0x7f)
	ext := 0
	switch h.length {
	case 126:
		ext = 2
	case 127:
		ext = 8
	}
	if err := c.src.readFull(b[2 : 2+ext+4]); err != nil {
		return h, err
	}
	switch ext {
	case 2:
		h.length = uint64(binary.BigEndian.Uint16(b[2:]))
	case 8:
		h.length = binary.BigEndian.Uint64(b[2:])
		if h.length>>63 != 0 {
			return h, &wsProtocolError{closeProtocolError, "frame length with the high bit set"}
		}
	}
	copy(h.key[:], b[2+ext:])
	return h, nil
}

// checkFrame reports what is wrong with a frame given the opcode of the
// message in progress (0 when none), or nil.
func (c *wsConn) checkFrame(h *wsFrameHeader, msgOp byte) *wsProtocolError {
	if h.opcode&0x8 != 0 {
		switch {
		case h.opcode > opPong:
			return &wsProtocolError{closeProtocolError, "unknown opcode"}
		case !h.fin:
			return &wsProtocolError{closeProtocolError, "fragmented control frame"}
		case h.length > maxControlPayload:
			return &wsProtocolError{closeProtocolError, "control frame too long"}
		case h.rsv != 0:
			return &wsProtocolError{closeProtocolError, "reserved bits set"}
		}
		return nil
	}
	switch {
	case h.opcode > opBinary:
		return &wsProtocolError{closeProtocolError, "unknown opcode"}
	case h.opcode == opContinuation && msgOp == 0:
		return &wsProtocolError{closeProtocolError, "continuation without a message"}
	case h.opcode != opContinuation && msgOp != 0:
		return &wsProtocolError{closeProtocolError, "new message inside a fragmented one"}
	case h.rsv&^rsv1Bit != 0:
		return &wsProtocolError{closeProtocolError, "reserved bits set"}
	case h.rsv != 0 && (h.opcode == opContinuation || c.deflateFrom == 0):
		return &wsProtocolError{closeProtocolError, "unexpected compression bit"}
	}
	return nil
}

// readMessage reads the next data message: its opcode (text or binary) and
// its payload, a new slice the caller owns. On the way, it answers pings and
// the peer's close frame, and sends the close frame that an error calls for.
//
// Once the connection's close frame is sent, messages are discarded until
// the peer's close frame, which ends the connection (errWSClosed). Every
// other error ends it too, but errWSTooBig, after which the caller reads on
// to complete the close handshake.
//
// A message is read whole; the reader parks only between messages, so what a
// peer can make it hold is bounded by MaxPayload (plus a little for a
// compressed message).
func (c *wsConn) readMessage() (byte, []byte, error) {
	var (
		msgOp      byte // opcode of the message in progress, 0 when none
		compressed bool
		msg        []byte
		maxLen     = uint64(c.srv.opts.MaxPayload)
	)
	for {
		if c.skip > 0 {
			if err := c.discard(); err != nil {
				return 0, nil, err
			}
		}
		h, err := c.readFrameHeader()
		// Once the close frame is sent, data frames are skipped unchecked: the
		// peer may still be sending the rest of a message refused as too big.
		if err == nil && (h.opcode&0x8 != 0 || !c.w.isClosed()) {
			if perr := c.checkFrame(&h, msgOp); perr != nil {
				err = perr
			}
		}
		if err != nil {
			return 0, nil, c.fail(err)
		}
		if h.opcode&0x8 != 0 {
			if err := c.readControl(&h); err != nil {
				return 0, nil, err
			}
			continue
		}
		if c.w.isClosed() {
			// The close handshake is under way: data goes nowhere.
			c.skip = h.length
			continue
		}
		if h.opcode != opContinuation {
			msgOp, compressed = h.opcode, h.rsv&rsv1Bit != 0
		}
		limit := maxLen
		if compressed {
			// What a message of maxLen bytes may compress to, at worst.
			limit = maxLen + maxLen/64 + 64
		}
		if h.length > limit-uint64(len(msg)) {
			c.skip = h.length
			_ = c.w.writeClose(closeTooBig, "message too big") // a failed write shows in the next read
			return 0, nil, errWSTooBig
		}
		if msg, err = c.readPayload(msg, &h); err != nil {
			return 0, nil, err
		}
		if !h.fin {
			continue
		}
		if compressed {
			out, err := inflateMessage(msg, maxLen)
			if err != nil {
				if errors.Is(err, errWSTooBig) {
					_ = c.w.writeClose(closeTooBig, "message too big") // as above
					return 0, nil, errWSTooBig
				}
				return 0, nil, c.fail(&wsProtocolError{closeInvalidData, "bad compressed data"})
			}
			msg = out
		}
		if msg == nil {
			msg = []byte{}
		}
		return msgOp, msg, nil
	}
}

// readPayload appends the frame's unmasked payload to msg, allocating as the
// bytes arrive.
func (c *wsConn) readPayload(msg []byte, h *wsFrameHeader) ([]byte, error) {
	rest := int(h.length)
	pos := 0
	for rest > 0 {
		n := min(rest, readChunk)
		if msg == nil {
			msg = make([]byte, 0, n)
		}
		msg = slices.Grow(msg, n)
		start := len(msg)
		msg = msg[:start+n]
		if err := c.readInto(msg[start:]); err != nil {
			return nil, err
		}
		maskBytes(h.key, pos, msg[start:])
		pos += n
		rest -= n
	}
	return msg, nil
}

// readInto fills p, reading large pieces straight into it.
func (c *wsConn) readInto(p []byte) error {
	for len(p) > 0 {
		n, err := c.src.Read(p)
		p = p[n:]
		if err != nil && (len(p) > 0 || n == 0) {
			return err
		}
	}
	return nil
}

// readControl reads a control frame's payload and acts on it.
func (c *wsConn) readControl(h *wsFrameHeader) error {
	var b [maxControlPayload]byte
	p := b[:h.length]
	if err := c.src.readFull(p); err != nil {
		return err
	}
	maskBytes(h.key, 0, p)
	switch h.opcode {
	case opPing:
		if c.w.isClosed() {
			return nil
		}
		return c.w.writeControl(opPong, p)
	case opPong:
		return nil
	}
	// A close frame: its status, if any, must be one a peer may send, and its
	// reason UTF-8 (section 7.1.6). Answered with the same status, and the
	// connection ends.
	code := uint16(closeNoStatus)
	if len(p) == 1 {
		return c.fail(&wsProtocolError{closeProtocolError, "close frame of one byte"})
	}
	if len(p) >= 2 {
		code = binary.BigEndian.Uint16(p)
		if !validCloseCode(code) {
			return c.fail(&wsProtocolError{closeProtocolError, "invalid close status"})
		}
		if !utf8.Valid(p[2:]) {
			return c.fail(&wsProtocolError{closeInvalidData, "close reason not UTF-8"})
		}
	}
	if !c.w.isClosed() {
		if code == closeNoStatus {
			_ = c.w.writeControl(opClose, nil) // the connection ends either way
		} else {
			_ = c.w.writeClose(code, "") // as above
		}
	}
	return errWSClosed
}

// validCloseCode reports whether a peer may send code in a close frame.
func validCloseCode(code uint16) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code < 1000 || code > 1014:
		return false
	}
	switch code {
	case 1004, closeNoStatus, 1006:
		return false
	}
	return true
}

// fail sends the close frame a protocol error calls for and returns err.
func (c *wsConn) fail(err error) error {
	var perr *wsProtocolError
	if errors.As(err, &perr) && !c.w.isClosed() {
		_ = c.w.writeClose(perr.code, perr.reason) // the connection ends either way
	}
	return err
}

// discard reads and drops the rest of a frame the reader does not want.
func (c *wsConn) discard() error {
	bp := readPool.Get().(*[]byte)
	defer readPool.Put(bp)
	for c.skip > 0 {
		n := int(min(c.skip, uint64(len(*bp))))
		if err := c.readInto((*bp)[:n]); err != nil {
			return err
		}
		c.skip -= uint64(n)
	}
	return nil
}

// maskBytes applies the masking key to b, whose first byte is at offset pos
// of the payload (section 5.3).
func maskBytes(key [4]byte, pos int, b []byte) {
	k := [4]byte{key[pos&3], key[(pos+1)&3], key[(pos+2)&3], key[(pos+3)&3]}
	k32 := binary.LittleEndian.Uint32(k[:])
	k64 := uint64(k32) | uint64(k32)<<32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k64)
		b = b[8:]
	}
	for i := range b {
		b[i] ^= k[i&3]
	}
}

// refuseInvalidText ends a session whose client sent a text message that is
// not valid UTF-8 (RFC 6455 section 8.1): the connection is closed with 1007
// and the message goes nowhere, so one client cannot make the server forward
// bytes that standards-following clients drop their connection over.
func (s *Session) refuseInvalidText(c *wsConn) {
	s.srv.noteRefusal(RefusedInvalidUTF8, nil, s.id)
	c.closeAsync(closeInvalidData, "invalid UTF-8")
	s.closeNow(ReasonParseError, closeDone)
}
