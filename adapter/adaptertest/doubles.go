package adaptertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// Message is one packet a Socket received, decoded from the bytes written to it.
type Message struct {
	// Packet is the packet decoded from Encoded.Text and its attachments.
	Packet *parser.Packet
	// Event is the event name and Args the arguments after it.
	Event string
	Args  []json.RawMessage
	// Volatile is the flag Write was called with.
	Volatile bool
	// Encoded is the value written; a broadcast writes the same pointer to every
	// local recipient.
	Encoded *parser.Encoded
}

// AckFunc decides how a Socket answers a packet that asks for an acknowledgement:
// with args when reply is true, or not at all (a silent client). It is called with
// the socket locked and must not call the socket's methods other than ID.
type AckFunc func(s *Socket, m Message) (args []json.RawMessage, reply bool)

// ReplyID is an AckFunc that answers with one argument: the socket id as a JSON
// string.
func ReplyID(s *Socket, _ Message) ([]json.RawMessage, bool) {
	return []json.RawMessage{quote(s.ID())}, true
}

// Silent is an AckFunc that never answers.
func Silent(*Socket, Message) ([]json.RawMessage, bool) { return nil, false }

// ServerEmit is one event a Namespace received through HandleServerSideEmit.
type ServerEmit struct {
	Event     string
	Args      []json.RawMessage
	WantReply bool
}

// ServerEmitFunc decides how a Namespace answers a server-side emit that wants a
// reply: with args when reply is true, or not at all.
type ServerEmitFunc func(e ServerEmit) (args []json.RawMessage, reply bool)

// signal wakes waiters when the state it guards changes; the owner's mutex is
// held around every call.
type signal struct{ ch chan struct{} }

func (s *signal) wake() {
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
}

func (s *signal) wait() <-chan struct{} {
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

// Namespace is a test double of adapter.Namespace: a namespace on one node with
// Sockets that record what they receive. Bind the adapter made for it before
// connecting sockets.
type Namespace struct {
	name  string
	ackID atomic.Uint64
	reply sync.WaitGroup // ack replies in flight

	mu      sync.Mutex
	changed signal
	adapter adapter.Adapter
	sockets map[string]*Socket
	emits   []ServerEmit
	onEmit  ServerEmitFunc
}

var _ adapter.Namespace = (*Namespace)(nil)

// NewNamespace returns an empty namespace double named name.
func NewNamespace(name string) *Namespace {
	return &Namespace{name: name, sockets: make(map[string]*Socket)}
}

// Name returns the namespace's name.
func (n *Namespace) Name() string { return n.name }

// Bind sets the adapter that serves n; Connect and Socket.Disconnect call it as
// the socketio package does.
func (n *Namespace) Bind(a adapter.Adapter) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.adapter = a
}

// Adapter returns the adapter set by Bind.
func (n *Namespace) Adapter() adapter.Adapter {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.adapter
}

// Socket returns the connected socket id, or nil.
func (n *Namespace) Socket(id string) adapter.Socket {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s := n.sockets[id]; s != nil {
		return s
	}
	return nil // an untyped nil, not a nil *Socket
}

// Get returns the connected socket id as its concrete type, or nil.
func (n *Namespace) Get(id string) *Socket {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sockets[id]
}

// NextAckID returns a fresh ack id.
func (n *Namespace) NextAckID() uint64 { return n.ackID.Add(1) }

// OnServerSideEmit sets how n answers server-side emits that want a reply; by
// default it does not answer.
func (n *Namespace) OnServerSideEmit(f ServerEmitFunc) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onEmit = f
}

// HandleServerSideEmit records the event and answers it as set by OnServerSideEmit.
func (n *Namespace) HandleServerSideEmit(event string, args []json.RawMessage, reply func(args []json.RawMessage)) {
	e := ServerEmit{Event: event, Args: args, WantReply: reply != nil}
	n.mu.Lock()
	n.emits = append(n.emits, e)
	n.changed.wake()
	f := n.onEmit
	n.mu.Unlock()
	if reply == nil || f == nil {
		return
	}
	if args, ok := f(e); ok {
		reply(args)
	}
}

// ServerEmits returns the server-side emits received so far.
func (n *Namespace) ServerEmits() []ServerEmit {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]ServerEmit(nil), n.emits...)
}

// WaitServerEmits waits until at least count server-side emits arrived and returns
// them, or returns ctx's error with those that arrived.
func (n *Namespace) WaitServerEmits(ctx context.Context, count int) ([]ServerEmit, error) {
	for {
		n.mu.Lock()
		if len(n.emits) >= count {
			out := append([]ServerEmit(nil), n.emits...)
			n.mu.Unlock()
			return out, nil
		}
		ch := n.changed.wait()
		n.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return n.ServerEmits(), fmt.Errorf("adaptertest: %d of %d server-side emits: %w", len(n.ServerEmits()), count, ctx.Err())
		}
	}
}

// SocketOptions describes a socket to Connect.
type SocketOptions struct {
	// Rooms are joined on connect, besides the socket's own room.
	Rooms []string
	// Ack answers packets with an ack id; nil means Silent.
	Ack       AckFunc
	Data      json.RawMessage
	Handshake adapter.Handshake
}

// Connect adds a connected socket to n and joins it to its own room and
// opts.Rooms through the bound adapter.
func (n *Namespace) Connect(id string, opts SocketOptions) *Socket {
	s := &Socket{
		ns:        n,
		id:        id,
		data:      opts.Data,
		handshake: opts.Handshake,
		ack:       opts.Ack,
		connected: true,
		acks:      make(map[uint64]func([]json.RawMessage)),
		asked:     make(map[uint64]Message),
	}
	n.mu.Lock()
	n.sockets[id] = s
	a := n.adapter
	n.mu.Unlock()
	if a != nil {
		a.Join(id, opts.Rooms...)
	}
	return s
}

// Wait waits until the ack replies in flight have been delivered. Call it before
// the test ends so that no goroutine outlives it.
func (n *Namespace) Wait() { n.reply.Wait() }

// Socket is a test double of adapter.Socket. It decodes and records every packet
// written to it, answers acks as its AckFunc says, and records disconnects.
type Socket struct {
	ns        *Namespace
	id        string
	data      json.RawMessage
	handshake adapter.Handshake

	mu          sync.Mutex
	changed     signal
	ack         AckFunc
	connected   bool
	msgs        []Message
	errs        []error
	disconnects []bool
	acks        map[uint64]func([]json.RawMessage) // registered by ExpectAck
	asked       map[uint64]Message                 // written with an ack id, not answered
	held        bool                               // WritePaced waits (a full send queue)
	pacing      int                                // WritePaced calls waiting
}

var _ adapter.PacedSocket = (*Socket)(nil)

// ErrDisconnected is returned by WritePaced on a disconnected socket.
var ErrDisconnected = errors.New("adaptertest: socket disconnected")

// Hold makes WritePaced wait, as a full send queue would, until Release or
// Disconnect. Write is not affected: it never waits.
func (s *Socket) Hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = true
}

// Release ends Hold: waiting WritePaced calls write.
func (s *Socket) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held = false
	s.changed.wake()
}

// Pacing returns how many WritePaced calls wait on the socket now.
func (s *Socket) Pacing() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pacing
}

// WritePaced is Write(e, false) once the socket is not held; it returns
// ErrDisconnected when the socket is or becomes disconnected, or ctx's error.
func (s *Socket) WritePaced(ctx context.Context, e *parser.Encoded) error {
	s.mu.Lock()
	for s.held && s.connected {
		s.pacing++
		s.changed.wake() // WaitState callers see the new waiter
		ch := s.changed.wait()
		s.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.mu.Lock()
		s.pacing--
		if err != nil {
			s.mu.Unlock()
			return fmt.Errorf("adaptertest: socket %s: %w", s.id, err)
		}
	}
	connected := s.connected
	s.mu.Unlock()
	if !connected {
		return ErrDisconnected
	}
	s.Write(e, false)
	return nil
}

// ID returns the socket id.
func (s *Socket) ID() string { return s.id }

// SetAck replaces the socket's AckFunc (nil means Silent).
func (s *Socket) SetAck(f AckFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ack = f
}

// Write decodes e and records it. A packet with an ack id is answered once both
// Write and ExpectAck for its id happened, on a goroutine of its own as a client
// reply would arrive.
func (s *Socket) Write(e *parser.Encoded, volatile bool) {
	m, err := decode(e)
	m.Volatile = volatile
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed.wake()
	if err != nil {
		s.errs = append(s.errs, err)
		return
	}
	s.msgs = append(s.msgs, m)
	if m.Packet.HasID {
		s.asked[m.Packet.ID] = m
		s.answerLocked(m.Packet.ID)
	}
}

// ExpectAck registers fn for the ack id.
func (s *Socket) ExpectAck(id uint64, fn func(args []json.RawMessage)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed.wake()
	if !s.connected {
		return // a disconnected socket never answers
	}
	s.acks[id] = fn
	s.answerLocked(id)
}

// answerLocked replies to ack id when the packet was written and the ack
// registered; s.mu is held.
func (s *Socket) answerLocked(id uint64) {
	m, written := s.asked[id]
	fn, expected := s.acks[id]
	if !written || !expected {
		return
	}
	f := s.ack
	if f == nil {
		return
	}
	args, ok := f(s, m)
	if !ok {
		return
	}
	delete(s.asked, id)
	delete(s.acks, id)
	s.ns.reply.Add(1)
	go func() {
		defer s.ns.reply.Done()
		fn(args)
	}()
}

// ForgetAck removes the registration for id.
func (s *Socket) ForgetAck(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.changed.wake()
	delete(s.acks, id)
	delete(s.asked, id)
}

// PendingAcks returns how many ack registrations are outstanding.
func (s *Socket) PendingAcks() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.acks)
}

// Disconnect records the call, removes the socket from its namespace and makes it
// leave every room, as the socketio package does.
//
// The call is recorded last, so a waiter that sees it also sees the socket gone
// from the namespace and its rooms.
func (s *Socket) Disconnect(closeConn bool) {
	n := s.ns
	n.mu.Lock()
	if n.sockets[s.id] == s {
		delete(n.sockets, s.id)
	}
	a := n.adapter
	n.mu.Unlock()
	if a != nil {
		a.LeaveAll(s.id)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.disconnects = append(s.disconnects, closeConn)
	s.connected = false
	clear(s.acks)
	clear(s.asked)
	s.changed.wake()
}

// Disconnects returns the closeConn flag of every Disconnect call.
func (s *Socket) Disconnects() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.disconnects...)
}

// Connected reports whether the socket has not been disconnected.
func (s *Socket) Connected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

// Info describes the socket; its rooms come from the bound adapter.
func (s *Socket) Info() adapter.SocketInfo {
	var rooms []string
	if a := s.ns.Adapter(); a != nil {
		rooms = a.Rooms(s.id)
	}
	return adapter.SocketInfo{ID: s.id, Rooms: rooms, Data: s.data, Handshake: s.handshake}
}

// Messages returns the packets received so far.
func (s *Socket) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// DecodeErrors returns the errors met decoding what was written to the socket.
func (s *Socket) DecodeErrors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

// WaitFor waits until cond holds for the messages received, and returns them, or
// returns ctx's error with the messages received so far.
func (s *Socket) WaitFor(ctx context.Context, cond func([]Message) bool) ([]Message, error) {
	for {
		s.mu.Lock()
		if cond(s.msgs) {
			out := append([]Message(nil), s.msgs...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed.wait()
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Messages(), fmt.Errorf("adaptertest: socket %s: %w", s.id, ctx.Err())
		}
	}
}

// WaitMessages waits until at least count packets arrived.
func (s *Socket) WaitMessages(ctx context.Context, count int) ([]Message, error) {
	return s.WaitFor(ctx, func(m []Message) bool { return len(m) >= count })
}

// WaitState waits until cond holds for the socket (called with no lock held,
// after each change), or returns ctx's error.
func (s *Socket) WaitState(ctx context.Context, cond func(*Socket) bool) error {
	for {
		s.mu.Lock()
		ch := s.changed.wait()
		s.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("adaptertest: socket %s: %w", s.id, ctx.Err())
		}
	}
}

// decode reassembles the packet of e as a client would.
func decode(e *parser.Encoded) (Message, error) {
	m := Message{Encoded: e}
	if e == nil {
		return m, fmt.Errorf("adaptertest: nil packet written")
	}
	var d parser.Decoder
	p, err := d.AddText(e.Text)
	for i := 0; err == nil && p == nil && i < len(e.Attachments); i++ {
		p, err = d.AddBinary(e.Attachments[i])
	}
	if err != nil {
		return m, fmt.Errorf("adaptertest: decode %q: %w", e.Text, err)
	}
	if p == nil {
		return m, fmt.Errorf("adaptertest: decode %q: %d attachments missing", e.Text, len(e.Attachments))
	}
	if p.Type == parser.BinaryEvent || p.Type == parser.BinaryAck {
		if len(p.Attachments) != len(e.Attachments) {
			return m, fmt.Errorf("adaptertest: decode %q: %d attachments written, %d announced", e.Text, len(e.Attachments), len(p.Attachments))
		}
	} else if len(e.Attachments) != 0 {
		return m, fmt.Errorf("adaptertest: decode %q: %d attachments written to a packet without any", e.Text, len(e.Attachments))
	}
	m.Packet = p
	if p.Type != parser.Event && p.Type != parser.BinaryEvent {
		return m, nil
	}
	m.Event, err = parser.EventName(p.Data)
	if err != nil {
		return m, fmt.Errorf("adaptertest: decode %q: %w", e.Text, err)
	}
	all, err := parser.SplitArray(p.Data)
	if err != nil {
		return m, fmt.Errorf("adaptertest: decode %q: %w", e.Text, err)
	}
	m.Args = all[1:]
	return m, nil
}

func quote(s string) json.RawMessage {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a Go string always marshals
	}
	return b
}
