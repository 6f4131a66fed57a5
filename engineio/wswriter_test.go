package engineio

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// tcpPair returns both ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		_ = client.Close() // the test is over
		_ = server.Close() // the test is over
	})
	return client, server
}

// TestBatchWriterRaw writes small and large pieces inside and outside batches
// of a raw writer (compressed connections) and checks that the bytes arrive
// complete and in order, and that no buffer is held after a batch.
func TestBatchWriterRaw(t *testing.T) {
	client, server := tcpPair(t)
	w := &batchWriter{conn: server, raw: true}
	var want bytes.Buffer
	write := func(p []byte) {
		t.Helper()
		n, err := w.Write(p)
		if err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v; want %d", n, err, len(p))
		}
		want.Write(p)
	}
	piece := func(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 0, 1<<20)
		buf := make([]byte, 32<<10)
		if err := client.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Error(err)
		}
		for {
			n, err := client.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				got <- b
				return
			}
		}
	}()

	write(piece('a', 10)) // outside a batch: straight to the socket
	w.begin()
	write(piece('b', 100))
	write(piece('c', directWriteSize)) // with collected bytes: one writev
	write(piece('d', 5))
	for i := range maxBatchBytes/1000 + 5 { // crosses maxBatchBytes: written early
		write(piece(byte('e'+i%10), 1000))
	}
	write(piece('z', directWriteSize*2)) // nothing collected: direct
	if err := w.end(); err != nil {
		t.Fatal(err)
	}
	if w.buf != nil {
		t.Error("buffer kept after the batch")
	}
	w.begin()
	if err := w.end(); err != nil { // an empty batch writes nothing
		t.Fatal(err)
	}
	write(piece('y', 3))
	total := want.Len()
	if err := server.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b := <-got
	if len(b) != total || !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("received %d bytes, want %d; equal prefix %d", len(b), total, commonPrefix(b, want.Bytes()))
	}
}

func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestBatchWriterError checks that a write to a closed connection fails
// inside a batch too.
func TestBatchWriterError(t *testing.T) {
	_, server := tcpPair(t)
	w := &batchWriter{conn: server, raw: true}
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	w.begin()
	if _, err := w.Write([]byte("collected")); err != nil {
		t.Fatalf("collecting write failed: %v", err)
	}
	if err := w.end(); err == nil {
		t.Error("end on a closed connection succeeded")
	}
	if _, err := w.Write([]byte("direct")); err == nil {
		t.Error("direct write on a closed connection succeeded")
	}
}

// TestWebSocketLargeBatch queues messages of very different sizes at once, so
// that one batch of the writer holds them all, and checks that the client
// gets each, complete and in order.
func TestWebSocketLargeBatch(t *testing.T) {
	h := sessionHandler{opened: make(chan *Session, 1)}
	srv := NewServer(h, nil)
	ts := serve(t, srv, nil)
	c := dialWS(t, ts.wsURL("EIO=4&transport=websocket"))
	c.SetReadLimit(-1)
	readWS(t, c)
	sess := <-h.opened
	sizes := []int{1, directWriteSize - 10, directWriteSize + 10, 70_000, 5, 300_000, 20, maxBatchBytes, 3}
	var msgs []Message
	for i, n := range sizes {
		msgs = append(msgs, Message{Data: []byte(strings.Repeat(string(rune('a'+i)), n)), Binary: i%2 == 1})
	}
	if err := sess.Send(msgs...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, m := range msgs {
		typ, r, err := c.Reader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		want := m.Data
		if !m.Binary {
			want = append([]byte{'4'}, m.Data...)
		}
		if (typ == websocket.MessageBinary) != m.Binary || !bytes.Equal(b, want) {
			t.Fatalf("message %d: %v, %d bytes; want binary %v, %d bytes", i, typ, len(b), m.Binary, len(want))
		}
	}
}

// TestBatchWriterFrames writes messages with writeFrames and control frames
// the way coder/websocket does (in pieces, through Write) on a real TCP
// connection, and reads them back with a strict frame reader: every message
// arrives whole, in order, with its type; control frames written in pieces
// never split a message; after the close frame nothing more is written.
func TestBatchWriterFrames(t *testing.T) {
	client, server := tcpPair(t)
	w := &batchWriter{conn: server}
	sizes := []int{0, 1, 124, 125, 126, 65535, 65536, directWriteSize - 1, directWriteSize, maxBatchBytes + 7, 3}
	var fs []frame
	for i, n := range sizes {
		fs = append(fs, frame{typ: packetMessage, msg: Message{Data: bytes.Repeat([]byte{byte('a' + i)}, n), Binary: i%3 == 1}})
	}

	// A strict reader of server frames on the other end.
	got := make(chan wsMsg, 64)
	done := make(chan error, 1)
	go func() {
		done <- readFrames(client, got)
	}()

	if err := w.writeFrames(fs[:3], false); err != nil {
		t.Fatal(err)
	}
	// A pong written in pieces: held back until complete.
	pong := appendFrameHeader(nil, 0xA, 4)
	pong = append(pong, "ping"...)
	for _, p := range [][]byte{pong[:1], pong[1:3], pong[3:]} {
		if n, err := w.Write(p); err != nil || n != len(p) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if w.pend != nil {
		t.Error("a complete frame left bytes pending")
	}
	if err := w.writeFrames(fs[3:], false); err != nil {
		t.Fatal(err)
	}
	if w.buf != nil {
		t.Error("buffer kept after writeFrames")
	}
	for i, f := range fs {
		var m wsMsg
		select {
		case m = <-got:
		case err := <-done:
			t.Fatalf("reader ended before message %d: %v", i, err)
		}
		want := f.msg.Data
		if !f.msg.Binary {
			want = append([]byte{f.typ}, want...)
		}
		if (m.typ == websocket.MessageBinary) != f.msg.Binary || !bytes.Equal(m.b, want) {
			t.Fatalf("message %d: type %v, %d bytes; want binary %v, %d bytes", i, m.typ, len(m.b), f.msg.Binary, len(want))
		}
	}

	// A close frame (status 1000) in two pieces, then nothing may follow.
	cl := appendFrameHeader(nil, opClose, 2)
	cl = append(cl, 0x03, 0xe8)
	if _, err := w.Write(cl[:3]); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(cl[3:]); err != nil {
		t.Fatal(err)
	}
	if err := w.writeFrames(fs[:1], false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writeFrames after the close frame = %v, want net.ErrClosed", err)
	}
	if _, err := w.Write(pong); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after the close frame = %v, want net.ErrClosed", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		t.Fatalf("message after the close frame: %v", m.typ)
	default:
	}
}

type wsMsg struct {
	typ websocket.MessageType
	b   []byte
}

// readFrames reads unmasked frames from c until a close frame with status
// 1000, sending data messages to got; it fails on anything a server must not
// send (fragments, masked frames, reserved bits).
func readFrames(c net.Conn, got chan<- wsMsg) error {
	if err := c.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return err
		}
		if h[0]&0xf0 != finBit || h[1]&0x80 != 0 {
			return fmt.Errorf("bad header %x", h)
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var e [2]byte
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return err
			}
			n = uint64(binary.BigEndian.Uint16(e[:]))
		case 127:
			var e [8]byte
			if _, err := io.ReadFull(r, e[:]); err != nil {
				return err
			}
			n = binary.BigEndian.Uint64(e[:])
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		switch op := h[0] & 0x0f; op {
		case opText:
			got <- wsMsg{websocket.MessageText, b}
		case opBinary:
			got <- wsMsg{websocket.MessageBinary, b}
		case 0xA:
			if string(b) != "ping" {
				return fmt.Errorf("pong %q", b)
			}
		case opClose:
			if !bytes.Equal(b, []byte{0x03, 0xe8}) {
				return fmt.Errorf("close payload %x", b)
			}
			return nil
		default:
			return fmt.Errorf("opcode %x", op)
		}
	}
}

// recordConn records each write it gets.
type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

// FuzzBatchWriterPieces writes a sequence of frames (sizes and opcodes from
// the input) through Write in arbitrary pieces, as coder/websocket's small
// bufio.Writer may cut them, with writeFrames batches in between: every write
// reaching the connection holds whole frames, all bytes arrive in order, and
// nothing follows a close frame.
func FuzzBatchWriterPieces(f *testing.F) {
	f.Add([]byte{0x0a, 4, 1, 0x09, 125, 7, 0x01, 200, 3, 0x08, 2, 1})
	f.Add([]byte{0x02, 255, 1, 0x0a, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		rc := &recordConn{}
		w := &batchWriter{conn: rc}
		var want []byte
		closed := false
		for len(in) >= 3 {
			op, size, cut := in[0]&0x0f, int(in[1])*3, int(in[2])
			in = in[3:]
			if op == 0x3 { // stands for a batch of the session's writer
				err := w.writeFrames([]frame{{typ: packetMessage, msg: Message{Data: bytes.Repeat([]byte{'x'}, size)}}}, false)
				if closed {
					if !errors.Is(err, net.ErrClosed) {
						t.Fatalf("writeFrames after close = %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				want = append(appendFrameHeader(want, opText, size+1), packetMessage)
				want = append(want, bytes.Repeat([]byte{'x'}, size)...)
				continue
			}
			fr := appendFrameHeader(nil, op, size)
			fr = append(fr, bytes.Repeat([]byte{op}, size)...)
			cut = min(cut, len(fr))
			for _, p := range [][]byte{fr[:cut], fr[cut:]} {
				if len(p) == 0 {
					continue
				}
				if _, err := w.Write(p); err != nil {
					if closed && errors.Is(err, net.ErrClosed) {
						break
					}
					t.Fatal(err)
				}
			}
			if !closed {
				want = append(want, fr...)
			}
			if op == opClose {
				closed = true
			}
		}
		var got []byte
		for _, p := range rc.writes {
			for rest := p; len(rest) > 0; {
				n := frameSize(rest)
				if n == 0 {
					t.Fatalf("a write ends inside a frame: % x", rest)
				}
				rest = rest[n:]
			}
			got = append(got, p...)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("connection got %d bytes, want %d", len(got), len(want))
		}
	})
}
