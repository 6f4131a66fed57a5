package engineio

import (
	"io"
	"net/http"
	"time"
)

// upgradeSettle is how long a poll during an upgrade waits for the upgrade
// packet before it ends with a noop: the reference server checks every 100 ms.
const upgradeSettle = 100 * time.Millisecond

// handshakePolling opens a polling session and answers with the open packet.
func (s *Server) handshakePolling(w http.ResponseWriter, r *http.Request) {
	sess := s.newSession(r, nil)
	if !s.register(sess) {
		s.hb.unschedule(sess)
		http.Error(w, "engineio: server shutting down", http.StatusServiceUnavailable)
		return
	}
	openFrame := sess.queue[0]
	s.setHeaders(w, r, sess.id, true)
	sess.open()
	sess.mu.Lock()
	frames := sess.takeQueueLocked()
	if sess.state != stateOpen {
		// Closed during OnOpen: the client still learns its sid, then the close.
		frames = []frame{openFrame, {typ: packetClose}}
	}
	sess.mu.Unlock()
	s.writePayload(w, r, sess, frames)
}

// servePolling serves a request of an existing polling session.
func (s *Session) servePolling(w http.ResponseWriter, r *http.Request) {
	s.srv.setHeaders(w, r, s.id, false)
	switch r.Method {
	case http.MethodGet:
		s.servePoll(w, r)
	case http.MethodPost:
		s.serveData(w, r)
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
	}
}

// servePoll answers a GET with the queued packets, waiting for some if there are
// none. A second concurrent GET, or a GET the client abandons, closes the session.
func (s *Session) servePoll(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	switch {
	case s.ws != nil:
		// Upgraded: polling is over, the session is untouched.
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	case s.state == stateClosed && s.lingering:
		s.lingering = false
		s.mu.Unlock()
		s.srv.forgetLingering(s)
		s.srv.writePayload(w, r, s, []frame{{typ: packetNoop}})
		return
	case s.state == stateClosed:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeUnknownSID, "")
		return
	case s.pollCh != nil:
		s.mu.Unlock()
		s.srv.log.Debug("engineio: overlapping poll", "sid", s.id)
		s.closeNow(ReasonTransportError, closeTransport)
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	case s.state == stateClosing:
		frames := append(s.takeQueueLocked(), frame{typ: packetClose})
		s.mu.Unlock()
		s.srv.writePayload(w, r, s, frames)
		s.closeNow("", closeDone)
		return
	case len(s.queue) > 0:
		frames := s.takeQueueLocked()
		s.mu.Unlock()
		s.srv.writePayload(w, r, s, frames)
		return
	}
	// During an upgrade whose probe is answered, the request ends with a noop
	// after upgradeSettle, as the reference server's upgrade check does, so that
	// the client can finish the upgrade; if the upgrade packet comes first, it is
	// refused as any poll after the upgrade. Without the wait, a request racing
	// with the upgrade packet would get either answer.
	var settle <-chan time.Time
	if s.probed {
		t := time.NewTimer(s.srv.upgradeSettle)
		defer t.Stop()
		settle = t.C
	}
	ch := make(chan []frame, 1)
	s.pollCh = ch
	waiting := &s.srv.stats.pollsWaiting
	waiting.Add(1)
	s.mu.Unlock()

	select {
	case frames := <-ch:
		waiting.Add(-1)
		if frames == nil { // upgraded meanwhile
			writeError(w, http.StatusBadRequest, codeBadRequest, "")
			return
		}
		s.srv.writePayload(w, r, s, frames)
	case <-settle:
		waiting.Add(-1)
		s.mu.Lock()
		if s.pollCh == ch {
			s.pollCh = nil
			s.mu.Unlock()
			s.srv.writePayload(w, r, s, []frame{{typ: packetNoop}})
			return
		}
		s.mu.Unlock()
		// Answered meanwhile: ch holds the answer.
		if frames := <-ch; frames != nil {
			s.srv.writePayload(w, r, s, frames)
		} else {
			writeError(w, http.StatusBadRequest, codeBadRequest, "")
		}
	case <-r.Context().Done():
		waiting.Add(-1)
		s.mu.Lock()
		if s.pollCh == ch {
			s.pollCh = nil
		}
		s.mu.Unlock()
		s.srv.log.Debug("engineio: poll cancelled by client", "sid", s.id)
		s.closeNow(ReasonTransportError, closeTransport)
	}
}

// serveData reads the packets of a POST.
func (s *Session) serveData(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	switch {
	case s.ws != nil:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	case s.state == stateClosed:
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, codeUnknownSID, "")
		return
	case s.posting:
		s.mu.Unlock()
		s.srv.log.Debug("engineio: overlapping post", "sid", s.id)
		s.closeNow(ReasonTransportError, closeTransport)
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	}
	s.posting = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.posting = false
		s.mu.Unlock()
	}()

	binary := r.Header.Get("Content-Type") == "application/octet-stream"
	if binary && !s.v3 {
		// Protocol v4 sends binary as base64 inside a text payload.
		s.closeNow(ReasonTransportError, closeTransport)
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	}
	body, ok := s.readPost(w, r)
	if !ok {
		return
	}
	var pkts []packet
	var err error
	if s.v3 {
		pkts, err = decodePayloadV3(body, binary)
	} else {
		pkts, err = decodePayload(body)
	}
	if err != nil {
		s.srv.noteRefusal(RefusedBadPacket, r, s.id, "err", err)
		s.closeNow(ReasonParseError, closeTransport)
		writeError(w, http.StatusBadRequest, codeBadRequest, "")
		return
	}
	for _, p := range pkts {
		if !s.handlePacket(p) {
			break
		}
	}
	h := w.Header()
	// text/html, not text/plain, as the reference server: some user agents offer
	// to download text/plain answers.
	h.Set("Content-Type", "text/html")
	h.Set("Content-Length", "2")
	_, _ = io.WriteString(w, "ok") // the client may be gone; nothing else to tell it
}
