package engineio

import (
	"bytes"
	"context"
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

// TestBatchWriter writes small and large pieces inside and outside batches
// and checks that the bytes arrive complete and in order, and that no buffer
// is held after a batch.
func TestBatchWriter(t *testing.T) {
	client, server := tcpPair(t)
	w := &batchWriter{conn: server}
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
	w := &batchWriter{conn: server}
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
