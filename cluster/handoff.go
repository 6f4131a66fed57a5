package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/parser"
)

// Cross-node recovery on a routed namespace: the handoff.
//
// On a routed namespace a client's history is its node's inbox: what the
// other nodes sent to that node's sockets, and this node's own recoverable
// emits, which a node also writes to its own inbox (never read back). Its
// offsets name
// that inbox (offset.part) and, for what emitters publish on the
// namespace's shared partition, a position there (offset.shared).
//
// Node B restoring a client whose offset names the inbox of node A (A gone,
// or the client's connection to it broke) cannot simply read A's inbox: every
// sender goes on routing the client's rooms to A (A's interest is kept while
// its sessions are) until it knows that B has them, and from then on to B.
// So B, before the client is there:
//
//  1. adds the client's rooms to its interest (localInterest.hold);
//  2. asks every node for its cut (kindCut, carrying that interest): each
//     applies the interest and then, holding routeState.pubMu alone (no
//     routing decision of its own in flight), takes the last sequence number
//     its outbox gave on A's inbox and on B's, lets its outbox reach the
//     broker, and answers them (kindCutAnswer). Its messages up to the first
//     were routed with A's interest: the client's are in A's inbox. Its
//     messages after the second were routed with B's: the client's are in
//     B's inbox;
//  3. waits until it has applied its inbox up to the tail it has once every
//     cut arrived: what any node routed to B up to its cut has been applied
//     here, so nothing up to a cut is still on its way to B's sockets;
//  4. under rec.mu (nothing of the namespace is delivered meanwhile), reads
//     A's inbox after the client's offset: each answering origin's messages
//     up to its cut, every message of the others (a crashed A, an origin
//     that no longer runs); then its own inbox, from where it stood at 2, the
//     messages past each answering origin's cut that it applied before the
//     client was there; then the shared partition (emitters), as for a
//     namespace that is not routed. Those are the missed events, in order
//     per origin, each once.
//
// A replayed message of A's inbox carries an offset in A's inbox (a restore
// from it does the handoff again); the others carry offsets in B's inbox, and
// the session record keeps B's cuts (sessionRecord.Cuts), so that a restore
// from an offset in B's inbox taken before B passed them skips what came from
// A. A live node other than A that does not answer within restoreCutTimeout
// makes the restore fail (the client gets a new session); A that does not
// answer is taken for gone.

// restoreCutTimeout bounds how long a restore waits for the first answer of
// every node to its cut; restoreFlushTimeout how long it then waits for a
// node that answered to say its outbox reached Redis.
const (
	restoreCutTimeout   = 1500 * time.Millisecond
	restoreFlushTimeout = 2 * time.Second
)

// cutAnswer is one node's cut.
type cutAnswer struct {
	old, new uint64 // its last seqs on the old inbox and on this node's
	flushed  bool   // its outbox reached Redis up to them
}

// cutWait is a restore of this node waiting for the cuts.
type cutWait struct {
	// answers are by process (two under one id, a misconfiguration the bus
	// reports, each answer for their own messages).
	answers map[instKey]cutAnswer
	wake    chan struct{}
}

// cutWaits are the restores of this node waiting for cuts, by request id,
// and the cut requests of other nodes waiting to be served.
type cutWaits struct {
	ids  atomic.Uint64
	mu   sync.Mutex
	wait map[uint64]*cutWait
	in   chan cutRequest
}

type cutRequest struct {
	from string
	inst uint64
	m    *message
}

// maxQueuedCuts bounds the cut requests waiting to be served; one that does
// not fit is dropped (the restoring node asks again).
const maxQueuedCuts = 256

// queueCut hands a cut request to cutLoop, so that the bus's goroutine does
// not wait for this node's routing decisions in flight.
func (c *Cluster) queueCut(from string, inst uint64, m *message) {
	r := c.route
	if r == nil {
		return
	}
	select {
	case r.cuts.in <- cutRequest{from, inst, m}:
	default:
	}
}

// cutLoop serves the cut requests of other nodes until ctx ends.
func (c *Cluster) cutLoop(ctx context.Context) {
	defer c.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case q := <-c.route.cuts.in:
			c.serveCut(ctx, q.from, q.inst, q.m)
		}
	}
}

// serveCut applies the interest of node from (instance inst) that m carries
// and answers with this node's cut at once, then again, flagged flushed, once
// its outbox reached the broker: the first says this node is alive, the
// second that the restoring node can read what it routed up to the cut.
func (c *Cluster) serveCut(ctx context.Context, from string, inst uint64, m *message) {
	r := c.route
	if from == "" || from == c.id {
		return
	}
	if _, ok := c.applyInterest(from, inst, m); !ok {
		return // a node that said goodbye
	}
	old, own := int(min(m.cutPart, 1<<31)), r.bus.InboxOf(from)
	r.pubMu.Lock()
	cutOld, cutNew := r.bus.LastSeqOn(old), r.bus.LastSeqOn(own)
	r.pubMu.Unlock()
	answer := func(flags byte) *message {
		return &message{kind: kindCutAnswer, flags: flags, reqID: m.reqID, instance: inst, cutOld: cutOld, cutNew: cutNew}
	}
	c.control(from, answer(0))
	// The confirmation waits for the outbox, the next request's first answer
	// does not. (cutLoop runs under c.wg: adding to it here is safe.)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		sctx, cancel := context.WithTimeout(ctx, restoreFlushTimeout)
		err := r.bus.Sync(sctx)
		cancel()
		if err != nil {
			// The restoring node gives its client a new session.
			c.logLimited("cluster: a cut for a session restored on another node not confirmed: this node's outbox did not reach Redis",
				slog.String("peer", from), slog.Any("error", err))
			return
		}
		c.control(from, answer(flagFlushed))
	}()
}

// cutAnswered takes a node's answer to a cut of this process.
func (c *Cluster) cutAnswered(from string, inst uint64, m *message) {
	r := c.route
	if r == nil || m.instance != r.bus.Instance() {
		return // another process under this node's id asked
	}
	r.cuts.mu.Lock()
	w := r.cuts.wait[m.reqID]
	if w != nil {
		k := instKey{from, inst}
		a := cutAnswer{old: m.cutOld, new: m.cutNew, flushed: m.flags&flagFlushed != 0}
		if prev, ok := w.answers[k]; !ok || !prev.flushed {
			w.answers[k] = a
		}
	}
	r.cuts.mu.Unlock()
	if w != nil {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// askCuts sends this node's interest to every node, asking for its cut
// against inbox partition part, and returns the answers, by the answering
// process's instance, once every live node answered flushed. A live node
// that did not answer at all within restoreCutTimeout is taken for gone if it
// is home, the node whose inbox the client's offset names (it crashed, or is
// cut off: docs/SCALING.md), and fails the restore otherwise; one that
// answered but did not say flushed within restoreFlushTimeout more fails it
// too.
func (c *Cluster) askCuts(ctx context.Context, part int, home string) (cuts map[uint64]cutAnswer, homeAnswered bool, err error) {
	r := c.route
	id := r.cuts.ids.Add(1)
	w := &cutWait{answers: make(map[instKey]cutAnswer), wake: make(chan struct{}, 1)}
	r.cuts.mu.Lock()
	if r.cuts.wait == nil {
		r.cuts.wait = make(map[uint64]*cutWait)
	}
	r.cuts.wait[id] = w
	r.cuts.mu.Unlock()
	defer func() {
		r.cuts.mu.Lock()
		delete(r.cuts.wait, id)
		r.cuts.mu.Unlock()
	}()
	m := c.interestMessage()
	m.kind, m.reqID, m.cutPart = kindCut, id, uint64(part)
	payload := m.marshal()
	send := func() {
		sctx, cancel := context.WithTimeout(ctx, c.opts.HeartbeatInterval)
		defer cancel()
		// A failure (the bus reconnecting) is made good by the next round.
		_ = c.bus.Send(sctx, "", payload)
	}
	sentAt := time.Now()
	send()
	first := sentAt.Add(restoreCutTimeout)
	flushBy := first.Add(restoreFlushTimeout)
	delay := helloFirstDelay
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		r.cuts.mu.Lock()
		heard, flushed := make(map[string]bool), make(map[string]bool)
		for k, a := range w.answers {
			heard[k.node] = true
			if a.flushed {
				flushed[k.node] = true
			}
		}
		r.cuts.mu.Unlock()
		var silent, unflushed []string
		nodes := c.liveNodes()
		for node := range heard {
			if !slices.Contains(nodes, node) {
				nodes = append(nodes, node) // answered, not live by heartbeat yet
			}
		}
		for _, node := range nodes {
			switch {
			case flushed[node]:
			case heard[node]:
				unflushed = append(unflushed, node)
			default:
				silent = append(silent, node)
			}
		}
		now := time.Now()
		// Home, silent, is gone unless heard from since the request.
		gone := len(silent) == 1 && silent[0] == home && now.After(first) && !c.lastHeard(home).After(sentAt)
		if len(unflushed) == 0 && (len(silent) == 0 || gone) {
			break
		}
		if now.After(flushBy) || (now.After(first) && len(silent) > 0 && !gone) {
			slices.Sort(silent)
			slices.Sort(unflushed)
			return nil, false, fmt.Errorf("%w: no cut from %v, none confirmed by %v", adapter.ErrNoSession, silent, unflushed)
		}
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: waiting for the cuts: %w", adapter.ErrNoSession, ctx.Err())
		case <-w.wake:
		case <-t.C:
			send()
			delay = min(2*delay, c.opts.HeartbeatInterval, awaitMaxResend)
			t.Reset(delay)
		}
	}
	r.cuts.mu.Lock()
	defer r.cuts.mu.Unlock()
	out := make(map[uint64]cutAnswer, len(w.answers))
	for k, a := range w.answers {
		if a.flushed {
			out[k.inst] = a
			homeAnswered = homeAnswered || k.node == home
		}
	}
	return out, homeAnswered, nil
}

// lastHeard is when a direct message of node id last arrived (not its beats
// in the membership record, read at this node's pace, which may show a
// crashed node's last beat after the crash); zero when none.
func (c *Cluster) lastHeard(id string) time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.direct[id]
}

// recordCut is a cut a session record keeps: on partition Part, the messages
// of instance Inst (hex) with seqs up to Seq reached the client another way.
type recordCut struct {
	Part int    `json:"part"`
	Inst string `json:"inst"`
	Seq  uint64 `json:"seq"`
}

// cutsOn returns the cuts of cuts on partition part, by instance.
func cutsOn(cuts []recordCut, part int) map[uint64]uint64 {
	out := make(map[uint64]uint64)
	for _, k := range cuts {
		if k.Part != part {
			continue
		}
		if inst, err := strconv.ParseUint(k.Inst, 16, 64); err == nil {
			out[inst] = max(out[inst], k.Seq)
		}
	}
	return out
}

// inboxPosLocked is how far this routed namespace has applied its node's
// inbox; sharedPosLocked the shared partition. rec.mu is held.
func (a *nspAdapter) inboxPosLocked() string {
	return laterPos(a.c.recall.PositionOn(a.c.route.inbox), a.rec.applied)
}

func (a *nspAdapter) sharedPosLocked() string {
	return laterPos(a.c.recall.Position(a.key()), a.rec.appliedShared)
}

func laterPos(p, q string) string {
	if q != "" && (p == "" || bus.ComparePositions(q, p) > 0) {
		return q
	}
	return p
}

// handoffRecord is what a session record keeps of the session's last restore
// from another node's inbox: an offset of that inbox is the client's only
// while the client has not received all that the restore replayed from it.
type handoffRecord struct {
	Part int    `json:"part"` // the earlier inbox
	Last string `json:"last"` // the offset of the last event replayed from it (the client's own when none)
	// Resume is the offset in this node's inbox that stands for Last: its
	// position when it asked for the cuts, its own seq, and the client's
	// position in the shared partition.
	Resume string `json:"resume"`
}

// restoreRouted restores session rec (pid) of a routed namespace from offset
// from: see the top of this file. attach and maxMissed are RestoreSession's.
func (a *nspAdapter) restoreRouted(ctx context.Context, rec *sessionRecord, pid string, from offset, maxMissed int, attach func(adapter.Session, []*parser.Encoded) error) error {
	c, r, rt := a.c, a.c.recall, a.c.route
	if from.part < 0 || from.pos == "-" || from.shared == "-" {
		return fmt.Errorf("%w: its offset names no inbox position", adapter.ErrNoSession)
	}
	if n := rt.bus.Partitions(); from.part >= n {
		return fmt.Errorf("%w: its offset names partition %d of %d", adapter.ErrNoSession, from.part, n)
	}
	sent := from.String() // the client's, before it stands for another
	if rec.Node != "" && from.part != rt.bus.InboxOf(rec.Node) {
		// An offset of the inbox its session was restored from: the client
		// has what was replayed from it only if it has the last of those.
		h := rec.Handoff
		if h == nil || h.Part != from.part || h.Last != from.String() {
			return fmt.Errorf("%w: its offset is older than the session's last move", adapter.ErrNoSession)
		}
		resume, ok := parseOffset(h.Resume)
		if !ok || resume.part < 0 {
			return fmt.Errorf("%w: unreadable session record", adapter.ErrNoSession)
		}
		from = resume
	}
	mine, myPart := r.Instance(), rt.inbox
	// The rooms the client is in, those joined while it was away included.
	held := newRoomSet(rec.SID, rec.Rooms)
	err := r.ReadHistoryOn(ctx, from.part, from.pos, func(e bus.HistoryEntry) bool {
		if m, err := decodeMessage(e.Payload); err == nil && m.nsp == a.name && m.kind == kindAddSockets && held.matches(m.options()) {
			held.apply(true, m.target)
		}
		return true
	})
	if err != nil {
		return (&replay{}).result(err)
	}
	holdRooms := held.list()
	joined := len(holdRooms) > len(newRoomSet(rec.SID, rec.Rooms).list())
	a.interest.hold(holdRooms)
	defer a.interest.release(holdRooms)
	a.rec.mu.Lock()
	h0 := a.inboxPosLocked()
	a.rec.mu.Unlock()
	if h0 == "" {
		return fmt.Errorf("%w: this node has not read its inbox yet", adapter.ErrNoSession)
	}
	cuts, homeAnswered, err := c.askCuts(ctx, from.part, rec.Node)
	if err != nil {
		return err
	}
	if joined && !homeAnswered {
		// Its node, gone, did not announce them: what was sent to them
		// since may be in no inbox.
		return fmt.Errorf("%w: it joined rooms while away and its node is gone", adapter.ErrNoSession)
	}
	// Everything up to a cut that came here is applied before the client is.
	var tail string
	if err := r.ReadHistoryOn(ctx, myPart, h0, func(e bus.HistoryEntry) bool {
		tail = e.ID
		return true
	}); err != nil {
		return fmt.Errorf("%w: reading this node's inbox: %w", adapter.ErrNoSession, err)
	}
	if tail != "" {
		wctx, cancel := context.WithTimeout(ctx, restoreSyncTimeout)
		err := a.awaitInbox(wctx, tail)
		cancel()
		if err != nil {
			return fmt.Errorf("%w: this node's inbox not applied up to the cuts: %w", adapter.ErrNoSession, err)
		}
	}

	if err := a.lockRestore(ctx); err != nil {
		return err
	}
	defer a.rec.mu.Unlock()
	here, hereShared, ownSeq := a.inboxPosLocked(), a.sharedPosLocked(), r.LastSeqOn(myPart)
	rp := replay{a: a, rooms: newRoomSet(rec.SID, rec.Rooms), max: maxMissed}
	had := cutsOn(rec.Cuts, from.part)

	// The client's earlier inbox: each answering origin up to its cut.
	last := sent
	err = r.ReadHistoryOn(ctx, from.part, from.pos, func(e bus.HistoryEntry) bool {
		if e.Instance == from.inst && e.Seq <= from.seq {
			return true // the client had it from its earlier node
		}
		if s, ok := had[e.Instance]; ok && e.Seq <= s {
			return true
		}
		if k, ok := cuts[e.Instance]; ok && e.Seq > k.old && e.Instance != mine {
			return true // routed here, with this node's interest
		}
		o := offset{pos: e.ID, inst: from.inst, seq: from.seq, part: from.part, shared: from.shared}
		n := len(rp.missed)
		ok := rp.add(e, o)
		if len(rp.missed) > n {
			last = o.String()
		}
		return ok
	})
	if err = rp.result(err); err != nil {
		return err
	}
	// This node's inbox: what came past the cuts before the client was here.
	// (When the earlier inbox is this one, the read above left out exactly
	// these.)
	floors := make(map[uint64]uint64)
	for inst, k := range cuts {
		floors[inst] = k.new
	}
	err = r.ReadHistoryOn(ctx, myPart, h0, func(e bus.HistoryEntry) bool {
		if bus.ComparePositions(e.ID, here) > 0 {
			return false
		}
		if e.Instance == mine {
			return true
		}
		k, ok := cuts[e.Instance]
		if !ok {
			// An origin that did not answer: the client has its messages
			// from the earlier inbox.
			floors[e.Instance] = max(floors[e.Instance], e.Seq)
			return true
		}
		if e.Seq <= k.new {
			return true
		}
		return rp.add(e, offset{pos: e.ID, inst: mine, seq: ownSeq, part: myPart, shared: from.shared})
	})
	if err = rp.result(err); err != nil {
		return err
	}
	// The shared partition: emitters' messages, as without routing.
	if hereShared == "" {
		return fmt.Errorf("%w: this node has not read the namespace's partition yet", adapter.ErrNoSession)
	}
	err = r.ReadHistory(ctx, a.key(), from.shared, func(e bus.HistoryEntry) bool {
		if bus.ComparePositions(e.ID, hereShared) > 0 {
			return false
		}
		return rp.add(e, offset{pos: here, inst: mine, seq: ownSeq, part: myPart, shared: e.ID})
	})
	if err = rp.result(err); err != nil {
		return err
	}

	// A room the client joined (from any of the three) that this node did
	// not hold was routed elsewhere, or nowhere, past the cuts.
	for x := range rp.rooms.rooms {
		if !held.rooms[x] {
			return fmt.Errorf("%w: it joined room %q while its session was restored", adapter.ErrNoSession, x)
		}
	}
	s := adapter.Session{PID: pid, SID: rec.SID, Rooms: rp.rooms.list(), Data: rec.Data}
	if err := attach(s, rp.missed); err != nil {
		return err
	}
	// What this node applies of the shared partition after the client's
	// earlier node had it must not reach the client again.
	if bus.ComparePositions(from.shared, hereShared) > 0 {
		a.rec.skip = append(a.rec.skip, skipRule{sid: rec.SID, pos: from.shared, until: time.Now().Add(c.sessions.keepFor(rec))})
	}
	// The cuts, and the handoff, go with the session's record.
	kept := make([]recordCut, 0, len(floors)+len(rec.Cuts))
	for _, k := range rec.Cuts {
		if k.Part == from.part && k.Part != myPart {
			kept = append(kept, k)
		}
	}
	for inst, s := range cutsOn(rec.Cuts, myPart) {
		floors[inst] = max(floors[inst], s)
	}
	for inst, seq := range floors {
		kept = append(kept, recordCut{Part: myPart, Inst: strconv.FormatUint(inst, 16), Seq: seq})
	}
	var h *handoffRecord
	if lo, _ := parseOffset(last); lo.part >= 0 && lo.part != myPart {
		h = &handoffRecord{Part: lo.part, Last: last,
			Resume: offset{pos: h0, inst: mine, seq: ownSeq, part: myPart, shared: from.shared}.String()}
	}
	c.sessions.setCarry(pid, carry{cuts: kept, handoff: h})
	return nil
}

// awaitInbox returns once this namespace has applied its node's inbox up to
// pos, or ctx's error.
func (a *nspAdapter) awaitInbox(ctx context.Context, pos string) error {
	for {
		a.rec.mu.Lock()
		at := a.inboxPosLocked()
		a.rec.mu.Unlock()
		if at != "" && bus.ComparePositions(at, pos) >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// replay collects the missed events of a restore.
type replay struct {
	a      *nspAdapter
	rooms  *roomSet
	max    int
	missed []*parser.Encoded
	bad    error
}

// add takes history entry e, read for the restored socket, with the offset
// its event carries; false ends the read (bad says why).
func (rp *replay) add(e bus.HistoryEntry, off offset) bool {
	m, err := decodeMessage(e.Payload)
	if err != nil || m.nsp != rp.a.name {
		return true
	}
	switch m.kind {
	case kindAddSockets, kindDelSockets:
		if rp.rooms.matches(m.options()) {
			rp.rooms.apply(m.kind == kindAddSockets, m.target)
		}
	case kindDisconnect:
		if rp.rooms.matches(m.options()) {
			rp.bad = fmt.Errorf("%w: disconnected by the server while away", adapter.ErrNoSession)
			return false
		}
	case kindBroadcast:
		if !recoverableHere(m) || !rp.rooms.matches(m.options()) {
			return true
		}
		if len(rp.missed) >= rp.max {
			rp.bad = fmt.Errorf("%w: more than %d missed events", adapter.ErrNoSession, rp.max)
			return false
		}
		p := &parser.Packet{Type: m.ptype, Namespace: rp.a.name, Data: m.data, Attachments: m.attachments}
		rp.missed = append(rp.missed, parser.Encode(withOffset(p, off.String())))
	}
	return true
}

// result is the outcome of a read that ended with err.
func (rp *replay) result(err error) error {
	if rp.bad != nil {
		return rp.bad
	}
	if err != nil {
		if errors.Is(err, bus.ErrHistoryTrimmed) {
			return fmt.Errorf("%w: %w", adapter.ErrNoSession, err)
		}
		return fmt.Errorf("%w: reading the history: %w", adapter.ErrNoSession, err)
	}
	return nil
}
