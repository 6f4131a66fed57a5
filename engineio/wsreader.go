package engineio

import (
	"net"
	"sync"

	"github.com/coder/websocket"
)

// pooledReader is what coder/websocket's bufio.Reader reads from. That
// bufio.Reader is tiny (wsReadBufferSize), so an idle connection keeps no read
// buffer: a read takes a buffer from the pool for what one system call
// returns, and gives it back as soon as it is drained. A reader that parks its
// connection has drained it, so a parked connection holds no buffer.
//
// With direct set, it reads from the connection into the caller's buffer
// instead, once what fill gave it is drained: for connections that are never
// parked, whose reader waits in reads and would hold a pooled buffer while
// idle.
type pooledReader struct {
	conn   net.Conn
	buf    *[]byte // from readPool, while it holds unread bytes
	r, w   int     // unread bytes are (*buf)[r:w]
	err    error   // returned once the buffer is drained
	direct bool
}

// readBufferSize is the size of pooled read buffers: many small messages of
// a burst come in one system call.
const readBufferSize = 4 << 10

var readPool = sync.Pool{New: func() any { b := make([]byte, readBufferSize); return &b }}

func (pr *pooledReader) Read(p []byte) (int, error) {
	if pr.buf == nil {
		if pr.err != nil {
			err := pr.err
			pr.err = nil
			return 0, err
		}
		if pr.direct || len(p) >= readBufferSize {
			return pr.conn.Read(p)
		}
		buf := readPool.Get().(*[]byte)
		n, err := pr.conn.Read(*buf)
		if n <= 0 {
			readPool.Put(buf)
			return 0, err
		}
		pr.buf, pr.r, pr.w, pr.err = buf, 0, n, err
	}
	n := copy(p, (*pr.buf)[pr.r:pr.w])
	pr.r += n
	if pr.r < pr.w {
		return n, nil
	}
	pr.release()
	err := pr.err
	pr.err = nil
	return n, err
}

// fill makes b the first bytes Read returns.
func (pr *pooledReader) fill(b []byte) {
	buf := readPool.Get().(*[]byte)
	if len(b) > len(*buf) {
		readPool.Put(buf)
		big := make([]byte, len(b))
		buf = &big
	}
	pr.buf, pr.r, pr.w = buf, 0, copy(*buf, b)
}

// buffered reports the bytes read from the connection and not yet returned.
func (pr *pooledReader) buffered() int { return pr.w - pr.r }

func (pr *pooledReader) release() {
	if len(*pr.buf) == readBufferSize {
		readPool.Put(pr.buf)
	}
	pr.buf, pr.r, pr.w = nil, 0, 0
}

// refuseInvalidText ends a session whose client sent a text message that is
// not valid UTF-8 (RFC 6455 section 8.1): the connection is closed with 1007
// and the message goes nowhere, so one client cannot make the server forward
// bytes that standards-following clients drop their connection over.
func (s *Session) refuseInvalidText(c *wsConn) {
	s.srv.noteRefusal(RefusedInvalidUTF8, nil, s.id)
	c.closeAsync(websocket.StatusInvalidFramePayloadData, "invalid UTF-8")
	s.closeNow(ReasonParseError, closeDone)
}
