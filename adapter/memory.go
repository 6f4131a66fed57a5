package adapter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/durasock/durasock/parser"
)

// ErrInvalidPacket is returned by Broadcast and BroadcastWithAck for a packet they
// cannot send: nil, not an EVENT or BINARY_EVENT, with data that is not a JSON
// array, of another namespace, or (for Broadcast) carrying an ack id. See
// CheckPacket.
var ErrInvalidPacket = errors.New("adapter: invalid broadcast packet")

// ErrInvalidEvent is returned by ServerSideEmit for an empty event name. See
// CheckEvent.
var ErrInvalidEvent = errors.New("adapter: invalid event name")

// errNilNamespace is returned by NewMemory without a namespace.
var errNilNamespace = errors.New("adapter: nil namespace")

// Memory is the in-memory adapter: the adapter of a single server process, and the
// local part of a cluster adapter.
//
// A socket is known to the adapter from its first Join (which also puts it in the
// room named by its id) until LeaveAll. The socketio package calls Join(id) when a
// socket connects and LeaveAll(id) when it disconnects.
//
// Every operation of Memory applies to the sockets of this node only. A cluster
// adapter embeds or wraps a *Memory (made with NewLocal) for its membership and
// local delivery and adds the cross-node part:
//
//   - Broadcast, or BroadcastLocal with the recipient count, deliver to local
//     sockets; BroadcastPaced does the same for what other nodes published,
//     waiting for room in full send queues instead of cutting;
//   - BroadcastWithAckRecipients runs a broadcast with acks locally and reports
//     the recipients and each reply through callbacks, which is what a node
//     needs to answer a remote BroadcastWithAck request;
//   - AddSocketsLocal, DelSocketsLocal, DisconnectSocketsLocal and
//     FetchSocketsLocal apply remote requests to local sockets;
//   - SocketIDs lists the local sockets an Options selects.
//
// Options.Local is ignored by Memory: everything it does is local.
type Memory struct {
	nsp Namespace
	obs RoomObserver // nsp, when it observes room changes
	// life is cancelled by Close. A context rather than a bare channel, so that
	// BroadcastPaced merges it into its caller's ctx without a goroutine.
	life context.Context
	stop context.CancelFunc
	once sync.Once

	mu     sync.RWMutex
	closed bool
	// rooms maps a room to the ids of its members, except the socket the room
	// is named after: a socket's own room is implicit (member.own), since
	// every socket is in it and most sockets are in no other, so an idle
	// socket costs one entry of sids and no map of its own.
	rooms map[string]map[string]struct{}
	sids  map[string]member // socket id -> its rooms
}

// member is what the adapter knows of one socket: whether it is in its own
// room, and the other rooms it joined (nil while there are none).
type member struct {
	rooms map[string]struct{}
	own   bool
}

// in reports whether socket id, whose membership is mb, is in room r.
func (mb member) in(id, r string) bool {
	if r == id {
		return mb.own
	}
	_, ok := mb.rooms[r]
	return ok
}

var (
	_ Adapter          = (*Memory)(nil)
	_ PacedBroadcaster = (*Memory)(nil)
)

// NewMemory returns the in-memory adapter of nsp. It is a Factory.
func NewMemory(nsp Namespace) (Adapter, error) {
	m, err := NewLocal(nsp)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// NewLocal returns the in-memory adapter of nsp as its concrete type, for a
// cluster adapter that uses it for its local part.
func NewLocal(nsp Namespace) (*Memory, error) {
	if nsp == nil {
		return nil, errNilNamespace
	}
	life, stop := context.WithCancel(context.Background())
	obs, _ := nsp.(RoomObserver)
	return &Memory{
		nsp:   nsp,
		obs:   obs,
		life:  life,
		stop:  stop,
		rooms: make(map[string]map[string]struct{}),
		sids:  make(map[string]member),
	}, nil
}

// Namespace returns the namespace the adapter serves.
func (m *Memory) Namespace() Namespace { return m.nsp }

// Join adds socket id to rooms. The first Join of a socket also adds it to the room
// named by its id; Join(id) with no rooms does only that. After Close it does
// nothing.
func (m *Memory) Join(id string, rooms ...string) {
	ev := m.changes()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	if _, known := m.sids[id]; !known {
		m.sids[id] = member{}
		m.add(ev, id, id)
	}
	for _, r := range rooms {
		m.add(ev, id, r)
	}
	m.mu.Unlock()
	m.notify(ev)
}

// changes returns where to collect room changes for the observer, or nil when
// nobody observes them (then nothing is collected or allocated).
func (m *Memory) changes() *[]RoomChange {
	if m.obs == nil || !m.obs.ObservesRooms() {
		return nil
	}
	return new([]RoomChange)
}

// notify reports collected room changes, outside the lock and in order.
func (m *Memory) notify(ev *[]RoomChange) {
	if ev == nil {
		return
	}
	for _, c := range *ev {
		m.obs.RoomChanged(c)
	}
}

// exists reports whether room r has a member; m.mu is held.
func (m *Memory) exists(r string) bool {
	return len(m.rooms[r]) > 0 || m.sids[r].own
}

// add puts the known socket id in room r; m.mu is held for writing. Changes
// are appended to ev unless it is nil.
func (m *Memory) add(ev *[]RoomChange, id string, r string) {
	mb := m.sids[id]
	if mb.in(id, r) {
		return
	}
	if ev != nil && !m.exists(r) {
		*ev = append(*ev, RoomChange{Kind: RoomCreated, Room: r})
	}
	if r == id {
		mb.own = true
	} else {
		if mb.rooms == nil {
			mb.rooms = make(map[string]struct{}, 1)
		}
		mb.rooms[r] = struct{}{}
		members := m.rooms[r]
		if members == nil {
			members = make(map[string]struct{}, 1)
			m.rooms[r] = members
		}
		members[id] = struct{}{}
	}
	m.sids[id] = mb
	if ev != nil {
		*ev = append(*ev, RoomChange{Kind: RoomJoined, Room: r, ID: id})
	}
}

// Leave removes socket id from rooms. A socket may leave the room named by its id;
// it stays known to the adapter until LeaveAll.
func (m *Memory) Leave(id string, rooms ...string) {
	ev := m.changes()
	m.mu.Lock()
	if _, known := m.sids[id]; known {
		for _, r := range rooms {
			m.remove(ev, id, r)
		}
	}
	m.mu.Unlock()
	m.notify(ev)
}

// remove takes the known socket id out of room r; m.mu is held for writing.
// Changes are appended to ev unless it is nil.
func (m *Memory) remove(ev *[]RoomChange, id string, r string) {
	mb := m.sids[id]
	if !mb.in(id, r) {
		return
	}
	if r == id {
		mb.own = false
	} else {
		delete(mb.rooms, r)
		if len(mb.rooms) == 0 {
			mb.rooms = nil
		}
		members := m.rooms[r]
		delete(members, id)
		if len(members) == 0 {
			delete(m.rooms, r)
		}
	}
	m.sids[id] = mb
	if ev != nil {
		*ev = append(*ev, RoomChange{Kind: RoomLeft, Room: r, ID: id})
		if !m.exists(r) {
			*ev = append(*ev, RoomChange{Kind: RoomDeleted, Room: r})
		}
	}
}

// LeaveAll removes socket id from every room and forgets it. Its rooms are
// left in sorted order.
func (m *Memory) LeaveAll(id string) {
	ev := m.changes()
	m.mu.Lock()
	if mb, known := m.sids[id]; known {
		if ev != nil {
			for _, r := range m.roomsOf(id) {
				m.remove(ev, id, r)
			}
		} else {
			for r := range mb.rooms {
				m.remove(nil, id, r)
			}
		}
		delete(m.sids, id)
	}
	m.mu.Unlock()
	m.notify(ev)
}

// Rooms returns the rooms of socket id, sorted, or nil for an unknown socket.
func (m *Memory) Rooms(id string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.roomsOf(id)
}

// roomsOf returns the sorted rooms of id; m.mu is held.
func (m *Memory) roomsOf(id string) []string {
	mb, known := m.sids[id]
	if !known {
		return nil
	}
	out := make([]string, 0, 1+len(mb.rooms))
	if mb.own {
		out = append(out, id)
	}
	for r := range mb.rooms {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// SocketIDs returns the ids of the local sockets opts selects, in no particular
// order (opts.Local is ignored). It returns nil after Close.
func (m *Memory) SocketIDs(opts Options) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.selectLocked(nil, opts)
}

// selectLocked appends the ids opts selects to dst; m.mu is held. A socket matches
// when it is in one of opts.Rooms (any socket when there are none) and in none of
// opts.Except. Membership is checked on the socket's own room set, so selection
// allocates nothing beyond dst.
func (m *Memory) selectLocked(dst []string, opts Options) []string {
	if m.closed {
		return dst
	}
	if len(opts.Rooms) == 0 {
		for id, mb := range m.sids {
			if !excluded(id, mb, opts.Except) {
				dst = append(dst, id)
			}
		}
		return dst
	}
	pick := func(id string, mb member, earlier []string) {
		if inAny(id, mb, earlier) || excluded(id, mb, opts.Except) {
			return // already selected through an earlier room, or excluded
		}
		dst = append(dst, id)
	}
	for i, r := range opts.Rooms {
		if mb := m.sids[r]; mb.own { // r is the own room of a socket
			pick(r, mb, opts.Rooms[:i])
		}
		for id := range m.rooms[r] {
			pick(id, m.sids[id], opts.Rooms[:i])
		}
	}
	return dst
}

func excluded(id string, mb member, except []string) bool {
	return len(except) > 0 && inAny(id, mb, except)
}

func inAny(id string, mb member, rooms []string) bool {
	for _, r := range rooms {
		if mb.in(id, r) {
			return true
		}
	}
	return false
}

// idPool recycles the id slices of broadcasts to large rooms.
var idPool = sync.Pool{New: func() any { s := make([]string, 0, 64); return &s }}

// withSockets calls fn for every local socket opts selects that is still connected,
// outside the lock, so fn may call back into the adapter.
func (m *Memory) withSockets(opts Options, fn func(Socket)) error {
	buf := idPool.Get().(*[]string)
	m.mu.RLock()
	closed := m.closed
	ids := m.selectLocked((*buf)[:0], opts)
	m.mu.RUnlock()
	if closed {
		idPool.Put(buf)
		return ErrClosed
	}
	for _, id := range ids {
		if s := m.nsp.Socket(id); s != nil {
			fn(s)
		}
	}
	clear(ids)
	*buf = ids[:0]
	idPool.Put(buf)
	return nil
}

// Broadcast writes p to every matching local socket: it encodes p once and writes
// the same bytes to each. It never blocks, and ctx is not consulted.
//
// With opts.NoCompress, sockets that are UncompressedWriters write p without
// per-message compression.
func (m *Memory) Broadcast(_ context.Context, p *parser.Packet, opts Options) error {
	_, err := m.BroadcastLocal(p, opts)
	return err
}

// BroadcastLocal is Broadcast returning the number of sockets written to. p is
// encoded once, and only when there is at least one recipient.
func (m *Memory) BroadcastLocal(p *parser.Packet, opts Options) (int, error) {
	p, err := CheckPacket(p, m.nsp.Name(), false)
	if err != nil {
		return 0, err
	}
	var enc *parser.Encoded
	n := 0
	err = m.withSockets(opts, func(s Socket) {
		if enc == nil {
			enc = parser.Encode(p)
		}
		write(s, enc, opts)
		n++
	})
	return n, err
}

// write writes enc to s as opts say, never waiting.
func write(s Socket, enc *parser.Encoded, opts Options) {
	if opts.NoCompress {
		if u, ok := s.(UncompressedWriter); ok {
			_ = u.WriteUncompressed(context.Background(), enc, opts.Volatile, false) // returns an error only when paced
			return
		}
	}
	s.Write(enc, opts.Volatile)
}

// BroadcastPaced is BroadcastLocal for a delivery that may wait: a cluster
// adapter applies the broadcasts of other nodes with it, so that a backlog
// arriving at once after an outage reaches each recipient at the pace it
// takes it instead of overflowing its send queue and cutting it.
//
// Each recipient that is a PacedSocket is written with WritePaced: the call
// waits while that socket's queue is full, and meanwhile the sockets after it
// and the caller's next deliveries wait too (for a cluster node, the bus reader
// stops reading; Redis keeps what is not read). The wait is bounded by the
// transport: a client that takes nothing within its slow-client timeout is cut
// (engineio.Options.SlowClientTimeout), and stalled clients are timed from when
// their queues filled, so several of them cost one timeout, not one each. A
// socket that is cut or disconnects during its wait is skipped.
//
// A volatile broadcast never waits: it is BroadcastLocal. The node's own
// broadcasts (Broadcast, BroadcastLocal) never wait either.
//
// It returns the number of sockets written to; ErrClosed when the adapter is
// or becomes closed (Close ends a wait); ctx's error when ctx is done first, in
// which case the sockets not reached yet are not written to.
func (m *Memory) BroadcastPaced(ctx context.Context, p *parser.Packet, opts Options) (int, error) {
	if opts.Volatile {
		return m.BroadcastLocal(p, opts)
	}
	p, err := CheckPacket(p, m.nsp.Name(), false)
	if err != nil {
		return 0, err
	}
	ctx, cancel := m.mergeLife(ctx)
	defer cancel()
	var enc *parser.Encoded
	n := 0
	var stopped error
	err = m.withSockets(opts, func(s Socket) {
		if stopped != nil {
			return
		}
		if enc == nil {
			enc = parser.Encode(p)
		}
		ps, ok := s.(PacedSocket)
		if !ok {
			write(s, enc, opts)
			n++
			return
		}
		var err error
		if u, ok := s.(UncompressedWriter); ok && opts.NoCompress {
			err = u.WriteUncompressed(ctx, enc, false, true)
		} else {
			err = ps.WritePaced(ctx, enc)
		}
		if err != nil {
			if ctx.Err() != nil {
				stopped = err
			}
			return // the socket is gone: cut or disconnected
		}
		n++
	})
	switch {
	case err != nil:
		return n, err
	case m.life.Err() != nil:
		return n, ErrClosed
	case stopped != nil:
		return n, fmt.Errorf("adapter: paced broadcast: %w", context.Cause(ctx))
	}
	return n, nil
}

// mergeLife returns a context done when ctx is or the adapter closes.
func (m *Memory) mergeLife(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Done() == nil {
		return m.life, func() {}
	}
	merged, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.life, cancel)
	return merged, func() {
		stop()
		cancel()
	}
}

// BroadcastWithAck sends p to every matching local socket with one fresh ack id
// and collects the replies until every recipient replied, ctx is done, or the
// adapter is closed. On ctx expiry it returns the replies that arrived and a
// *MissingRepliesError naming the sockets that did not reply. Without a deadline
// on ctx it waits for every reply, so callers set one.
func (m *Memory) BroadcastWithAck(ctx context.Context, p *parser.Packet, opts Options) ([]Reply, error) {
	var replies []Reply
	err := m.BroadcastWithAckRecipients(ctx, p, opts,
		func(ids []string) { replies = make([]Reply, 0, len(ids)) },
		func(r Reply) { replies = append(replies, r) })
	return replies, err
}

// BroadcastWithAckRecipients runs a broadcast with acks on the local sockets
// and reports through callbacks, which a cluster node uses to answer a remote
// request: onSent is called once with the ids of the recipients (sorted) right
// after the packet was written, so that the node can name the sockets it waits
// for without a second, racy selection; then onReply once per reply as it
// arrives. Both are called on the calling goroutine, in that order, and may be
// nil. onSent is not called when nothing was sent because p is invalid or the
// adapter is closed, and must not keep ids beyond the call.
//
// It returns nil once every recipient replied; ErrClosed when the adapter is
// closed meanwhile; or, when ctx is done first, a *MissingRepliesError with the
// ids of the sockets that did not reply. The acks of sockets that did not reply
// are forgotten before it returns, so a late reply is dropped.
//
// The ack id comes from Namespace.NextAckID and is set on a copy of p; p itself
// is not modified.
func (m *Memory) BroadcastWithAckRecipients(ctx context.Context, p *parser.Packet, opts Options, onSent func(ids []string), onReply func(Reply)) error {
	p, err := CheckPacket(p, m.nsp.Name(), true)
	if err != nil {
		return err
	}
	type target struct {
		s       Socket
		replied bool
	}
	// Recipients are collected first, so that the reply channel can hold every
	// reply and an ack callback never blocks the goroutine that delivers it.
	var sockets []Socket
	if err := m.withSockets(opts, func(s Socket) { sockets = append(sockets, s) }); err != nil {
		return err
	}
	if len(sockets) == 0 {
		if onSent != nil {
			onSent(nil)
		}
		return nil
	}
	replies := make(chan Reply, len(sockets))
	pending := make(map[string]*target, len(sockets))
	ids := make([]string, 0, len(sockets))
	q := *p
	q.ID, q.HasID = m.nsp.NextAckID(), true
	enc := parser.Encode(&q)
	for _, s := range sockets {
		id := s.ID()
		if _, dup := pending[id]; dup {
			continue
		}
		pending[id] = &target{s: s}
		ids = append(ids, id)
		s.ExpectAck(q.ID, func(args []json.RawMessage) {
			select {
			case replies <- Reply{From: id, Args: args}:
			default: // more replies than recipients: a socket replied twice
			}
		})
		s.Write(enc, opts.Volatile)
	}
	if onSent != nil {
		slices.Sort(ids)
		onSent(ids)
	}
	waiting := len(pending)
	forget := func() {
		for _, t := range pending {
			if !t.replied {
				t.s.ForgetAck(q.ID)
			}
		}
	}
	for waiting > 0 {
		select {
		case r := <-replies:
			t := pending[r.From]
			if t == nil || t.replied {
				continue
			}
			t.replied = true
			waiting--
			if onReply != nil {
				onReply(r)
			}
		case <-ctx.Done():
			forget()
			missing := make([]string, 0, waiting)
			for id, t := range pending {
				if !t.replied {
					missing = append(missing, id)
				}
			}
			slices.Sort(missing)
			return &MissingRepliesError{
				Expected: len(pending),
				Received: len(pending) - waiting,
				Missing:  missing,
				Err:      ctx.Err(),
			}
		case <-m.life.Done():
			forget()
			return ErrClosed
		}
	}
	return nil
}

// AddSockets makes every matching local socket join rooms.
func (m *Memory) AddSockets(_ context.Context, opts Options, rooms []string) error {
	return m.AddSocketsLocal(opts, rooms)
}

// AddSocketsLocal makes every matching local socket join rooms. It never blocks.
func (m *Memory) AddSocketsLocal(opts Options, rooms []string) error {
	return m.eachRoomLocal(opts, rooms, m.add)
}

// DelSockets makes every matching local socket leave rooms.
func (m *Memory) DelSockets(_ context.Context, opts Options, rooms []string) error {
	return m.DelSocketsLocal(opts, rooms)
}

// DelSocketsLocal makes every matching local socket leave rooms. It never blocks.
func (m *Memory) DelSocketsLocal(opts Options, rooms []string) error {
	return m.eachRoomLocal(opts, rooms, m.remove)
}

// eachRoomLocal calls op for every matching local socket and every room, under
// the lock. op is m.add or m.remove.
func (m *Memory) eachRoomLocal(opts Options, rooms []string, op func(ev *[]RoomChange, id string, room string)) error {
	ev := m.changes()
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	for _, id := range m.selectLocked(nil, opts) {
		for _, r := range rooms {
			op(ev, id, r)
		}
	}
	m.mu.Unlock()
	m.notify(ev)
	return nil
}

// DisconnectSockets disconnects every matching local socket.
func (m *Memory) DisconnectSockets(_ context.Context, opts Options, closeConn bool) error {
	return m.DisconnectSocketsLocal(opts, closeConn)
}

// DisconnectSocketsLocal calls Disconnect(closeConn) on every matching local
// socket, outside the adapter's lock (a disconnecting socket calls LeaveAll).
func (m *Memory) DisconnectSocketsLocal(opts Options, closeConn bool) error {
	var sockets []Socket
	if err := m.withSockets(opts, func(s Socket) { sockets = append(sockets, s) }); err != nil {
		return err
	}
	for _, s := range sockets {
		s.Disconnect(closeConn)
	}
	return nil
}

// FetchSockets describes every matching local socket.
func (m *Memory) FetchSockets(_ context.Context, opts Options) ([]SocketInfo, error) {
	return m.FetchSocketsLocal(opts)
}

// FetchSocketsLocal describes every matching local socket, sorted by id. Rooms is
// the adapter's view of the socket's rooms; Node is left as the socket reports it
// (a cluster adapter fills it in).
func (m *Memory) FetchSocketsLocal(opts Options) ([]SocketInfo, error) {
	var sockets []Socket
	if err := m.withSockets(opts, func(s Socket) { sockets = append(sockets, s) }); err != nil {
		return nil, err
	}
	out := make([]SocketInfo, 0, len(sockets))
	for _, s := range sockets {
		info := s.Info()
		info.ID = s.ID()
		if rooms := m.Rooms(info.ID); rooms != nil {
			info.Rooms = rooms
		}
		out = append(out, info)
	}
	slices.SortFunc(out, func(a, b SocketInfo) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out, nil
}

// ServerSideEmit has no other server to reach on a single node: it returns no
// replies and nil (ErrClosed after Close). The namespace's own
// HandleServerSideEmit is not called, as with every adapter.
func (m *Memory) ServerSideEmit(_ context.Context, event string, _ []json.RawMessage, _ bool) ([]Reply, error) {
	if m.isClosed() {
		return nil, ErrClosed
	}
	return nil, CheckEvent(event)
}

func (m *Memory) isClosed() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.closed
}

// Close forgets every membership and ends pending BroadcastWithAck calls with
// ErrClosed. It is idempotent and always returns nil.
func (m *Memory) Close() error {
	m.once.Do(func() {
		m.mu.Lock()
		m.closed = true
		m.rooms = nil
		m.sids = nil
		m.mu.Unlock()
		m.stop()
	})
	return nil
}
