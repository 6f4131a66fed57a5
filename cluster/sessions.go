package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
)

// The session store keeps, in the bus's key-value store (Redis), the state of
// every recoverable session of this node: written shortly after it changes,
// with a time to live that this node keeps extending while the client is
// connected. When the connection breaks the record is written a last time with
// the session's own time to live (MaxDisconnectionDuration); when the node
// dies the record outlives it by at most that plus sessionSlack. Any node can
// take it (once) to restore the session.

const (
	// sessionFlushEvery is how often changed sessions are written.
	sessionFlushEvery = 100 * time.Millisecond
	// sessionSlack is added to the time to live of a connected session's record,
	// and sessionRefreshEvery is how often it is extended.
	sessionSlack        = time.Minute
	sessionRefreshEvery = 20 * time.Second
	// sessionWriteTimeout bounds one write of the store.
	sessionWriteTimeout = 5 * time.Second
)

// sessionRecord is what the store keeps of a session, as JSON.
type sessionRecord struct {
	SID   string          `json:"sid"`
	Nsp   string          `json:"nsp"`
	Rooms []string        `json:"rooms,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	// Base is the offset of the session's start: what a client that received
	// no event recovers from.
	Base string `json:"base"`
	// KeepMS is how long the session stays restorable after its connection
	// breaks.
	KeepMS int64 `json:"keep_ms"`
	// Node is the node that keeps the session (whose inbox its offsets
	// name, on a routed namespace).
	Node string `json:"node,omitempty"`
	// Cuts are, on a routed namespace, the messages the client got from an
	// earlier node's inbox when it was restored on this node (handoff.go).
	Cuts []recordCut `json:"cuts,omitempty"`
	// Handoff is, on a routed namespace, the last restore of the session
	// from another node's inbox (handoff.go).
	Handoff *handoffRecord `json:"handoff,omitempty"`
}

type liveSession struct {
	rec   sessionRecord
	dirty bool
	// away: the connection broke; written once more with the session's own
	// time to live, then forgotten. drop: deleted at the next flush.
	away, drop bool
}

// sessionStore writes the records of this node's sessions.
type sessionStore struct {
	c  *Cluster
	kv bus.KeyValue

	mu   sync.Mutex
	live map[string]*liveSession // by pid
	wake chan struct{}
	// carried are the carries of sessions not live here (setCarry).
	carried map[string]carry
}

// carry is what a session record keeps across the times this node
// recreates it (a restore here, a client back after its record was written
// as away): the cuts and the handoff of its last restore (handoff.go).
type carry struct {
	cuts    []recordCut
	handoff *handoffRecord
}

// maxCarried bounds sessionStore.carried.
const maxCarried = 4096

// setCarry keeps k for session pid until its record is written again.
func (st *sessionStore) setCarry(pid string, k carry) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if ls := st.live[pid]; ls != nil {
		ls.rec.Cuts, ls.rec.Handoff, ls.dirty = k.cuts, k.handoff, true
		return
	}
	st.carryLocked(pid, k)
}

// carryLocked keeps k for pid; st.mu is held.
func (st *sessionStore) carryLocked(pid string, k carry) {
	if len(k.cuts) == 0 && k.handoff == nil {
		delete(st.carried, pid)
		return
	}
	if st.carried == nil {
		st.carried = make(map[string]carry)
	}
	if _, ok := st.carried[pid]; !ok && len(st.carried) >= maxCarried {
		for old := range st.carried { // one out, any: a session long gone, most likely
			delete(st.carried, old)
			break
		}
	}
	st.carried[pid] = k
}

func sessionKey(pid string) string { return "session:" + pid }

// startSessions enables cross-node recovery when the bus can do it.
func (c *Cluster) startSessions(ctx context.Context) {
	r, ok := c.bus.(recallBus)
	if !ok || !r.KeepsHistory() {
		return
	}
	kv, err := r.KeyValue()
	if err != nil {
		return
	}
	c.recall = r
	c.sessions = &sessionStore{c: c, kv: kv, live: make(map[string]*liveSession), wake: make(chan struct{}, 1)}
	c.wg.Add(1)
	go c.sessions.run(ctx)
}

func (st *sessionStore) keepFor(rec *sessionRecord) time.Duration {
	return time.Duration(rec.KeepMS) * time.Millisecond
}

// run writes changed records and extends the live ones until ctx ends, then
// writes what changed one last time.
func (st *sessionStore) run(ctx context.Context) {
	defer st.c.wg.Done()
	flush := time.NewTicker(sessionFlushEvery)
	defer flush.Stop()
	refresh := time.NewTicker(sessionRefreshEvery)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), sessionWriteTimeout)
			st.flush(fctx)
			cancel()
			return
		case <-flush.C:
			st.flush(ctx)
		case <-refresh.C:
			st.refresh(ctx)
		}
	}
}

// flush writes the records that changed, and deletes the dropped ones.
func (st *sessionStore) flush(ctx context.Context) {
	type job struct {
		pid  string
		rec  sessionRecord
		ttl  time.Duration
		drop bool
	}
	var jobs []job
	st.mu.Lock()
	for pid, s := range st.live {
		if !s.dirty {
			continue
		}
		s.dirty = false
		j := job{pid: pid, rec: s.rec, ttl: st.keepFor(&s.rec) + sessionSlack, drop: s.drop}
		if s.away {
			j.ttl = st.keepFor(&s.rec)
		}
		if s.away || s.drop {
			delete(st.live, pid)
		}
		if s.away {
			// Back here later (not restored elsewhere), it is recreated.
			st.carryLocked(pid, carry{cuts: s.rec.Cuts, handoff: s.rec.Handoff})
		}
		jobs = append(jobs, j)
	}
	st.mu.Unlock()
	for _, j := range jobs {
		if j.drop {
			wctx, cancel := context.WithTimeout(ctx, sessionWriteTimeout)
			if err := st.kv.DeleteValue(wctx, sessionKey(j.pid)); err != nil && ctx.Err() == nil {
				st.c.logLimited("cluster: ended session not deleted; it expires by itself", slog.Any("error", err))
			}
			cancel()
			continue
		}
		st.put(ctx, j.pid, &j.rec, j.ttl)
	}
}

func (st *sessionStore) refresh(ctx context.Context) {
	st.mu.Lock()
	keys := make([]string, 0, len(st.live))
	var ttl time.Duration
	for pid, s := range st.live {
		if s.away || s.drop {
			continue
		}
		keys = append(keys, sessionKey(pid))
		ttl = max(ttl, st.keepFor(&s.rec)+sessionSlack)
	}
	st.mu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, sessionWriteTimeout)
	defer cancel()
	if err := st.kv.ExtendValues(wctx, keys, ttl); err != nil && ctx.Err() == nil {
		st.c.logLimited("cluster: sessions not extended; they stay restorable until their last time to live",
			slog.Int("sessions", len(keys)), slog.Any("error", err))
	}
}

func (st *sessionStore) put(ctx context.Context, pid string, rec *sessionRecord, ttl time.Duration) {
	b, err := json.Marshal(rec)
	if err != nil {
		st.c.logLimited("cluster: session not stored", slog.Any("error", err))
		return
	}
	wctx, cancel := context.WithTimeout(ctx, sessionWriteTimeout)
	defer cancel()
	if err := st.kv.PutValue(wctx, sessionKey(pid), b, ttl); err != nil && ctx.Err() == nil {
		st.c.logLimited("cluster: session not stored; it cannot be restored on another node until it is",
			slog.Any("error", err))
		st.mu.Lock()
		if s := st.live[pid]; s != nil {
			s.dirty = true // again at the next flush
		}
		st.mu.Unlock()
	}
}

// take removes and returns the record of pid.
func (st *sessionStore) take(ctx context.Context, pid string) (*sessionRecord, error) {
	b, err := st.kv.TakeValue(ctx, sessionKey(pid))
	if err != nil {
		return nil, fmt.Errorf("%w: the session store: %w", adapter.ErrNoSession, err)
	}
	if b == nil {
		return nil, nil
	}
	var rec sessionRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("%w: unreadable record: %w", adapter.ErrNoSession, err)
	}
	return &rec, nil
}

// SaveSession implements adapter.SessionStore.
func (a *nspAdapter) SaveSession(s adapter.Session, keep time.Duration) {
	st := a.c.sessions
	if st == nil {
		return
	}
	a.rec.used.Store(true)
	a.rec.noteKeep(keep)
	st.mu.Lock()
	_, known := st.live[s.PID]
	st.mu.Unlock()
	var base string
	if !known {
		// The start of the session: what it recovers from when it received no
		// event. (Not under st.mu: RestoreSession holds rec.mu, then st's.)
		a.rec.mu.Lock()
		base = a.currentOffset("")
		a.rec.mu.Unlock()
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	ls := st.live[s.PID]
	if ls == nil || ls.drop {
		k := st.carried[s.PID]
		delete(st.carried, s.PID)
		ls = &liveSession{rec: sessionRecord{Base: base, Cuts: k.cuts, Handoff: k.handoff}}
		st.live[s.PID] = ls
	}
	ls.away = false
	ls.rec.SID, ls.rec.Nsp, ls.rec.Data, ls.rec.KeepMS, ls.rec.Node = s.SID, a.name, s.Data, keep.Milliseconds(), a.c.id
	ls.rec.Rooms = slices.Clone(s.Rooms)
	ls.dirty = true
}

// SessionAway implements adapter.SessionStore: the record is written once
// more, at the next flush, with the session's own time to live, and no longer
// extended.
func (a *nspAdapter) SessionAway(pid string, keep time.Duration) {
	var rooms []string
	found := false
	a.withLiveSession(pid, func(ls *liveSession) {
		ls.rec.KeepMS = keep.Milliseconds()
		ls.away, ls.dirty = true, true
		// With the rooms its stand-in is in: those another node made it
		// join (socketsJoin) no SaveSession reported.
		for _, r := range a.local.Rooms(ls.rec.SID) {
			if r != ls.rec.SID && !slices.Contains(ls.rec.Rooms, r) {
				ls.rec.Rooms = append(ls.rec.Rooms, r)
			}
		}
		rooms, found = slices.Clone(ls.rec.Rooms), true
	})
	if found && a.interest != nil {
		// Routed: its rooms stay this node's interest while it is kept.
		a.interest.keepRooms(a, rooms, keep)
	}
}

// DropSession implements adapter.SessionStore: the record is deleted at the
// next flush, if this node still owns the session.
func (a *nspAdapter) DropSession(pid string) {
	a.withLiveSession(pid, func(ls *liveSession) { ls.drop, ls.dirty = true, true })
	if st := a.c.sessions; st != nil {
		st.mu.Lock()
		delete(st.carried, pid)
		st.mu.Unlock()
	}
}

// withLiveSession calls f with the live session pid under the store's lock,
// if the cluster stores sessions and this node has that one.
func (a *nspAdapter) withLiveSession(pid string, f func(*liveSession)) {
	st := a.c.sessions
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if ls := st.live[pid]; ls != nil {
		f(ls)
	}
}

var _ adapter.SessionStore = (*nspAdapter)(nil)
