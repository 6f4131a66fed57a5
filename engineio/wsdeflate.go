package engineio

import (
	"bytes"
	"compress/flate"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// permessage-deflate (RFC 7692) without context takeover in either
// direction: every message is compressed and decompressed on its own, with a
// compressor or decompressor from a pool, so an idle connection keeps no
// compression state.

// deflateResponse is the extension the server agrees to.
const deflateResponse = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// acceptDeflate reports whether one of the client's offers of
// permessage-deflate can be taken as deflateResponse: the stdlib compressor
// always uses a window of 2^15 bytes, so an offer that asks for a smaller
// server window is declined, and so is an offer with unknown parameters.
func acceptDeflate(h http.Header) bool {
	for _, v := range h.Values("Sec-WebSocket-Extensions") {
		for offer := range strings.SplitSeq(v, ",") {
			params := strings.Split(offer, ";")
			if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
				continue
			}
			ok := true
			for _, p := range params[1:] {
				name, val, _ := strings.Cut(strings.TrimSpace(p), "=")
				val = strings.Trim(strings.TrimSpace(val), `"`)
				switch strings.ToLower(strings.TrimSpace(name)) {
				case "client_no_context_takeover", "server_no_context_takeover":
				case "client_max_window_bits":
					// The decompressor takes any window up to 2^15.
				case "server_max_window_bits":
					ok = ok && val == "15"
				default:
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

// deflateLevel trades compression for CPU as a server writing to many
// clients must.
const deflateLevel = flate.BestSpeed

var deflatePool = sync.Pool{New: func() any {
	w, err := flate.NewWriter(io.Discard, deflateLevel)
	if err != nil {
		panic(err) // deflateLevel is a valid level
	}
	return w
}}

// sliceWriter appends what is written to b.
type sliceWriter struct{ b []byte }

func (s *sliceWriter) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

var deflateBufPool = sync.Pool{New: func() any { return &sliceWriter{b: make([]byte, 0, 1024)} }}

// appendDeflated appends a compressed frame of prefix and data to b, with
// first as the frame's opcode and RSV bits: the deflate stream of the
// message, flushed, without its last four bytes 00 00 ff ff (RFC 7692
// section 7.2.1).
func appendDeflated(b []byte, first byte, prefix, data []byte) []byte {
	sw := deflateBufPool.Get().(*sliceWriter)
	fw := deflatePool.Get().(*flate.Writer)
	fw.Reset(sw)
	// Writes into memory do not fail.
	_, _ = fw.Write(prefix)
	_, _ = fw.Write(data)
	_ = fw.Flush()
	deflatePool.Put(fw)
	out := sw.b
	if len(out) >= 4 {
		out = out[:len(out)-4]
	}
	b = append(appendFrameHeader(b, first, len(out)), out...)
	if cap(sw.b) <= maxPooledFrame {
		sw.b = sw.b[:0]
		deflateBufPool.Put(sw)
	}
	return b
}

// maxPooledFrame keeps rare large buffers out of the pools.
const maxPooledFrame = 64 << 10

// deflateTail ends a message's deflate stream: the four bytes the sender
// removed, then an empty final block, so the decompressor ends with io.EOF.
var deflateTail = []byte{0x00, 0x00, 0xff, 0xff, 0x01, 0x00, 0x00, 0xff, 0xff}

var inflatePool sync.Pool

// inflateMessage decompresses a message of at most maxLen bytes, or fails
// with errWSTooBig.
func inflateMessage(in []byte, maxLen uint64) ([]byte, error) {
	src := io.MultiReader(bytes.NewReader(in), bytes.NewReader(deflateTail))
	fr, _ := inflatePool.Get().(io.ReadCloser)
	if fr == nil {
		fr = flate.NewReader(src)
	} else if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return nil, err
	}
	out := make([]byte, 0, min(uint64(2*len(in)+64), maxLen+1))
	for {
		if len(out) == cap(out) {
			if uint64(len(out)) > maxLen {
				inflatePool.Put(fr)
				return nil, errWSTooBig
			}
			out = slices.Grow(out, 1)
			if uint64(cap(out)) > maxLen+1 {
				out = out[:len(out):int(maxLen+1)]
			}
		}
		n, err := fr.Read(out[len(out):cap(out)])
		out = out[:len(out)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err // the decompressor is not reused after bad data
		}
	}
	inflatePool.Put(fr)
	if uint64(len(out)) > maxLen {
		return nil, errWSTooBig
	}
	return out, nil
}
