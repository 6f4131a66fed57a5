package engineio

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
)

// batchWriter writes a connection's WebSocket frames.
//
// A server's frames are unmasked (RFC 6455 section 5.1), so a message is a
// header of 2 to 10 bytes and its payload, compressed or not. All the frames
// of a batch collect in one pooled buffer and leave in one write(2); the
// buffer goes back to the pool then, so an idle connection keeps no write
// buffer. One lock per batch, not per frame. Control frames (pongs, the close
// frame) are written under the same lock, so frames never interleave. Once a
// close frame is written, nothing follows it (section 5.5.1): writes report
// net.ErrClosed.
type batchWriter struct {
	mu     sync.Mutex
	conn   net.Conn
	buf    *[]byte     // from batchPool, while a batch holds bytes
	closed atomic.Bool // a close frame was written
}

// Sizes of batch buffers: what a new one can hold, the most a batch
// collects before it is written out early, and the payload size from which
// bytes are written from the caller's slice instead of being copied.
const (
	batchBufferSize = 4 << 10
	maxBatchBytes   = 64 << 10
	directWriteSize = 8 << 10
)

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchBufferSize); return &b }}

// appendFrameHeader appends the header of an unmasked final frame; first is
// the opcode with the RSV bits.
func appendFrameHeader(b []byte, first byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, finBit|first, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finBit|first, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finBit|first, 127), uint64(n))
	}
}

// isClosed reports whether the close frame was written.
func (w *batchWriter) isClosed() bool { return w.closed.Load() }

// writeFrames writes each frame as one WebSocket message: binary messages as
// binary frames (with v3, the Engine.IO v3 protocol, after the byte 4 of a
// message packet), others as text with the packet type first. A message of
// at least deflateFrom bytes is compressed (permessage-deflate; 0: not
// negotiated) unless it has NoCompress.
func (w *batchWriter) writeFrames(fs []frame, v3 bool, deflateFrom int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed.Load() {
		return net.ErrClosed
	}
	if w.buf == nil {
		w.buf = batchPool.Get().(*[]byte)
	}
	for i := range fs {
		f := &fs[i]
		b := *w.buf
		data := f.msg.Data
		op, prefix := byte(opText), packetPrefix(f.typ)
		switch {
		case f.msg.Binary && v3:
			op, prefix = opBinary, v3BinaryPrefix
		case f.msg.Binary:
			op, prefix = opBinary, nil
		}
		if size := len(prefix) + len(data); deflateFrom > 0 && size >= deflateFrom && !f.msg.NoCompress {
			b = appendDeflated(b, op|rsv1Bit, prefix, data)
		} else {
			b = append(appendFrameHeader(b, op, size), prefix...)
			if len(data) >= directWriteSize {
				// A large payload: what is collected, then data, in one writev.
				*w.buf = b
				bufs := net.Buffers{b, data}
				if _, err := bufs.WriteTo(w.conn); err != nil {
					w.releaseLocked()
					return err
				}
				*w.buf = (*w.buf)[:0]
				continue
			}
			b = append(b, data...)
		}
		*w.buf = b
		if len(b) >= maxBatchBytes {
			if err := w.flushLocked(); err != nil {
				return err
			}
			w.buf = batchPool.Get().(*[]byte)
		}
	}
	return w.flushLocked()
}

// packetTypes holds the bytes of the packet types, sliced for the prefix of
// a text message.
const packetTypes = "0123456"

var packetTypeBytes = []byte(packetTypes)

// v3BinaryPrefix starts a binary message packet of protocol v3.
var v3BinaryPrefix = []byte{packetMessage - '0'}

// packetPrefix returns typ as a one-byte slice that allocates nothing.
func packetPrefix(typ byte) []byte {
	if i := int(typ - '0'); i >= 0 && i < len(packetTypeBytes) {
		return packetTypeBytes[i : i+1]
	}
	return []byte{typ}
}

// writeControl writes one control frame (payload at most 125 bytes); a close
// frame is the last frame written.
func (w *batchWriter) writeControl(op byte, payload []byte) error {
	var b [2 + maxControlPayload]byte
	f := append(appendFrameHeader(b[:0], op, len(payload)), payload...)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed.Load() {
		return net.ErrClosed
	}
	if op == opClose {
		w.closed.Store(true)
	}
	_, err := w.conn.Write(f)
	return err
}

// writeClose writes the close frame with a status and a reason, cut to fit.
func (w *batchWriter) writeClose(code uint16, reason string) error {
	var b [maxControlPayload]byte
	p := binary.BigEndian.AppendUint16(b[:0], code)
	if len(reason) > maxControlPayload-2 {
		reason = reason[:maxControlPayload-2]
	}
	p = append(p, reason...)
	return w.writeControl(opClose, p)
}

// flushLocked writes what is collected and returns the buffer to the pool.
func (w *batchWriter) flushLocked() error {
	if w.buf == nil {
		return nil
	}
	var err error
	if len(*w.buf) > 0 {
		_, err = w.conn.Write(*w.buf)
	}
	w.releaseLocked()
	return err
}

func (w *batchWriter) releaseLocked() {
	if cap(*w.buf) <= maxBatchBytes*2 {
		*w.buf = (*w.buf)[:0]
		batchPool.Put(w.buf)
	}
	w.buf = nil
}
