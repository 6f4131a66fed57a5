package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serverFrame is an unmasked server frame.
func serverFrame(fin bool, op byte, p []byte) []byte {
	b := []byte{op}
	if fin {
		b[0] |= 0x80
	}
	switch n := len(p); {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, p...)
}

// readClientFrame reads one masked client frame and returns its opcode and
// unmasked payload.
func readClientFrame(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := ioReadFull(r, h[:]); err != nil {
		t.Fatalf("read frame: %v", err)
	}
	if h[1]&0x80 == 0 {
		t.Fatal("client frame not masked")
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var ext [2]byte
		if _, err := ioReadFull(r, ext[:]); err != nil {
			t.Fatal(err)
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	}
	var mask [4]byte
	if _, err := ioReadFull(r, mask[:]); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, n)
	if _, err := ioReadFull(r, p); err != nil {
		t.Fatal(err)
	}
	for i := range p {
		p[i] ^= mask[i&3]
	}
	return h[0] & 0x0f, p
}

func ioReadFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestWSClient drives the load generator's client with a scripted server:
// a fragmented open packet with a ping frame inside, the namespace CONNECT with
// auth, an Engine.IO ping, events split across writes and one larger than the
// read buffer, then the server's close.
func TestWSClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	big := `["ev",[7,1,5,"` + strings.Repeat("x", 100<<10) + `"]]`
	serverErr := make(chan error, 1)
	go func() {
		serverErr <- func() error {
			conn, err := ln.Accept()
			if err != nil {
				return err
			}
			defer conn.Close()
			r := bufio.NewReader(conn)
			req, err := http.ReadRequest(r)
			if err != nil {
				return err
			}
			if req.URL.Query().Get("EIO") != "4" || req.Header.Get("Sec-WebSocket-Key") == "" {
				t.Errorf("handshake request %s %v", req.URL, req.Header)
			}
			var out bytes.Buffer
			out.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
			out.Write(serverFrame(false, 0x1, []byte(`0{"sid":"a",`)))
			out.Write(serverFrame(true, 0x9, []byte("hi")))
			out.Write(serverFrame(true, 0x0, []byte(`"pingInterval":25000}`)))
			if _, err := conn.Write(out.Bytes()); err != nil {
				return err
			}
			if op, p := readClientFrame(t, r); op != 0xA || string(p) != "hi" {
				t.Errorf("want pong frame \"hi\", got op %d %q", op, p)
			}
			if op, p := readClientFrame(t, r); op != 0x1 || string(p) != `40{"room":"r1"}` {
				t.Errorf("want CONNECT with auth, got op %d %q", op, p)
			}
			out.Reset()
			out.Write(serverFrame(true, 0x1, []byte(`40{"sid":"b"}`)))
			out.Write(serverFrame(true, 0x1, []byte(`2`)))
			out.Write(serverFrame(true, 0x1, []byte(`42["ev",[7,0,5]]`)))
			ev := serverFrame(true, 0x1, []byte(`42`+big))
			out.Write(ev[:10])
			if _, err := conn.Write(out.Bytes()); err != nil {
				return err
			}
			if _, err := conn.Write(ev[10:]); err != nil {
				return err
			}
			// The pong and the client's emit, in either order.
			seen := map[string]bool{}
			for range 2 {
				op, p := readClientFrame(t, r)
				if op != 0x1 {
					t.Errorf("want text frames, got op %d %q", op, p)
				}
				seen[string(p)] = true
			}
			if !seen["3"] || !seen[`42["pubto","r3",[1,2,3]]`] {
				t.Errorf("want an Engine.IO pong and the emit, got %v", seen)
			}
			_, err = conn.Write(serverFrame(true, 0x8, nil))
			return err
		}()
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	c, err := dialWS(ctx, "http://"+ln.Addr().String()+"/socket.io/", []byte(`{"room":"r1"}`), time.Now(),
		func(data []byte, _ int64) { got = append(got, string(data)) })
	if err != nil {
		t.Fatal(err)
	}
	p := &relayPublisher{c: c, event: PublishToEvent, rooms: 4}
	if _, err := p.publish(ctx, 3, []byte("[1,2,3]")); err != nil {
		t.Fatal(err)
	}
	if err := p.flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the client did not stop at the server's close")
	}
	if err := <-serverErr; err != nil {
		t.Fatal(err)
	}
	c.Close()
	if len(got) != 2 || got[0] != `["ev",[7,0,5]]` || got[1] != big {
		t.Fatalf("events: %d, first %.40q", len(got), got)
	}
	if c.Err() == nil {
		t.Error("Err is nil after the server closed")
	}
}

// discardConn is a net.Conn whose writes go nowhere (only Write is used).
type discardConn struct{ net.Conn }

func (discardConn) Write(p []byte) (int, error) { return len(p), nil }

// FuzzWSFrames feeds arbitrary server bytes through the client's frame
// parsing and Engine.IO handling, and their events through the receiver.
func FuzzWSFrames(f *testing.F) {
	f.Add(serverFrame(true, 0x1, []byte(`42["ev",[1,2,3]]`)))
	f.Add(append(serverFrame(false, 0x1, []byte(`42["ev",[1,`)), serverFrame(true, 0x0, []byte(`2,3,"xx"]]`))...))
	f.Add(serverFrame(true, 0x9, []byte("p")))
	f.Add(serverFrame(true, 0x1, []byte("2")))
	f.Add([]byte{0x81, 127, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e'})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newReceiver(0, time.Now(), false)
		c := &wsClient{conn: discardConn{}, onEvent: r.OnData}
		var frag []byte
		for off := 0; off < len(b); {
			fin, op, payload, size, ok := parseFrame(b[off:])
			if !ok {
				if size != 0 && size <= len(b)-off {
					t.Fatalf("incomplete frame of size %d with %d bytes left", size, len(b)-off)
				}
				return
			}
			if size <= 0 || size > len(b)-off {
				t.Fatalf("frame size %d with %d bytes left", size, len(b)-off)
			}
			off += size
			if c.handleFrame(fin, op, payload, &frag, 0) != nil {
				return
			}
		}
	})
}
