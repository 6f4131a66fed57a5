package engineio

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Pools of compressors for polling responses: a gzip or zlib writer holds
// hundreds of kilobytes of state, so each is reused rather than made per
// response.
var (
	gzipPool = sync.Pool{New: func() any {
		w, err := gzip.NewWriterLevel(io.Discard, gzip.DefaultCompression)
		if err != nil {
			panic(err) // DefaultCompression is a valid level
		}
		return w
	}}
	zlibPool = sync.Pool{New: func() any {
		w, err := zlib.NewWriterLevel(io.Discard, flate.DefaultCompression)
		if err != nil {
			panic(err) // DefaultCompression is a valid level
		}
		return w
	}}
	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
)

// compressor is what gzip and zlib writers have in common.
type compressor interface {
	io.WriteCloser
	Reset(io.Writer)
}

// writePayload answers a poll with frames, compressed with gzip or deflate
// when the client accepts it, the payload reaches
// Options.HTTPCompressionThreshold and at least one of its messages may be
// compressed (Message.NoCompress), as the reference server's httpCompression.
func (s *Server) writePayload(w http.ResponseWriter, r *http.Request, sess *Session, frames []frame) {
	var b []byte
	h := w.Header()
	switch {
	case sess.v3 && !sess.b64 && hasBinary(frames):
		b = appendPayloadV3Binary(make([]byte, 0, payloadLen(frames)+8*len(frames)), frames)
		h.Set("Content-Type", "application/octet-stream")
	case sess.v3:
		b = appendPayloadV3(make([]byte, 0, payloadLen(frames)+8*len(frames)), frames)
		h.Set("Content-Type", "text/plain; charset=UTF-8")
	default:
		b = appendPayload(make([]byte, 0, payloadLen(frames)), frames)
		h.Set("Content-Type", "text/plain; charset=UTF-8")
	}
	if t := s.opts.HTTPCompressionThreshold; t > 0 && len(b) >= t && compressible(frames) {
		if enc := acceptedEncoding(r); enc != "" {
			buf := bufPool.Get().(*bytes.Buffer)
			defer func() {
				if buf.Cap() <= 1<<20 {
					buf.Reset()
					bufPool.Put(buf)
				}
			}()
			buf.Reset()
			if err := compressTo(buf, enc, b); err == nil {
				h.Set("Content-Encoding", enc)
				h.Set("Content-Length", strconv.Itoa(buf.Len()))
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write(buf.Bytes()) // the client may be gone; the session's ping timeout follows
				return
			}
			// Compression into memory does not fail; if it did, the plain
			// payload is still right.
		}
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b) // the client may be gone; the session's ping timeout follows
}

// compressible reports whether a message of frames may be compressed.
func compressible(frames []frame) bool {
	for i := range frames {
		if frames[i].typ == packetMessage && !frames[i].msg.NoCompress {
			return true
		}
	}
	return false
}

func compressTo(dst *bytes.Buffer, enc string, b []byte) error {
	pool := &gzipPool
	if enc == "deflate" {
		pool = &zlibPool
	}
	c := pool.Get().(compressor)
	defer pool.Put(c)
	c.Reset(dst)
	if _, err := c.Write(b); err != nil {
		return err
	}
	return c.Close()
}

// acceptedEncoding returns "gzip" or "deflate" when the request's
// Accept-Encoding allows it (gzip first), or "".
func acceptedEncoding(r *http.Request) string {
	if r == nil {
		return ""
	}
	var gz, df bool
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					continue
				}
			}
			switch strings.ToLower(strings.TrimSpace(name)) {
			case "gzip", "*":
				gz = true
			case "deflate":
				df = true
			}
		}
	}
	switch {
	case gz:
		return "gzip"
	case df:
		return "deflate"
	}
	return ""
}
