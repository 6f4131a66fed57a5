package engineio

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

// TestPooledReader reads a stream through pooledReader with reads of many
// sizes and checks the bytes, the end of the stream, and that no buffer is
// held once everything read from the connection is returned.
func TestPooledReader(t *testing.T) {
	client, server := tcpPair(t)
	want := make([]byte, 3*readBufferSize+123)
	for i := range want {
		want[i] = byte(i * 7)
	}
	go func() {
		// Small and large writes, so that reads find partial and full buffers.
		for i, rest := 0, want; len(rest) > 0; i++ {
			n := min(len(rest), []int{1, 10, 700, readBufferSize + 5}[i%4])
			if _, err := client.Write(rest[:n]); err != nil {
				t.Error(err)
				return
			}
			rest = rest[n:]
		}
		_ = client.Close() // the end of the stream is what the reader must see
	}()
	if err := server.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	pr := &pooledReader{conn: server}
	pr.fill([]byte("tail"))
	if pr.buffered() != 4 {
		t.Fatalf("buffered = %d after fill", pr.buffered())
	}
	var got bytes.Buffer
	sizes := []int{1, 3, 16, 100, readBufferSize, 2 * readBufferSize, 7}
	for i := 0; ; i++ {
		p := make([]byte, sizes[i%len(sizes)])
		n, err := pr.Read(p)
		got.Write(p[:n])
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if pr.buffered() == 0 && pr.buf != nil {
			t.Fatal("drained buffer kept")
		}
	}
	if !bytes.Equal(got.Bytes(), append([]byte("tail"), want...)) {
		t.Fatalf("read %d bytes, want %d", got.Len(), len(want)+4)
	}
	if pr.buf != nil {
		t.Error("buffer kept at the end")
	}
}
