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

// TestBatchWriterError checks that a write to a closed connection fails and
// gives the batch buffer back.
func TestBatchWriterError(t *testing.T) {
	_, server := tcpPair(t)
	w := &batchWriter{conn: server}
	if err := server.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.writeFrames([]frame{{typ: packetMessage, msg: Message{Data: []byte("x")}}}, false, 0); err == nil {
		t.Error("writeFrames on a closed connection succeeded")
	}
	if w.buf != nil {
		t.Error("buffer kept after a failed write")
	}
	if err := w.writeControl(opPong, nil); err == nil {
		t.Error("writeControl on a closed connection succeeded")
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

// TestBatchWriterFrames writes messages with writeFrames, some compressed,
// and control frames between them on a real TCP connection, and reads them
// back with a strict frame reader: every message arrives whole, in order, with
// its type; after the close frame nothing more is written.
func TestBatchWriterFrames(t *testing.T) {
	client, server := tcpPair(t)
	w := &batchWriter{conn: server}
	sizes := []int{0, 1, 124, 125, 126, 65535, 65536, directWriteSize - 1, directWriteSize, maxBatchBytes + 7, 3}
	var fs []frame
	for i, n := range sizes {
		fs = append(fs, frame{typ: packetMessage, msg: Message{Data: bytes.Repeat([]byte{byte('a' + i)}, n), Binary: i%3 == 1, NoCompress: i%4 == 3}})
	}

	// A strict reader of server frames on the other end.
	got := make(chan wsMsg, 64)
	done := make(chan error, 1)
	go func() {
		done <- readFrames(client, got)
	}()

	if err := w.writeFrames(fs[:3], false, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.writeControl(opPong, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	// The rest compressed from 100 bytes on, but those with NoCompress.
	if err := w.writeFrames(fs[3:], false, 100); err != nil {
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
		wantCompressed := i >= 3 && !f.msg.NoCompress && len(want) >= 100
		if (m.typ == websocket.MessageBinary) != f.msg.Binary || !bytes.Equal(m.b, want) || m.compressed != wantCompressed {
			t.Fatalf("message %d: type %v, %d bytes, compressed %v; want binary %v, %d bytes, compressed %v",
				i, m.typ, len(m.b), m.compressed, f.msg.Binary, len(want), wantCompressed)
		}
	}

	// A close frame (status 1000), then nothing may follow.
	if err := w.writeClose(closeNormal, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.writeFrames(fs[:1], false, 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writeFrames after the close frame = %v, want net.ErrClosed", err)
	}
	if err := w.writeControl(opPong, nil); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("writeControl after the close frame = %v, want net.ErrClosed", err)
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
	typ        websocket.MessageType
	b          []byte
	compressed bool
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
		compressed := h[0]&rsv1Bit != 0
		if h[0]&0xb0 != finBit || h[1]&0x80 != 0 || (compressed && h[0]&0x0f > opBinary) {
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
		if compressed {
			var err error
			if b, err = inflateMessage(b, 1<<30); err != nil {
				return err
			}
		}
		switch op := h[0] & 0x0f; op {
		case opText:
			got <- wsMsg{websocket.MessageText, b, compressed}
		case opBinary:
			got <- wsMsg{websocket.MessageBinary, b, compressed}
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
