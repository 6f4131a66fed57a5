package socketio

import (
	"crypto/rand"
	"encoding/json"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/parser"
)

// Defaults of RecoveryOptions.
const (
	DefaultMaxDisconnectionDuration = 2 * time.Minute
	DefaultRecoveryHistory          = 32
	DefaultMaxMissedPackets         = 1000
)

// RecoveryOptions enables connection state recovery: a client whose connection
// broke (transport close or error, ping timeout, forced close, server shutdown)
// and that comes back within MaxDisconnectionDuration gets its socket back: the
// same id, rooms and data, and every event it missed meanwhile, in order. Its
// CONNECT answer then carries the same "pid" and Socket.Recovered reports true.
// The official clients (socket.io-client 4.6+) do this by themselves.
//
// How it works: while the client is away its socket stays in its rooms on this
// server as a disconnected stand-in, so every event sent to it — a local or a
// cluster-wide broadcast alike, whatever the adapter — is kept for it. Each
// event without ack gets an offset (its last argument, as in the reference
// server) so that the events the client received just before the break are not
// sent twice. The stand-in keeps the rooms the socket had when its connection
// broke: Leave from OnDisconnect handlers does not change them.
//
// On any node: when the namespace's adapter keeps sessions where every node
// can restore them (adapter.SessionStore: the cluster adapter on the Redis
// streams transport), a client that comes back to another server process — its
// node drained, killed, or restarted — gets its session back there too, with
// every event sent to it meanwhile (to its rooms, to its id, to everyone), in
// order, once: the cluster keeps each session's state in Redis while it is
// connected and replays what the client missed from the stream history. Then
// Socket.Emit goes through the adapter (so that the stream has it), and the
// adapter writes the offsets. After a recovery on another node, Data returns
// the json.RawMessage of what SetData stored. A session that cannot be
// restored exactly (away longer than MaxDisconnectionDuration, more than
// MaxMissedPackets missed, history trimmed) gives the client a new one, and the
// server logs why. docs/RELIABILITY.md ("Clients of a node that goes away").
//
// While away, the socket is still listed by FetchSockets and counted by
// broadcasts with acks (as not replying). It is dropped, and leaves its rooms,
// when MaxDisconnectionDuration passes or more than MaxMissedPackets events
// wait for it.
type RecoveryOptions struct {
	// MaxDisconnectionDuration is how long a session waits for its client.
	// Default 2 minutes.
	MaxDisconnectionDuration time.Duration
	// RunMiddlewares runs the namespace's connect middleware again for a
	// client whose session is recovered. By default, as in the reference
	// server (skipMiddlewares: true), a recovered client is connected without
	// it: it passed the middleware when it first connected.
	RunMiddlewares bool
	// History is how many recent events a connected socket remembers, to resend
	// those a client had not received when its connection broke. Default 32.
	History int
	// MaxMissedPackets bounds the events kept for a disconnected client.
	// Default 1000. They are replayed at once into the session's send queue
	// (engineio Options.SendQueueSize, in messages: one per event plus one per
	// binary attachment); a client that missed more than that queue holds gets
	// a new session instead, so keep SendQueueSize above MaxMissedPackets.
	MaxMissedPackets int
}

func (r *RecoveryOptions) resolved() *RecoveryOptions {
	if r == nil {
		return nil
	}
	o := *r
	if o.MaxDisconnectionDuration <= 0 {
		o.MaxDisconnectionDuration = DefaultMaxDisconnectionDuration
	}
	if o.History <= 0 {
		o.History = DefaultRecoveryHistory
	}
	if o.MaxMissedPackets <= 0 {
		o.MaxMissedPackets = DefaultMaxMissedPackets
	}
	return &o
}

// offsets makes the offsets of events: unique across servers (a random prefix)
// and cheap (a counter).
type offsets struct {
	prefix string
	n      atomic.Uint64
}

func newOffsets() *offsets { return &offsets{prefix: rand.Text()[:10]} }

func (o *offsets) next() string {
	return o.prefix + "-" + strconv.FormatUint(o.n.Add(1), 36)
}

// withOffset appends an offset as the last argument of an EVENT packet built by
// parser.EventPacket (whose Data ends with ']').
func (s *Server) withOffset(p *parser.Packet) {
	if s.recovery == nil || len(p.Data) == 0 || p.Data[len(p.Data)-1] != ']' {
		return
	}
	off := s.offsets.next()
	d := make([]byte, 0, len(p.Data)+len(off)+3)
	d = append(d, p.Data[:len(p.Data)-1]...)
	d = append(d, ',', '"')
	d = append(d, off...)
	d = append(d, '"', ']')
	p.Data = d
}

// recoverable lists the disconnect reasons after which a client may come back.
func recoverable(reason string) bool {
	switch reason {
	case ReasonTransportError, ReasonTransportClose, ReasonForcedClose, ReasonPingTimeout,
		ReasonServerShutdown, "forced server close":
		return true
	}
	return false
}

// replayable reports whether an encoded packet is an event without ack id, the
// only packets kept for recovery.
func replayable(e *parser.Encoded) bool {
	t := e.Text
	if len(t) == 0 || (t[0] != '0'+byte(parser.Event) && t[0] != '0'+byte(parser.BinaryEvent)) {
		return false
	}
	i := 1
	if t[0] == '0'+byte(parser.BinaryEvent) {
		for i < len(t) && t[i] != '-' {
			i++
		}
		i++
	}
	if i < len(t) && t[i] == '/' {
		for i < len(t) && t[i] != ',' {
			i++
		}
		i++
	}
	return i < len(t) && (t[i] < '0' || t[i] > '9')
}

// hasOffset reports whether an encoded event ends with this offset argument.
func hasOffset(e *parser.Encoded, offset string) bool {
	t := e.Text
	n := len(offset) + 4 // ,"offset"]
	if len(t) < n {
		return false
	}
	tail := t[len(t)-n:]
	return tail[0] == ',' && tail[1] == '"' && string(tail[2:n-2]) == offset && tail[n-2] == '"' && tail[n-1] == ']'
}

// recordedWrite is Socket.Write when recovery is enabled: it remembers recent
// events, keeps them for a disconnected client, and forwards to the socket that
// took over a recovered session.
func (s *Socket) recordedWrite(e *parser.Encoded, volatile, noCompress bool) {
	rec := s.nsp.srv.recovery
	s.mu.Lock()
	if r := s.rs.successor; r != nil {
		s.mu.Unlock()
		r.write(e, volatile, noCompress)
		return
	}
	if s.away {
		if volatile || !replayable(e) {
			s.mu.Unlock()
			return
		}
		s.rs.history = append(s.rs.history, e)
		over := len(s.rs.history) > rec.History+rec.MaxMissedPackets
		s.mu.Unlock()
		if over {
			s.nsp.srv.log.Info("socketio: too many missed events, session dropped", "socket", s.id)
			s.expire()
		}
		return
	}
	if !s.connected.Load() {
		s.mu.Unlock()
		return
	}
	if !volatile && replayable(e) {
		if len(s.rs.history) >= rec.History {
			copy(s.rs.history, s.rs.history[1:])
			s.rs.history[len(s.rs.history)-1] = e
		} else {
			s.rs.history = append(s.rs.history, e)
		}
	}
	// Written under s.mu so that the history and the wire agree on the order.
	s.connWriteLocked(e, volatile, noCompress)
	s.mu.Unlock()
}

// goAway turns a socket whose connection broke into a stand-in that keeps what
// is sent to it. s.mu is held.
func (s *Socket) goAwayLocked() {
	s.away = true
	s.rs.expiry = time.AfterFunc(s.nsp.srv.recovery.MaxDisconnectionDuration, s.expire)
}

// expire drops a disconnected session: the socket leaves its rooms and the
// namespace.
func (s *Socket) expire() {
	s.mu.Lock()
	if !s.away {
		s.mu.Unlock()
		return
	}
	s.away = false
	s.rs.history = nil
	if s.rs.expiry != nil {
		s.rs.expiry.Stop()
		s.rs.expiry = nil
	}
	s.mu.Unlock()
	n := s.nsp
	n.mu.Lock()
	if n.away[s.rs.pid] == s {
		delete(n.away, s.rs.pid)
	}
	n.mu.Unlock()
	n.remove(s, true)
}

// recoveryRequest reads the pid and offset a returning client sends in its
// CONNECT payload.
func recoveryRequest(auth json.RawMessage) (pid, offset string) {
	var req struct {
		PID    string `json:"pid"`
		Offset string `json:"offset"`
	}
	if json.Unmarshal(auth, &req) != nil {
		return "", ""
	}
	return req.PID, req.Offset
}

// awaySocket returns the disconnected session with this pid, or nil.
func (n *Namespace) awaySocket(pid string) *Socket {
	if pid == "" {
		return nil
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.away[pid]
}

// takeOver gives the session of old to s: s gets its id, pid, data and rooms
// (old never left them), is told it is connected, and receives what old kept
// after offset. It reports false when the session cannot be recovered (it
// expired, or offset is not among the remembered events), and then drops it.
func (n *Namespace) takeOver(old, s *Socket, offset string) bool {
	old.mu.Lock()
	if !old.away {
		old.mu.Unlock()
		return false
	}
	from := -1
	if offset == "" {
		// The client received no event with an offset: everything kept is missed,
		// provided nothing was forgotten yet.
		if len(old.rs.history) < n.srv.recovery.History {
			from = 0
		}
	} else {
		for i := len(old.rs.history) - 1; i >= 0; i-- {
			if hasOffset(old.rs.history[i], offset) {
				from = i + 1
				break
			}
		}
	}
	if from < 0 {
		old.mu.Unlock()
		old.expire()
		return false
	}
	// The missed events go to the session's send queue at once, behind the
	// CONNECT answer. More than it holds would close the new connection with
	// "send queue full": the client gets a new session instead.
	if msgs, limit := 1+messageCount(old.rs.history[from:]), n.srv.sendQueueSize(); msgs > limit {
		old.mu.Unlock()
		n.srv.log.Warn("socketio: missed events exceed the send queue; session not recovered",
			"namespace", n.name, "messages", msgs, "sendQueueSize", limit)
		old.expire()
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		// The new connection closed meanwhile: leave the session waiting.
		old.mu.Unlock()
		return true
	}
	missed := old.rs.history[from:]
	old.away = false
	old.rs.history = nil
	old.rs.successor = s
	if old.rs.expiry != nil {
		old.rs.expiry.Stop()
		old.rs.expiry = nil
	}
	s.id, s.rs.pid, s.recovered = old.id, old.rs.pid, true
	if old.extra != nil {
		x := s.extraLocked()
		x.data, x.dataJSON = old.extra.data, old.extra.dataJSON
	}
	s.keepHistoryLocked(missed)
	s.holdLocked(connectPacket(n.name, s.id, s.rs.pid), missed)
	n.mu.Lock()
	delete(n.away, old.rs.pid)
	n.sockets[s.id] = s
	n.mu.Unlock()
	old.mu.Unlock()
	return true
}

// keepHistoryLocked remembers the last events of a replay (at most History) as
// the recent events of s, to resend after a later break. s.mu is held.
func (s *Socket) keepHistoryLocked(replayed []*parser.Encoded) {
	h := s.nsp.srv.recovery.History
	if len(replayed) > h {
		replayed = replayed[len(replayed)-h:]
	}
	s.rs.history = append([]*parser.Encoded(nil), replayed...)
}

// Recovered reports whether the socket took over the session of an earlier
// connection (see RecoveryOptions).
func (s *Socket) Recovered() bool { return s.recovered }

// expireAll drops every disconnected session (at shutdown).
func (n *Namespace) expireAll() {
	n.mu.RLock()
	list := make([]*Socket, 0, len(n.away))
	for _, s := range n.away {
		list = append(list, s)
	}
	n.mu.RUnlock()
	for _, s := range list {
		s.expire()
	}
}

// messageCount is the number of Engine.IO messages of packets: one for the text
// and one per binary attachment.
func messageCount(packets []*parser.Encoded) int {
	n := 0
	for _, e := range packets {
		n += 1 + len(e.Attachments)
	}
	return n
}

// sendQueueSize is the bound of a session's send queue (engineio
// Options.SendQueueSize with its default applied).
func (s *Server) sendQueueSize() int {
	if s.opts.SendQueueSize > 0 {
		return s.opts.SendQueueSize
	}
	return engineio.DefaultSendQueueSize
}
