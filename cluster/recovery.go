package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/parser"
)

// Connection state recovery across nodes.
//
// A client that reconnects to another node sends the offset of the last event
// it received. That offset must say exactly which events it had, although its
// node delivered its own broadcasts at once (before Redis had them) and the
// other nodes' broadcasts in stream order. Each node therefore writes its own
// offset into what it delivers, "<R>~<instance>~<seq>" (R a stream position,
// instance and seq this node's bus instance and last sequence number on the
// namespace's partition), meaning:
//
//	the client has every message of the partition up to R, and this node's own
//	messages up to seq; nothing else.
//
// That holds because a namespace's deliveries are serialized (recoverState.mu)
// with the offset they carry: a remote broadcast is applied in stream order and
// carries its own position; a local one is published first (its seq), then
// written, with R the position read and handled so far. Every own message with
// a higher seq is published later, so it lies after R in the stream.
//
// Another node restores the session from the session store (sessions.go) and
// the stream history after R, holding its own recoverState.mu so that nothing
// of the namespace is delivered meanwhile: it replays what the client lacks up
// to its own position, and its own messages, and lets the rest arrive live.

// recallBus is what cross-node recovery needs of a bus (bus.Reliable over the
// Redis streams transport has it all).
type recallBus interface {
	PublishSeq(ctx context.Context, key string, payload []byte) (uint64, error)
	Instance() uint64
	Position(key string) string
	PositionOn(p int) string
	LastSeq(key string) uint64
	LastSeqOn(p int) uint64
	ReadHistory(ctx context.Context, key, after string, fn func(bus.HistoryEntry) bool) error
	ReadHistoryOn(ctx context.Context, p int, after string, fn func(bus.HistoryEntry) bool) error
	KeyValue() (bus.KeyValue, error)
	KeepsHistory() bool
	Sync(ctx context.Context) error
}

// restoreSyncTimeout bounds how long a restore waits for this node's own outbox
// to reach Redis.
const restoreSyncTimeout = 2 * time.Second

// recoverState is a namespace's part of recovery.
type recoverState struct {
	// used is set once the namespace delivers recoverable broadcasts or keeps
	// sessions: from then on every delivery of the namespace takes mu.
	used atomic.Bool
	mu   sync.Mutex
	// skip are, per socket restored here, the messages of its earlier node
	// that it had already received but that this node had not applied yet:
	// they must not reach it a second time. Guarded by mu.
	skip []skipRule
	// applied is the stream position of the last message of another node
	// this namespace applied under mu (routed: in this node's inbox). The
	// bus's own Position moves only once the delivery has returned, so right
	// after an apply it can still be behind a message the namespace's
	// sockets already had. Guarded by mu.
	applied string
	// appliedShared is, on a routed namespace, applied for the namespace's
	// shared partition (emitters' messages). Guarded by mu.
	appliedShared string
	// keep is the longest time a session of the namespace is kept after its
	// connection broke (nanoseconds), as SaveSession was told.
	keep atomic.Int64
	// unlocked counts the deliveries in progress that do not take mu (used
	// was false when they started): lockRecovery waits for them, then
	// counts the last of them (lastInbox: of a routed namespace's inbox;
	// lastShared: of the shared partition) as applied: the bus's position
	// moves only once their delivery has returned.
	unlocked              atomic.Int32
	lastInbox, lastShared atomic.Pointer[message]
}

// keeps is how long the namespace keeps sessions (0 before the first).
func (r *recoverState) keeps() time.Duration { return time.Duration(r.keep.Load()) }

// noteKeep notes that a session is kept for d.
func (r *recoverState) noteKeep(d time.Duration) {
	for {
		k := r.keep.Load()
		if int64(d) <= k || r.keep.CompareAndSwap(k, int64(d)) {
			return
		}
	}
}

// skipRule keeps from socket sid the messages at positions up to pos, and those
// of instance inst with seqs up to through, until the stream is past both or
// until.
type skipRule struct {
	sid     string
	pos     string
	inst    uint64
	through uint64
	until   time.Time
}

// offset is a recovery offset: "<R>~<instance hex>~<seq base 36>" on the
// namespace's shared partition; on a routed namespace (handoff.go)
// "<R>~<instance hex>~<seq base 36>~<partition>~<S>", R and seq in inbox
// partition partition, S the position in the shared partition.
type offset struct {
	pos  string
	inst uint64
	seq  uint64
	// part is the inbox partition of pos and seq, -1 for the shared one;
	// shared the position in the shared partition then.
	part   int
	shared string
}

func (o offset) String() string {
	s := o.pos + "~" + strconv.FormatUint(o.inst, 16) + "~" + strconv.FormatUint(o.seq, 36)
	if o.part < 0 {
		return s
	}
	return s + "~" + strconv.Itoa(o.part) + "~" + o.shared
}

func parseOffset(s string) (offset, bool) {
	f := strings.Split(s, "~")
	if (len(f) != 3 && len(f) != 5) || f[0] == "" {
		return offset{}, false
	}
	inst, err1 := strconv.ParseUint(f[1], 16, 64)
	seq, err2 := strconv.ParseUint(f[2], 36, 64)
	if err1 != nil || err2 != nil {
		return offset{}, false
	}
	o := offset{pos: f[0], inst: inst, seq: seq, part: -1}
	if len(f) == 5 {
		part, err := strconv.Atoi(f[3])
		if err != nil || part < 0 || f[4] == "" {
			return offset{}, false
		}
		o.part, o.shared = part, f[4]
	}
	return o, true
}

// withOffset returns p with off appended as the last argument of its data (an
// event packet, whose data is a JSON array).
func withOffset(p *parser.Packet, off string) *parser.Packet {
	d := p.Data
	if len(d) == 0 || d[len(d)-1] != ']' {
		return p
	}
	q := *p
	b := make([]byte, 0, len(d)+len(off)+3)
	b = append(b, d[:len(d)-1]...)
	b = append(b, ',', '"')
	b = append(b, off...)
	b = append(b, '"', ']')
	q.Data = b
	return &q
}

// key is the partition key of the namespace.
func (a *nspAdapter) key() string { return partitionKey(a.name) }

// currentOffset is the offset of a delivery made now. rec.mu is held.
func (a *nspAdapter) currentOffset(pos string) string {
	r := a.c.recall
	if r == nil {
		return offset{pos: "-", inst: 0, seq: 0, part: -1}.String()
	}
	if a.interest != nil {
		// Routed: this node's inbox, as far as applied (pos is not used).
		part := a.c.route.inbox
		return offset{pos: orDash(a.inboxPosLocked()), inst: r.Instance(), seq: r.LastSeqOn(part),
			part: part, shared: orDash(a.sharedPosLocked())}.String()
	}
	if pos == "" {
		pos = a.positionLocked()
	}
	if pos == "" {
		pos = "-" // nothing read yet: restorable only from the start of the history
	}
	return offset{pos: pos, inst: r.Instance(), seq: r.LastSeq(a.key()), part: -1}.String()
}

// orDash is p, or "-" (nothing read yet) when it is empty.
func orDash(p string) string {
	if p == "" {
		return "-"
	}
	return p
}

// positionLocked is how far this namespace has applied the partition: the
// bus's position, or the last message applied under rec.mu when that is
// further. rec.mu is held.
func (a *nspAdapter) positionLocked() string {
	pos := a.c.recall.Position(a.key())
	if a.rec.applied != "" && (pos == "" || bus.ComparePositions(a.rec.applied, pos) > 0) {
		return a.rec.applied
	}
	return pos
}

// broadcastRecoverable publishes p (unless opts.Local), then writes it with
// this node's offset to the matching local sockets, both under rec.mu.
func (a *nspAdapter) broadcastRecoverable(ctx context.Context, p *parser.Packet, opts adapter.Options) error {
	a.rec.used.Store(true)
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	var err error
	if !opts.Local {
		m := &message{
			kind: kindBroadcast, nsp: a.name, flags: selectorFlags(opts),
			rooms: opts.Rooms, except: opts.Except,
			ptype: p.Type, data: p.Data, attachments: p.Attachments,
		}
		switch {
		case a.interest != nil:
			err = a.publishOwn(ctx, m)
		case a.c.recall != nil:
			_, err = a.c.recall.PublishSeq(ctx, a.key(), m.marshal())
			if err != nil {
				err = fmt.Errorf("cluster: %s: %w", m.kind, err)
			}
		default:
			err = a.publish(ctx, m)
		}
	}
	// Written whatever the bus said (G1); an event the bus refused is not in
	// the stream, and the offset does not count it.
	if _, lerr := a.local.BroadcastLocal(withOffset(p, a.currentOffset("")), opts); lerr != nil {
		return lerr
	}
	return err
}

// applyRecoverable applies a message of another node under rec.mu, with the
// message's own position in the offset of a recoverable broadcast.
func (a *nspAdapter) applyRecoverable(m *message) {
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	// On a routed namespace, the shared partition holds what emitters
	// publish; only it has skip rules (handoff.go).
	shared := a.interest == nil || m.part != a.c.route.inbox
	applied := &a.rec.applied
	if a.interest != nil && shared {
		applied = &a.rec.appliedShared
	}
	if m.pos != "" && (*applied == "" || bus.ComparePositions(m.pos, *applied) > 0) {
		*applied = m.pos
	}
	if recoverableHere(m) {
		opts := m.options()
		opts.Recoverable = true
		if shared {
			if skip := a.skipLocked(m); len(skip) > 0 {
				opts.Except = append(slices.Clip(opts.Except), skip...)
			}
		}
		p := &parser.Packet{Type: m.ptype, Namespace: a.name, Data: m.data, Attachments: m.attachments}
		// Paced like any remote delivery (applyLocal). The wait holds rec.mu, so
		// this namespace's own recoverable emits wait with it: their offsets
		// must follow the deliveries' order.
		if _, err := a.local.BroadcastPaced(context.Background(), withOffset(p, a.currentOffset(m.pos)), opts); err != nil && !errors.Is(err, adapter.ErrClosed) {
			a.c.logLimited("cluster: message of another node not applied",
				slog.String("namespace", a.name), slog.String("kind", m.kind.String()), slog.Any("error", err))
		}
		return
	}
	if err := a.applyLocal(m); err != nil && !errors.Is(err, adapter.ErrClosed) {
		a.c.logLimited("cluster: message of another node not applied",
			slog.String("namespace", a.name), slog.String("kind", m.kind.String()), slog.Any("error", err))
	}
}

// recoverableHere reports whether m, a message of another origin applied by a
// namespace that keeps sessions, is a broadcast its clients must be able to
// recover. That is decided here, by the receiving namespace, as Socket.IO
// does, not only by the sender's flagRecoverable: a publisher that is not a
// node (package emitter) does not know whether the namespace keeps sessions,
// and its events, delivered without an offset and left out of a replay, would
// be lost by a client recovered on another node (or, applied there after its
// earlier node had delivered them, received twice). Volatile broadcasts are
// never recoverable.
func recoverableHere(m *message) bool {
	if m.kind != kindBroadcast || m.flags&flagVolatile != 0 {
		return false
	}
	return m.flags&flagRecoverable != 0 || m.ptype == parser.Event || m.ptype == parser.BinaryEvent
}

// skipLocked returns the restored sockets that already have m, and forgets the
// rules m shows to be over.
func (a *nspAdapter) skipLocked(m *message) []string {
	if len(a.rec.skip) == 0 {
		return nil
	}
	var out []string
	now := time.Now()
	keep := a.rec.skip[:0]
	for _, r := range a.rec.skip {
		byPos := r.pos != "" && m.pos != "" && bus.ComparePositions(m.pos, r.pos) <= 0
		byOrigin := m.inst == r.inst && m.seq <= r.through
		if byPos || byOrigin {
			out = append(out, r.sid)
		}
		pastOrigin := m.inst == r.inst && m.seq >= r.through
		if (!byPos && pastOrigin) || now.After(r.until) {
			continue
		}
		keep = append(keep, r)
	}
	clear(a.rec.skip[len(keep):])
	a.rec.skip = keep
	return out
}

// RestoreSession implements adapter.SessionStore: see the comment at the top
// of this file.
func (a *nspAdapter) RestoreSession(ctx context.Context, pid, off string, maxMissed int, attach func(adapter.Session, []*parser.Encoded) error) error {
	st, r := a.c.sessions, a.c.recall
	if st == nil || r == nil {
		return fmt.Errorf("%w: the bus keeps no history", adapter.ErrNoSession)
	}
	rec, err := st.take(ctx, pid)
	if err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("%w: unknown or expired", adapter.ErrNoSession)
	}
	if rec.Nsp != a.name {
		return fmt.Errorf("%w: the session is of namespace %q", adapter.ErrNoSession, rec.Nsp)
	}
	if off == "" {
		off = rec.Base
	}
	from, ok := parseOffset(off)
	if !ok {
		return fmt.Errorf("%w: offset %q is not one of this cluster", adapter.ErrNoSession, off)
	}
	if a.interest != nil {
		return a.restoreRouted(ctx, rec, pid, from, maxMissed, attach)
	}
	if from.part >= 0 {
		return fmt.Errorf("%w: offset %q is of a routed namespace; this one is not", adapter.ErrNoSession, off)
	}
	if err := a.lockRestore(ctx); err != nil {
		return err
	}
	defer a.rec.mu.Unlock()
	here, mine, ownSeq := a.positionLocked(), r.Instance(), r.LastSeq(a.key())
	if here == "" {
		return fmt.Errorf("%w: this node has not read the namespace's partition yet", adapter.ErrNoSession)
	}
	s := adapter.Session{PID: pid, SID: rec.SID, Rooms: rec.Rooms, Data: rec.Data}
	rp := replay{a: a, rooms: newRoomSet(rec.SID, rec.Rooms), max: maxMissed}
	after := from.pos
	if after == "-" {
		// Its node had not started reading the stream: where its events
		// begin is unknown, and a replay could not be known complete.
		return fmt.Errorf("%w: its offset has no stream position", adapter.ErrNoSession)
	}
	var ownSeen uint64
	err = r.ReadHistory(ctx, a.key(), after, func(e bus.HistoryEntry) bool {
		own := e.Instance == mine
		if own {
			ownSeen = max(ownSeen, e.Seq)
		}
		// Entries past this node's position reach the socket live, except
		// this node's own, which it delivered before the socket was here;
		// once past both, nothing more is needed.
		if !own && bus.ComparePositions(e.ID, here) > 0 {
			return ownSeen < ownSeq
		}
		if own && e.Seq > ownSeq {
			return true
		}
		if e.Instance == from.inst && e.Seq <= from.seq {
			return true // the client had it from its earlier node
		}
		o := offset{pos: e.ID, inst: from.inst, seq: from.seq, part: -1}
		if own && bus.ComparePositions(e.ID, here) > 0 {
			o = offset{pos: here, inst: mine, seq: e.Seq, part: -1}
		}
		return rp.add(e, o)
	})
	if err := rp.result(err); err != nil {
		return err
	}
	s.Rooms = rp.rooms.list()
	if err := attach(s, rp.missed); err != nil {
		return err
	}
	// What the client had from its earlier node but this node applies only
	// later (its earlier node was ahead in the stream, or published late) must
	// not reach it again.
	rule := skipRule{sid: rec.SID, pos: from.pos, until: time.Now().Add(st.keepFor(rec))}
	if from.inst != mine {
		rule.inst, rule.through = from.inst, from.seq
	}
	if from.pos == "-" || bus.ComparePositions(from.pos, here) <= 0 {
		rule.pos = ""
	}
	if rule.pos != "" || rule.through > 0 {
		a.rec.skip = append(a.rec.skip, rule)
	}
	return nil
}

// roomSet is a restored session's rooms while its missed messages are read.
type roomSet struct {
	sid   string
	rooms map[string]bool
}

func newRoomSet(sid string, rooms []string) *roomSet {
	r := &roomSet{sid: sid, rooms: make(map[string]bool, len(rooms)+1)}
	r.rooms[sid] = true
	for _, room := range rooms {
		r.rooms[room] = true
	}
	return r
}

// matches applies the adapter.Options rule: in any of Rooms (or Rooms empty)
// and in none of Except.
func (r *roomSet) matches(o adapter.Options) bool {
	for _, x := range o.Except {
		if r.rooms[x] {
			return false
		}
	}
	if len(o.Rooms) == 0 {
		return true
	}
	for _, x := range o.Rooms {
		if r.rooms[x] {
			return true
		}
	}
	return false
}

func (r *roomSet) apply(join bool, rooms []string) {
	for _, x := range rooms {
		if x == r.sid {
			continue
		}
		if join {
			r.rooms[x] = true
		} else {
			delete(r.rooms, x)
		}
	}
}

func (r *roomSet) list() []string {
	out := make([]string, 0, len(r.rooms))
	for x := range r.rooms {
		if x != r.sid {
			out = append(out, x)
		}
	}
	slices.Sort(out)
	return out
}

// lockRestore takes rec.mu (lockRecovery) once this node's own messages up to
// now are in Redis, to be read back; it returns an error without the lock
// when they do not get there within restoreSyncTimeout.
func (a *nspAdapter) lockRestore(ctx context.Context) error {
	a.lockRecovery()
	sctx, cancel := context.WithTimeout(ctx, restoreSyncTimeout)
	err := a.c.recall.Sync(sctx)
	cancel()
	if err != nil {
		a.rec.mu.Unlock()
		return fmt.Errorf("%w: this node's outbox did not reach Redis: %w", adapter.ErrNoSession, err)
	}
	return nil
}

// lockRecovery takes rec.mu for a restore, once every delivery of the
// namespace takes it: one that started without it (before the namespace was
// used for recovery) has returned.
func (a *nspAdapter) lockRecovery() {
	a.rec.used.Store(true)
	for a.rec.unlocked.Load() > 0 {
		time.Sleep(50 * time.Microsecond)
	}
	a.rec.mu.Lock()
	shared := &a.rec.applied
	if a.interest != nil {
		shared = &a.rec.appliedShared
		if m := a.rec.lastInbox.Load(); m != nil {
			a.rec.applied = laterPos(a.rec.applied, m.pos)
		}
	}
	if m := a.rec.lastShared.Load(); m != nil {
		*shared = laterPos(*shared, m.pos)
	}
}
