package engineio

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
	"unicode/utf8"
)

// firstBodyBuffer is the most a polling body read allocates before bytes
// arrive: the buffer then grows with what the client actually sent, never with
// what its Content-Length claims.
const firstBodyBuffer = 512

var errPayloadTooLarge = errors.New("engineio: payload too large")

// readPost reads the body of a polling POST. On failure it answers the
// request, closes the session, counts the refusal and returns false.
//
// The body is read incrementally under a deadline (Options.PollingBodyTimeout)
// and within Options.MaxPayload: a client that announces a large body and
// sends it slowly, or never, holds only the bytes it sent, and only until the
// deadline. A body that is not valid UTF-8 is refused: polling payloads are
// text (binary travels as base64), and invalid text must never reach other
// clients.
func (s *Session) readPost(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	limit := s.srv.opts.MaxPayload
	if r.ContentLength > limit {
		s.refusePost(w, r, RefusedPayloadTooLarge, ReasonPayloadTooLarge, http.StatusRequestEntityTooLarge, "content_length", r.ContentLength)
		return nil, false
	}
	if d := s.srv.opts.PollingBodyTimeout; d > 0 {
		// The deadline replaces the connection's: never give the body more
		// time than the http.Server's ReadTimeout gives the whole request.
		if hs, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && hs.ReadTimeout > 0 {
			d = min(d, hs.ReadTimeout)
		}
		rc := http.NewResponseController(w)
		// Not every ResponseWriter supports deadlines (a wrapper without
		// Unwrap): the byte limit still holds, only the time is unbounded.
		if err := rc.SetReadDeadline(time.Now().Add(d)); err == nil {
			// The body is read: the rest of the request is the handler's.
			defer func() { _ = rc.SetReadDeadline(time.Time{}) }() // fails only on a closed connection
		} else {
			s.srv.log.Debug("engineio: no read deadline for a polling body", "sid", s.id, "err", err)
		}
	}
	body, err := readLimited(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	switch {
	case err == nil:
	case errors.Is(err, errPayloadTooLarge):
		s.refusePost(w, r, RefusedPayloadTooLarge, ReasonPayloadTooLarge, http.StatusRequestEntityTooLarge, "limit", limit)
		return nil, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.refusePost(w, r, RefusedBodyTimeout, ReasonTransportError, http.StatusRequestTimeout,
			"received_bytes", len(body), "timeout", s.srv.opts.PollingBodyTimeout)
		return nil, false
	default:
		// The client went away mid-body.
		s.srv.log.Debug("engineio: reading polling body", "sid", s.id, "err", err)
		s.closeNow(ReasonTransportError, closeTransport)
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return nil, false
	}
	// A binary payload (application/octet-stream, protocol v3 only) is not
	// text as a whole: the decoder of such payloads must check the text
	// packets in it.
	if r.Header.Get("Content-Type") != "application/octet-stream" && !utf8.Valid(body) {
		s.refusePost(w, r, RefusedInvalidUTF8, ReasonParseError, http.StatusBadRequest)
		return nil, false
	}
	return body, true
}

// refusePost counts and logs a refused POST, closes the session with reason
// and answers with status.
func (s *Session) refusePost(w http.ResponseWriter, r *http.Request, refusal, reason string, status int, detail ...any) {
	s.srv.noteRefusal(refusal, r, s.id, detail...)
	s.closeNow(reason, closeTransport)
	switch status {
	case http.StatusBadRequest:
		writeError(w, status, codeBadRequest, "")
	default:
		http.Error(w, http.StatusText(status), status)
	}
}

// readLimited reads r to the end into a buffer that grows with the bytes
// read: hint (a Content-Length) only sizes the first buffer, up to
// firstBodyBuffer. Whatever was read comes back with an error too. A
// *http.MaxBytesError becomes errPayloadTooLarge.
func readLimited(r io.Reader, hint int64) ([]byte, error) {
	size := firstBodyBuffer
	if hint > 0 && hint < firstBodyBuffer {
		size = int(hint) + 1 // room to see the end without growing
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grows by the runtime's policy: at most about twice what was read
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				return b, errPayloadTooLarge
			}
			return b, err
		}
	}
}
