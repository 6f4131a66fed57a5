package engineio

import (
	"net"
	"sync"
)

// batchWriter is what coder/websocket's bufio.Writer writes to. That
// bufio.Writer is tiny (wsWriteBufferSize), so an idle connection keeps no
// write buffer: while the session's writer writes a batch of frames, their
// bytes collect in a pooled buffer and leave in one write when the batch ends
// (one system call for many frames); the buffer goes back to the pool then.
// Writes outside a batch (control frames coder/websocket sends on its own:
// pongs, close frames) go to the connection directly.
//
// Frames never interleave: coder/websocket writes one frame at a time, and mu
// orders its writes with the flush of a batch.
type batchWriter struct {
	mu    sync.Mutex
	conn  net.Conn
	buf   *[]byte // from batchPool, while a batch holds bytes
	batch bool
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

func (w *batchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
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

// begin starts a batch: writes collect until end.
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

func (w *batchWriter) flushLocked() error {
	if w.buf == nil {
		return nil
	}
	_, err := w.conn.Write(*w.buf)
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
