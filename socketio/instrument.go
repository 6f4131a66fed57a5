package socketio

import (
	"slices"
	"strings"
)

// Namespaces returns the namespaces that exist on this server now: those made
// by Of and those dynamic parents created, sorted by name. Parents themselves
// (OfFunc, OfRegexp) are not listed. It is meant for instrumentation, such as
// package admin.
func (s *Server) Namespaces() []*Namespace {
	s.mu.RLock()
	out := make([]*Namespace, 0, len(s.nsps))
	for _, n := range s.nsps {
		out = append(out, n)
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Namespace) int { return strings.Compare(a.name, b.name) })
	return out
}

// EngineID returns the id of the Engine.IO session the socket uses: the
// sockets of one client connection, one per namespace, share it.
func (s *Socket) EngineID() string {
	if s.conn == nil || s.conn.t == nil {
		return ""
	}
	return s.conn.t.ID()
}
