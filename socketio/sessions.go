package socketio

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// restoreTimeout bounds the restore of a session kept by the adapter.
const restoreTimeout = 5 * time.Second

// sessionStore returns the adapter's session store when recovery is on and the
// adapter keeps sessions where every node can restore them (the cluster
// adapter on Redis streams), or nil.
func (n *Namespace) sessionStore() adapter.SessionStore {
	if n.srv.recovery == nil || n.adapter == nil {
		return nil
	}
	st, _ := n.adapter.(adapter.SessionStore)
	return st
}

// saveSession hands the socket's state to the session store, if any.
func (s *Socket) saveSession() {
	st := s.nsp.sessionStore()
	if st == nil || !s.Connected() {
		return
	}
	s.mu.Lock()
	pid := s.rs.pid
	var data json.RawMessage
	if s.extra != nil {
		data = s.extra.dataJSON
	}
	s.mu.Unlock()
	var rooms []string
	for _, r := range s.nsp.adapter.Rooms(s.id) {
		if r != s.id {
			rooms = append(rooms, r)
		}
	}
	st.SaveSession(adapter.Session{PID: pid, SID: s.id, Rooms: rooms, Data: data}, s.nsp.srv.recovery.MaxDisconnectionDuration)
}

// restoreRemote restores, into s, the session pid that another node (or an
// earlier process) kept in the adapter's session store, with the events the
// client missed after offset. It reports false, with a log line saying why,
// when the session cannot be restored exactly: the client then gets a new one.
func (n *Namespace) restoreRemote(st adapter.SessionStore, s *Socket, pid, offset string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), restoreTimeout)
	defer cancel()
	limit := n.srv.sendQueueSize()
	err := st.RestoreSession(ctx, pid, offset, n.srv.recovery.MaxMissedPackets, func(sess adapter.Session, missed []*parser.Encoded) error {
		// The missed events go to the send queue at once, behind the CONNECT
		// answer: more than it holds would cut the new connection.
		if msgs := 1 + messageCount(missed); msgs > limit {
			return fmt.Errorf("%w: %d missed messages exceed the send queue (%d)", adapter.ErrNoSession, msgs, limit)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed {
			return ErrDisconnected
		}
		n.mu.Lock()
		if n.removed {
			n.mu.Unlock()
			return errRemoved
		}
		s.id, s.rs.pid, s.recovered = sess.SID, pid, true
		n.sockets[s.id] = s
		n.mu.Unlock()
		if len(sess.Data) > 0 {
			x := s.extraLocked()
			x.data, x.dataJSON = sess.Data, sess.Data
		}
		s.holdLocked(connectPacket(n.name, s.id, pid), missed)
		n.adapter.Join(s.id, sess.Rooms...)
		s.keepHistoryLocked(missed)
		return nil
	})
	if err != nil {
		level := n.srv.log.Info
		if !errors.Is(err, adapter.ErrNoSession) && !errors.Is(err, ErrDisconnected) {
			level = n.srv.log.Warn
		}
		level("socketio: session not recovered; the client gets a new one", "namespace", n.name, "reason", err.Error())
		return false
	}
	s.saveSession()
	return true
}
