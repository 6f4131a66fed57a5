package engineio

import (
	"encoding/binary"
	"net"
	"sync"
)

// batchWriter writes a connection's WebSocket frames.
//
// The session's writer writes its messages itself (writeFrames): a server's
// frames are unmasked (RFC 6455 section 5.1), so a message is a header of 2 to
// 10 bytes and its payload. All the frames of a batch collect in one pooled
// buffer and leave in one write(2); the buffer goes back to the pool then, so
// an idle connection keeps no write buffer. One lock per batch, not per frame.
//
// coder/websocket still writes the control frames it sends on its own (pongs,
// close frames) through Write. Its bufio.Writer is tiny (wsWriteBufferSize), so
// one of its frames may come in several Writes: they are held in pend until the
// frame is complete and only then written, so frames never interleave. Once a
// close frame is written, nothing follows it (section 5.5.1): writeFrames
// reports net.ErrClosed.
//
// With raw set (compressed connections, where coder/websocket writes every
// message to deflate it), Write passes coder/websocket's bytes on as they
// come, collected between begin and end.
type batchWriter struct {
	mu     sync.Mutex
	conn   net.Conn
	buf    *[]byte // from batchPool, while a batch holds bytes
	pend   []byte  // the start of a frame coder/websocket is writing
	closed bool    // a close frame was written
	raw    bool
	batch  bool
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

// WebSocket opcodes the writer uses (RFC 6455 section 5.2).
const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	finBit   = 0x80
)

// appendFrameHeader appends the header of an unmasked final frame.
func appendFrameHeader(b []byte, opcode byte, n int) []byte {
	switch {
	case n <= 125:
		return append(b, finBit|opcode, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, finBit|opcode, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, finBit|opcode, 127), uint64(n))
	}
}

// frameSize returns the size of the frame at the start of b, or 0 when b does
// not hold all of it yet.
func frameSize(b []byte) int {
	if len(b) < 2 {
		return 0
	}
	h, n := 2, uint64(b[1]&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return 0
		}
		h, n = 4, uint64(binary.BigEndian.Uint16(b[2:]))
	case 127:
		if len(b) < 10 {
			return 0
		}
		h, n = 10, binary.BigEndian.Uint64(b[2:])
	}
	if b[1]&0x80 != 0 {
		h += 4 // a masking key; a server never masks, but the size stays right
	}
	if n > uint64(len(b)-h) {
		return 0
	}
	return h + int(n)
}

// writeFrames writes each frame as one WebSocket message: binary messages as
// binary frames (with v3, the Engine.IO v3 protocol, after the byte 4 of a
// message packet), others as text with the packet type first.
func (w *batchWriter) writeFrames(fs []frame, v3 bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return net.ErrClosed
	}
	if w.buf == nil {
		w.buf = batchPool.Get().(*[]byte)
	}
	for i := range fs {
		f := &fs[i]
		b := *w.buf
		data := f.msg.Data
		switch {
		case f.msg.Binary && v3:
			b = append(appendFrameHeader(b, opBinary, 1+len(data)), packetMessage-'0')
		case f.msg.Binary:
			b = appendFrameHeader(b, opBinary, len(data))
		default:
			b = append(appendFrameHeader(b, opText, 1+len(data)), f.typ)
		}
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
		*w.buf = append(b, data...)
		if len(*w.buf) >= maxBatchBytes {
			if err := w.flushLocked(); err != nil {
				return err
			}
			w.buf = batchPool.Get().(*[]byte)
		}
	}
	return w.flushLocked()
}

// Write takes the bytes coder/websocket writes.
func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.raw {
		return w.writeRawLocked(p)
	}
	size := len(p)
	if len(w.pend) == 0 {
		// Usually a whole frame, or whole frames.
		for len(p) > 0 {
			n := frameSize(p)
			if n == 0 {
				break
			}
			if err := w.writeCompleteLocked(p[:n]); err != nil {
				return 0, err
			}
			p = p[n:]
		}
		if len(p) > 0 {
			w.pend = append(w.pend, p...)
		}
		return size, nil
	}
	w.pend = append(w.pend, p...)
	for {
		n := frameSize(w.pend)
		if n == 0 {
			break
		}
		if err := w.writeCompleteLocked(w.pend[:n]); err != nil {
			w.pend = nil
			return 0, err
		}
		w.pend = w.pend[n:]
	}
	if len(w.pend) == 0 {
		w.pend = nil // an idle connection keeps no buffer
	}
	return size, nil
}

// writeCompleteLocked writes one whole frame from coder/websocket.
func (w *batchWriter) writeCompleteLocked(f []byte) error {
	if w.closed {
		return net.ErrClosed
	}
	if f[0]&0x0f == opClose {
		w.closed = true
	}
	_, err := w.conn.Write(f)
	return err
}

// writeRawLocked passes coder/websocket's bytes on, collected while a batch
// runs.
func (w *batchWriter) writeRawLocked(p []byte) (int, error) {
	if !w.batch {
		return w.conn.Write(p)
	}
	if len(p) >= directWriteSize {
		// A large payload: what is collected, then p, in one writev.
		if w.buf == nil {
			return w.conn.Write(p)
		}
		pre := len(*w.buf)
		bufs := net.Buffers{*w.buf, p}
		n, err := bufs.WriteTo(w.conn)
		w.releaseLocked()
		return int(max(0, n-int64(pre))), err
	}
	if w.buf == nil {
		w.buf = batchPool.Get().(*[]byte)
	}
	*w.buf = append(*w.buf, p...)
	if len(*w.buf) >= maxBatchBytes {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// begin starts a batch of a raw writer: writes collect until end.
func (w *batchWriter) begin() {
	w.mu.Lock()
	w.batch = true
	w.mu.Unlock()
}

// end writes what the batch collected and returns its buffer to the pool.
func (w *batchWriter) end() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batch = false
	return w.flushLocked()
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
