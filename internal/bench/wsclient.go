package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// wsClient is the load generator's own Socket.IO client: the WebSocket
// transport of Engine.IO v4 on a raw TCP connection, main namespace only, just
// what the scenarios need. It exists so that the measuring tool costs little:
// a read takes every frame the kernel has in one system call (read time is
// taken once per read, not per event), an event is handed to onEvent without
// a copy or an allocation, and a publisher's burst of emits leaves in one
// write(2). Server frames are never masked nor compressed (no extension is
// offered); fragmented messages are reassembled.
type wsClient struct {
	conn    net.Conn
	onEvent func(data []byte, recv int64) // data: the Socket.IO event array; valid during the call
	base    time.Time

	wmu  sync.Mutex
	wbuf []byte // frames not yet written (publishers batch into it)
	mask [4]byte

	stopOnce  sync.Once
	closeOnce sync.Once
	closing   chan struct{}
	done      chan struct{}
	err       error // why the read loop ended; set before done is closed
}

// maxFrame bounds one frame the client reads.
const maxFrame = 64 << 20

// errClosed is the error of a client stopped by Close.
var errClosed = errors.New("bench: client closed")

// dialWS connects to a node's Socket.IO endpoint (http://host/socket.io/) and
// the main namespace with auth (nil: none). onEvent (nil: events are
// discarded) gets each EVENT packet's JSON array and the receive time in
// nanoseconds since base, on the read goroutine.
func dialWS(ctx context.Context, endpoint string, auth []byte, base time.Time, onEvent func(data []byte, recv int64)) (*wsClient, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", u.Host, err)
	}
	c := &wsClient{conn: conn, onEvent: onEvent, base: base, closing: make(chan struct{}), done: make(chan struct{})}
	if _, err := rand.Read(c.mask[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("bench: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	br, err := c.handshake(u, auth)
	if !stop() || err != nil {
		conn.Close()
		return nil, errors.Join(err, ctx.Err())
	}
	go c.readLoop(br)
	return c, nil
}

// handshake upgrades the connection and connects the main namespace; it returns
// what was read beyond the namespace's CONNECT answer.
func (c *wsClient) handshake(u *url.URL, auth []byte) ([]byte, error) {
	key := make([]byte, 16)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	path := u.Path
	if path == "" || path == "/" {
		path = "/socket.io/"
	}
	req := "GET " + path + "?EIO=4&transport=websocket HTTP/1.1\r\nHost: " + u.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " +
		base64.StdEncoding.EncodeToString(key) + "\r\n\r\n"
	if _, err := io.WriteString(c.conn, req); err != nil {
		return nil, fmt.Errorf("bench: handshake: %w", err)
	}
	br := bufio.NewReaderSize(c.conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, fmt.Errorf("bench: handshake: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, fmt.Errorf("bench: handshake: %s", resp.Status)
	}
	// The Engine.IO open packet, then our CONNECT, then its answer.
	fr := frameReader{r: br, c: c}
	msg, err := fr.next()
	if err != nil || len(msg) == 0 || msg[0] != '0' {
		return nil, fmt.Errorf("bench: no Engine.IO open packet (%q): %w", msg, err)
	}
	c.wmu.Lock()
	c.appendFrame(append([]byte("40"), auth...))
	err = c.flushLocked()
	c.wmu.Unlock()
	if err != nil {
		return nil, err
	}
	for {
		msg, err := fr.next()
		if err != nil {
			return nil, fmt.Errorf("bench: namespace connect: %w", err)
		}
		switch {
		case bytes.HasPrefix(msg, []byte("40")):
			rest := make([]byte, br.Buffered())
			_, err := io.ReadFull(br, rest)
			return rest, err
		case bytes.HasPrefix(msg, []byte("44")):
			return nil, fmt.Errorf("bench: namespace connect refused: %s", msg[2:])
		case len(msg) > 0 && msg[0] == '2':
			c.pong()
		}
	}
}

// frameReader reads whole WebSocket messages from a bufio.Reader during the
// handshake (the read loop has its own buffer).
type frameReader struct {
	r   *bufio.Reader
	c   *wsClient // answers pings
	buf []byte
}

func (f *frameReader) next() ([]byte, error) {
	f.buf = f.buf[:0]
	for {
		var h [14]byte
		if _, err := io.ReadFull(f.r, h[:2]); err != nil {
			return nil, err
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			if _, err := io.ReadFull(f.r, h[2:4]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint16(h[2:4]))
		case 127:
			if _, err := io.ReadFull(f.r, h[2:10]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint64(h[2:10]))
		}
		if n > 1<<20 {
			return nil, errors.New("bench: handshake frame too large")
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(f.r, p); err != nil {
			return nil, err
		}
		switch h[0] & 0x0f {
		case 0x8:
			return nil, io.EOF
		case 0x9:
			f.c.wmu.Lock()
			f.c.appendFrameOp(0xA, p)
			err := f.c.flushLocked()
			f.c.wmu.Unlock()
			if err != nil {
				return nil, err
			}
			continue
		case 0xA:
			continue
		}
		f.buf = append(f.buf, p...)
		if h[0]&0x80 != 0 {
			return f.buf, nil
		}
	}
}

// appendFrame adds a masked text frame to the write buffer (wmu held).
func (c *wsClient) appendFrame(p []byte) { c.appendFrameOp(0x1, p) }

func (c *wsClient) appendFrameOp(op byte, p []byte) {
	b := c.wbuf
	b = append(b, 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	b = append(b, c.mask[:]...)
	start := len(b)
	b = append(b, p...)
	for i := range p {
		b[start+i] ^= c.mask[i&3]
	}
	c.wbuf = b
}

func (c *wsClient) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.conn.Write(c.wbuf)
	if cap(c.wbuf) > 1<<20 {
		c.wbuf = nil
	} else {
		c.wbuf = c.wbuf[:0]
	}
	if err != nil {
		return fmt.Errorf("bench: write: %w", err)
	}
	return nil
}

func (c *wsClient) pong() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.appendFrame([]byte{'3'})
	// A failed pong shows as the read loop's error.
	_ = c.flushLocked()
}

// emit queues the event [name, raw] (raw is JSON); flush sends what is queued.
func (c *wsClient) emit(name string, raw []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var tmp [256]byte
	p := append(tmp[:0], `42["`...)
	p = append(p, name...)
	p = append(p, `",`...)
	p = append(p, raw...)
	p = append(p, ']')
	c.appendFrame(p)
}

func (c *wsClient) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.flushLocked()
}

// readLoop reads frames until the connection ends. buf starts with what the
// handshake read beyond its last message.
func (c *wsClient) readLoop(pre []byte) {
	buf := make([]byte, 64<<10)
	n := copy(buf, pre)
	var (
		frag []byte // a fragmented message being reassembled
		err  error
	)
	for err == nil {
		var m int
		m, err = c.conn.Read(buf[n:])
		n += m
		recv := int64(time.Since(c.base))
		off := 0
		for err == nil {
			fin, op, payload, size, ok := parseFrame(buf[off:n])
			if !ok {
				if size > maxFrame {
					err = fmt.Errorf("bench: WebSocket frame of %d bytes", size)
					break
				}
				if size > len(buf) { // a message larger than the buffer: grow it
					nb := make([]byte, size)
					copy(nb, buf[off:n])
					buf, n, off = nb, n-off, 0
				}
				break
			}
			off += size
			err = c.handleFrame(fin, op, payload, &frag, recv)
		}
		n = copy(buf, buf[off:n])
	}
	select {
	case <-c.closing:
		err = errClosed
	default:
	}
	c.err = err
	c.stop()
	close(c.done)
}

// parseFrame parses one unmasked server frame at the start of b. ok is false
// when b holds less than a frame; size is then what the frame needs, when
// known.
func parseFrame(b []byte) (fin bool, op byte, payload []byte, size int, ok bool) {
	if len(b) < 2 {
		return false, 0, nil, 0, false
	}
	h, n := 2, int(b[1]&0x7f)
	switch n {
	case 126:
		if len(b) < 4 {
			return false, 0, nil, 0, false
		}
		h, n = 4, int(binary.BigEndian.Uint16(b[2:4]))
	case 127:
		if len(b) < 10 {
			return false, 0, nil, 0, false
		}
		v := binary.BigEndian.Uint64(b[2:10])
		if v > 1<<30 {
			v = 1 << 30 // refused by the caller as too large
		}
		h, n = 10, int(v)
	}
	if b[1]&0x80 != 0 {
		h += 4 // masked (a server must not; read anyway)
	}
	if len(b) < h+n {
		return false, 0, nil, h + n, false
	}
	p := b[h : h+n]
	if b[1]&0x80 != 0 {
		m := b[h-4 : h]
		for i := range p {
			p[i] ^= m[i&3]
		}
	}
	return b[0]&0x80 != 0, b[0] & 0x0f, p, h + n, true
}

func (c *wsClient) handleFrame(fin bool, op byte, p []byte, frag *[]byte, recv int64) error {
	switch op {
	case 0x8:
		return io.EOF
	case 0x9:
		c.wmu.Lock()
		c.appendFrameOp(0xA, p)
		err := c.flushLocked()
		c.wmu.Unlock()
		return err
	case 0xA:
		return nil
	case 0x0: // continuation
		*frag = append(*frag, p...)
		if !fin {
			return nil
		}
		p = *frag
		*frag = (*frag)[:0]
	case 0x1, 0x2:
		if !fin {
			*frag = append((*frag)[:0], p...)
			return nil
		}
	default:
		return fmt.Errorf("bench: WebSocket opcode %d", op)
	}
	if len(p) == 0 {
		return nil
	}
	switch p[0] {
	case '2':
		c.pong()
	case '4':
		if len(p) > 2 && p[1] == '2' && c.onEvent != nil {
			c.onEvent(p[2:], recv)
		} else if len(p) > 1 && p[1] == '1' {
			return fmt.Errorf("%w: namespace disconnect", errServerCut)
		}
	case '1':
		return fmt.Errorf("%w: Engine.IO close", errServerCut)
	}
	return nil
}

// errServerCut is the error of a client whose server ended it.
var errServerCut = errors.New("bench: server disconnected the client")

func (c *wsClient) stop() {
	c.stopOnce.Do(func() { c.conn.Close() })
}

// Err is why the client stopped (nil while it runs).
func (c *wsClient) Err() error {
	select {
	case <-c.done:
		return c.err
	default:
		return nil
	}
}

// Done is closed when the client has stopped.
func (c *wsClient) Done() <-chan struct{} { return c.done }

// Close ends the connection and waits for the read loop.
func (c *wsClient) Close() error {
	c.closeOnce.Do(func() { close(c.closing) })
	c.stop()
	<-c.done
	return nil
}
