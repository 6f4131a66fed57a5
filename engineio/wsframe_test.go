package engineio

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scriptConn is a net.Conn whose reads return script in pieces of at most
// chunk bytes, then io.EOF, and whose writes are recorded.
type scriptConn struct {
	net.Conn
	r     *bytes.Reader
	chunk int
	out   bytes.Buffer
}

func (c *scriptConn) Read(p []byte) (int, error) {
	if c.r.Len() == 0 {
		return 0, io.EOF
	}
	return c.r.Read(p[:min(len(p), c.chunk)])
}

func (c *scriptConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// newScriptConn returns a wsConn reading script, as a client sends it.
func newScriptConn(srv *Server, script []byte, chunk int, deflate bool) (*wsConn, *scriptConn) {
	sc := &scriptConn{r: bytes.NewReader(script), chunk: max(1, chunk)}
	c := &wsConn{srv: srv}
	c.src.conn = sc
	c.w.conn = sc
	if deflate {
		c.deflateFrom = 1
	}
	return c, sc
}

// clientFrame returns a masked frame as a client sends it; first is the
// first header byte (FIN, RSV bits, opcode).
func maskedFrame(first byte, payload []byte, key [4]byte) []byte {
	b := []byte{first}
	switch n := len(payload); {
	case n <= 125:
		b = append(b, maskBit|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, maskBit|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, maskBit|127), uint64(n))
	}
	b = append(b, key[:]...)
	start := len(b)
	b = append(b, payload...)
	for i := range payload {
		b[start+i] ^= key[i&3]
	}
	return b
}

// deflated compresses p as permessage-deflate sends it.
func deflated(t testing.TB, p []byte) []byte {
	var buf bytes.Buffer
	fw, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := fw.Flush(); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// serverFrames splits what the server wrote into frames, checking that each
// is a final, unmasked frame.
func serverFrames(t testing.TB, b []byte) (ops []byte, payloads [][]byte) {
	t.Helper()
	for len(b) > 0 {
		if len(b) < 2 || b[0]&finBit == 0 || b[1]&maskBit != 0 {
			t.Fatalf("bad server frame % x", b)
		}
		h, n := 2, int(b[1]&0x7f)
		switch n {
		case 126:
			h, n = 4, int(binary.BigEndian.Uint16(b[2:]))
		case 127:
			h, n = 10, int(binary.BigEndian.Uint64(b[2:]))
		}
		if len(b) < h+n {
			t.Fatalf("server frame cut: % x", b)
		}
		ops = append(ops, b[0]&0x0f)
		payloads = append(payloads, b[h:h+n])
		b = b[h+n:]
	}
	return ops, payloads
}

var testKey = [4]byte{0x12, 0x34, 0x56, 0x78}

// TestReadMessage feeds client frames to the reader, in pieces of every size
// from 1 byte, and checks the messages and the server's answers.
func TestReadMessage(t *testing.T) {
	srv := NewServer(nopHandler{}, &Options{MaxPayload: 100})
	big := bytes.Repeat([]byte("z"), 90)
	close1000 := binary.BigEndian.AppendUint16(nil, 1000)
	tests := []struct {
		name    string
		script  [][]byte
		deflate bool
		msgs    []string // "t:" or "b:" and the payload
		err     error    // after the messages
		answers []string // opcodes and payloads written, "op:payload"
	}{
		{
			name:   "text and binary",
			script: [][]byte{maskedFrame(0x81, []byte("4hello"), testKey), maskedFrame(0x82, []byte{1, 2, 3}, testKey)},
			msgs:   []string{"t:4hello", "b:\x01\x02\x03"},
			err:    io.EOF,
		},
		{
			name: "fragments with a ping between",
			script: [][]byte{maskedFrame(0x01, []byte("4he"), testKey), maskedFrame(0x89, []byte("hi"), testKey),
				maskedFrame(0x00, []byte("ll"), [4]byte{9, 8, 7, 6}), maskedFrame(0x80, []byte("o"), testKey)},
			msgs:    []string{"t:4hello"},
			err:     io.EOF,
			answers: []string{"10:hi"},
		},
		{
			name:   "empty message",
			script: [][]byte{maskedFrame(0x81, nil, testKey)},
			msgs:   []string{"t:"},
			err:    io.EOF,
		},
		{
			name:    "compressed",
			deflate: true,
			script:  [][]byte{maskedFrame(0xc1, deflated(t, []byte("4"+strings.Repeat("ab", 40))), testKey)},
			msgs:    []string{"t:4" + strings.Repeat("ab", 40)},
			err:     io.EOF,
		},
		{
			name:    "compressed beyond MaxPayload",
			deflate: true,
			script:  [][]byte{maskedFrame(0xc2, deflated(t, bytes.Repeat([]byte{0}, 101)), testKey)},
			err:     errWSTooBig,
			answers: []string{"8:\x03\xf1message too big"},
		},
		{
			name:    "too big, then the close handshake",
			script:  [][]byte{maskedFrame(0x01, big, testKey), maskedFrame(0x80, big, testKey), maskedFrame(0x88, close1000, testKey)},
			err:     errWSTooBig,
			answers: []string{"8:\x03\xf1message too big"},
		},
		{
			name: "too big in a first fragment, the rest skipped",
			script: [][]byte{maskedFrame(0x02, bytes.Repeat([]byte("y"), 101), testKey), maskedFrame(0x00, big, testKey),
				maskedFrame(0x89, []byte("p"), testKey), maskedFrame(0x80, big, testKey), maskedFrame(0x88, close1000, testKey)},
			err:     errWSTooBig,
			answers: []string{"8:\x03\xf1message too big"},
		},
		{
			name:    "close echoed",
			script:  [][]byte{maskedFrame(0x88, append(close1000, "bye"...), testKey), maskedFrame(0x81, []byte("4late"), testKey)},
			err:     errWSClosed,
			answers: []string{"8:\x03\xe8"},
		},
		{
			name:    "close without status",
			script:  [][]byte{maskedFrame(0x88, nil, testKey)},
			err:     errWSClosed,
			answers: []string{"8:"},
		},
		{
			name:    "unmasked",
			script:  [][]byte{{0x81, 0x01, '4'}},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeaunmasked client frame"},
		},
		{
			name:    "reserved close status",
			script:  [][]byte{maskedFrame(0x88, []byte{0x03, 0xed}, testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeainvalid close status"},
		},
		{
			name:    "close reason not UTF-8",
			script:  [][]byte{maskedFrame(0x88, append(close1000, 0xff), testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xefclose reason not UTF-8"},
		},
		{
			name:    "compression not negotiated",
			script:  [][]byte{maskedFrame(0xc1, []byte("x"), testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeaunexpected compression bit"},
		},
		{
			name:    "continuation without a message",
			script:  [][]byte{maskedFrame(0x80, []byte("x"), testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeacontinuation without a message"},
		},
		{
			name:    "fragmented ping",
			script:  [][]byte{maskedFrame(0x09, []byte("x"), testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeafragmented control frame"},
		},
		{
			name:    "unknown opcode",
			script:  [][]byte{maskedFrame(0x83, nil, testKey)},
			err:     &wsProtocolError{},
			answers: []string{"8:\x03\xeaunknown opcode"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			script := bytes.Join(tt.script, nil)
			for chunk := 1; chunk <= len(script); chunk++ {
				c, sc := newScriptConn(srv, script, chunk, tt.deflate)
				var got []string
				var err error
				for {
					var op byte
					var data []byte
					op, data, err = c.readMessage()
					if err != nil {
						break
					}
					got = append(got, map[byte]string{opText: "t:", opBinary: "b:"}[op]+string(data))
				}
				if strings.Join(got, "|") != strings.Join(tt.msgs, "|") {
					t.Fatalf("chunk %d: messages %q, want %q", chunk, got, tt.msgs)
				}
				var perr *wsProtocolError
				if _, ok := tt.err.(*wsProtocolError); ok && !errors.As(err, &perr) || !ok && !errors.Is(err, tt.err) {
					t.Fatalf("chunk %d: error %v, want %v", chunk, err, tt.err)
				}
				if errors.Is(err, errWSTooBig) {
					// The reader goes on to the peer's close frame.
					for errors.Is(err, errWSTooBig) {
						_, _, err = c.readMessage()
					}
					if !errors.Is(err, errWSClosed) && !errors.Is(err, io.EOF) {
						t.Fatalf("chunk %d: after the refusal: %v", chunk, err)
					}
				}
				ops, payloads := serverFrames(t, sc.out.Bytes())
				var answers []string
				for i, op := range ops {
					answers = append(answers, fmt.Sprintf("%d:%s", op, payloads[i]))
				}
				if strings.Join(answers, "|") != strings.Join(tt.answers, "|") {
					t.Fatalf("chunk %d: answers %q, want %q", chunk, answers, tt.answers)
				}
				if errors.Is(err, io.EOF) && c.src.buf != nil {
					t.Fatalf("chunk %d: read buffer kept after the end", chunk)
				}
			}
		})
	}
}

// FuzzWSReader reads arbitrary client bytes as WebSocket frames, with and
// without permessage-deflate, in pieces of any size: the reader must not
// panic, must return only text or binary messages within MaxPayload, must
// end (each call consumes input or fails), must answer with well-formed
// frames, and must write nothing after its close frame.
func FuzzWSReader(f *testing.F) {
	f.Add(maskedFrame(0x81, []byte("4hello"), testKey), byte(3))
	f.Add(append(maskedFrame(0x01, []byte("4he"), testKey), append(maskedFrame(0x89, []byte("p"), testKey), maskedFrame(0x80, []byte("llo"), testKey)...)...), byte(0x85))
	f.Add(maskedFrame(0xc1, deflated(f, []byte("4"+strings.Repeat("x", 300))), testKey), byte(0x80))
	f.Add(maskedFrame(0x88, []byte{0x03, 0xe8}, testKey), byte(1))
	f.Add(append(maskedFrame(0x82, bytes.Repeat([]byte{7}, 300), testKey), maskedFrame(0x88, nil, testKey)...), byte(2))
	f.Add([]byte{0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4}, byte(9))
	const maxPayload = 256
	srv := NewServer(nopHandler{}, &Options{MaxPayload: maxPayload})
	f.Fuzz(func(t *testing.T, script []byte, mode byte) {
		c, sc := newScriptConn(srv, script, int(mode&0x7f)+1, mode&0x80 != 0)
		for range len(script) + 2 {
			op, data, err := c.readMessage()
			if errors.Is(err, errWSTooBig) {
				continue
			}
			if err != nil {
				break
			}
			if op != opText && op != opBinary {
				t.Fatalf("message opcode %d", op)
			}
			if len(data) > maxPayload {
				t.Fatalf("message of %d bytes beyond MaxPayload", len(data))
			}
		}
		if sc.r.Len() > 0 {
			if _, _, err := c.readMessage(); err == nil || errors.Is(err, errWSTooBig) {
				// Every call consumes a frame or more: the loop above cannot
				// have ended with input left unless an error ended it.
				t.Fatalf("reader did not end: %d bytes left", sc.r.Len())
			}
		}
		ops, _ := serverFrames(t, sc.out.Bytes())
		for i, op := range ops {
			if op == opClose && i != len(ops)-1 {
				t.Fatalf("frames after the close frame: %v", ops)
			}
		}
	})
}

// rawWS opens a WebSocket to ts with a hand-written handshake and returns
// the connection and a reader past the 101 response.
func rawWS(t *testing.T, ts *testServer, extraHeaders string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	nc, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() }) // the test is over
	if err := nc.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req := "GET /engine.io/?EIO=4&transport=websocket HTTP/1.1\r\n" +
		"Host: " + ts.Listener.Addr().String() + "\r\n" +
		"Connection: Upgrade\r\nUpgrade: websocket\r\n" + extraHeaders + "\r\n"
	if _, err := nc.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	return nc, br, res
}

// TestWebSocketHandshake checks the handshake's answers: the accept key of
// RFC 6455's example, 426 for another version, 400 for a bad key.
func TestWebSocketHandshake(t *testing.T) {
	ts := newTestServer(t, nil)
	_, _, res := rawWS(t, ts, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Sec-WebSocket-Accept") != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("101 expected with the RFC's accept key, got %d %q", res.StatusCode, res.Header.Get("Sec-WebSocket-Accept"))
	}
	if res.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Errorf("extensions %q without PerMessageDeflate", res.Header.Get("Sec-WebSocket-Extensions"))
	}
	_, _, res = rawWS(t, ts, "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	if res.StatusCode != http.StatusUpgradeRequired || res.Header.Get("Sec-WebSocket-Version") != "13" {
		t.Errorf("version 8: %d, Sec-WebSocket-Version %q", res.StatusCode, res.Header.Get("Sec-WebSocket-Version"))
	}
	_, _, res = rawWS(t, ts, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n")
	if res.StatusCode != http.StatusBadRequest {
		t.Errorf("bad key: %d", res.StatusCode)
	}

	deflate := newTestServer(t, &Options{PerMessageDeflate: true})
	for offer, want := range map[string]string{
		"permessage-deflate; client_max_window_bits":                        deflateResponse,
		"permessage-deflate; server_max_window_bits=10, permessage-deflate": deflateResponse,
		"permessage-deflate; server_max_window_bits=10":                     "",
		"x-webkit-deflate-frame":                                            "",
	} {
		_, _, res := rawWS(t, deflate, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: "+offer+"\r\n")
		if got := res.Header.Get("Sec-WebSocket-Extensions"); res.StatusCode != http.StatusSwitchingProtocols || got != want {
			t.Errorf("offer %q: %d, extensions %q, want %q", offer, res.StatusCode, got, want)
		}
	}
}

// TestWebSocketProtocolError sends an unmasked frame on an open session: the
// client gets the close frame 1002, the session closes with ReasonParseError,
// and the refusal is counted.
func TestWebSocketProtocolError(t *testing.T) {
	ts := newTestServer(t, nil)
	nc, br, res := rawWS(t, ts, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", res.StatusCode)
	}
	open, err := readServerFrame(br)
	if err != nil {
		t.Fatal(err)
	}
	sid := parseOpen(t, open).SID
	if _, err := nc.Write([]byte{0x81, 0x02, '4', 'x'}); err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 4)
	if _, err := io.ReadFull(br, h); err != nil {
		t.Fatal(err)
	}
	if h[0] != finBit|opClose || binary.BigEndian.Uint16(h[2:]) != closeProtocolError {
		t.Fatalf("close frame % x, want status 1002", h)
	}
	ts.rec.waitFor(t, "close", func(r *recorder) bool { return r.closed[sid] == ReasonParseError })
	if got := ts.eio.Refused()[RefusedBadPacket]; got != 1 {
		t.Errorf("Refused()[bad packet] = %d, want 1", got)
	}
}

// TestCloseHandshakeUnanswered closes a session whose client never answers
// the close frame (and whose connection is parked meanwhile): the client gets
// the close frame, and the server cuts the connection after
// closeHandshakeTimeout, leaving no tracked connection behind.
func TestCloseHandshakeUnanswered(t *testing.T) {
	ts := newTestServer(t, nil)
	nc, br, res := rawWS(t, ts, "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")
	if res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d", res.StatusCode)
	}
	if err := nc.SetDeadline(time.Now().Add(closeHandshakeTimeout + 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := readServerFrame(br); err != nil { // the open packet
		t.Fatal(err)
	}
	ts.rec.waitFor(t, "open", func(r *recorder) bool { return len(r.opened) == 1 })
	ts.rec.mu.Lock()
	sess := ts.rec.opened[0]
	ts.rec.mu.Unlock()
	start := time.Now()
	if err := sess.Close(); err != nil {
		t.Fatal(err)
	}
	h := make([]byte, 4)
	if _, err := io.ReadFull(br, h); err != nil {
		t.Fatal(err)
	}
	if h[0] != finBit|opClose || binary.BigEndian.Uint16(h[2:]) != closeNormal {
		t.Fatalf("close frame % x, want status 1000", h)
	}
	if _, err := br.Discard(int(h[1]) - 2); err != nil { // the reason
		t.Fatal(err)
	}
	// Not answered: the next read sees the server's end of the connection.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(fmt.Sprint(err), "reset") {
		t.Fatalf("after the close frame: %v, want the connection's end", err)
	}
	if waited := time.Since(start); waited < closeHandshakeTimeout/2 {
		t.Errorf("cut after %v, before the close handshake's timeout", waited)
	}
	waitConns(t, ts.eio, 0, 0)
}
