package socketio

import "github.com/durasock/durasock/parser"

// The CONNECT answer and the connection handlers.
//
// The reference server answers CONNECT and runs the connection handlers in
// one tick of its event loop: nothing else runs in between, so a room joined
// in a handler holds for every broadcast the server makes after the client
// could have heard CONNECT. Here handlers run on the connection's runner while
// broadcasts run on any goroutine. To give the same guarantee, a socket is
// connected (in its rooms, reachable by broadcasts and emits) before its
// handlers run, but its CONNECT answer and whatever is written to it meanwhile
// are held, in order, and written when the handlers return. A handler that
// waits for its client cannot wait for that: the hold ends as soon as an
// acknowledgement of the client is expected (EmitWithAck to the socket or to a
// room it is in), when the socket disconnects, and when the held packets reach
// the send queue's size.

// connectHold is what a socket holds: the CONNECT answer first. A pointer in
// Socket, which most of its life holds nothing.
type connectHold struct{ packets []held }

// held is one write kept behind the CONNECT answer.
type held struct {
	e                    *parser.Encoded
	volatile, noCompress bool
}

// holdLocked connects s with its CONNECT answer and the packets that follow it
// (the events a recovered session missed) held until release. s.mu is held.
func (s *Socket) holdLocked(connect *parser.Encoded, missed []*parser.Encoded) {
	h := &connectHold{packets: make([]held, 1, 1+len(missed))}
	h.packets[0] = held{e: connect}
	for _, e := range missed {
		h.packets = append(h.packets, held{e: e})
	}
	s.hold = h
	s.holding.Store(true)
	s.connected.Store(true)
}

// connWrite writes e to the client, or keeps it behind the CONNECT answer while
// that is held.
func (s *Socket) connWrite(e *parser.Encoded, volatile, noCompress bool) {
	if s.holding.Load() {
		s.mu.Lock()
		kept := s.keepLocked(e, volatile, noCompress)
		s.mu.Unlock()
		if kept {
			return
		}
	}
	s.conn.write(e, volatile, noCompress)
}

// connWriteLocked is connWrite with s.mu held.
func (s *Socket) connWriteLocked(e *parser.Encoded, volatile, noCompress bool) {
	if !s.keepLocked(e, volatile, noCompress) {
		s.conn.write(e, volatile, noCompress)
	}
}

// keepLocked adds e to the held packets and reports true, or reports false when
// nothing is held. Held packets never exceed the send queue: at its size they
// are released, and e is the caller's to write. s.mu is held.
func (s *Socket) keepLocked(e *parser.Encoded, volatile, noCompress bool) bool {
	if s.hold == nil {
		return false
	}
	if len(s.hold.packets) >= s.nsp.srv.sendQueueSize() {
		s.releaseLocked()
		return false
	}
	s.hold.packets = append(s.hold.packets, held{e: e, volatile: volatile, noCompress: noCompress})
	return true
}

// release writes the CONNECT answer and the packets held behind it, once.
func (s *Socket) release() {
	if !s.holding.Load() {
		return
	}
	s.mu.Lock()
	s.releaseLocked()
	s.mu.Unlock()
}

// releaseLocked is release with s.mu held. Writes that found the hold wait for
// s.mu, so they follow the held packets on the wire.
func (s *Socket) releaseLocked() {
	if s.hold == nil {
		return
	}
	for _, w := range s.hold.packets {
		s.conn.write(w.e, w.volatile, w.noCompress)
	}
	s.hold = nil
	s.holding.Store(false)
}

// dropHoldLocked forgets the held packets of a socket whose client will not
// hear them. s.mu is held.
func (s *Socket) dropHoldLocked() {
	s.hold = nil
	s.holding.Store(false)
}
