package socketio

import (
	"context"
	"slices"

	"github.com/durasock/durasock/adapter"
)

// roomListeners are the room life-cycle listeners of a namespace.
type roomListeners struct {
	create, del []func(room string)
	join, leave []func(room, id string)
}

// OnCreateRoom registers a listener called when a room of this namespace gets
// its first socket on this server. A socket's own room (named by its id) is a
// room too: it is created when the socket connects.
//
// Room listeners run in the order of the changes, one at a time, on a
// goroutine of the namespace (never under a lock of the socket or adapter, so
// they may call any method). They see the rooms of this server: as with the
// reference server, a cluster reports on each server the changes of its own
// sockets. Listeners of an OfFunc or OfRegexp parent see the changes of
// every namespace made from it.
func (n *Namespace) OnCreateRoom(h func(room string)) {
	n.mu.Lock()
	n.rooms.create = append(slices.Clip(n.rooms.create), h)
	n.mu.Unlock()
	n.observed.Store(true)
}

// OnDeleteRoom registers a listener called when the last socket of a room of
// this namespace on this server left it (see OnCreateRoom).
func (n *Namespace) OnDeleteRoom(h func(room string)) {
	n.mu.Lock()
	n.rooms.del = append(slices.Clip(n.rooms.del), h)
	n.mu.Unlock()
	n.observed.Store(true)
}

// OnJoinRoom registers a listener called when socket id joins a room (see
// OnCreateRoom).
func (n *Namespace) OnJoinRoom(h func(room, id string)) {
	n.mu.Lock()
	n.rooms.join = append(slices.Clip(n.rooms.join), h)
	n.mu.Unlock()
	n.observed.Store(true)
}

// OnLeaveRoom registers a listener called when socket id leaves a room, also
// when it disconnects (see OnCreateRoom).
func (n *Namespace) OnLeaveRoom(h func(room, id string)) {
	n.mu.Lock()
	n.rooms.leave = append(slices.Clip(n.rooms.leave), h)
	n.mu.Unlock()
	n.observed.Store(true)
}

// observesRooms reports whether room listeners exist.
func (n *Namespace) observesRooms() bool {
	return n.observed.Load() || (n.parent != nil && n.parent.observed.Load())
}

// roomChanged queues the room listeners of a change.
func (n *Namespace) roomChanged(c adapter.RoomChange) {
	n.roomRun.push(nil, false, 0, func() {
		for _, t := range []*Namespace{n.parent, n} {
			if t == nil {
				continue
			}
			t.mu.RLock()
			l := t.rooms
			t.mu.RUnlock()
			switch c.Kind {
			case adapter.RoomCreated:
				for _, h := range l.create {
					h(c.Room)
				}
			case adapter.RoomDeleted:
				for _, h := range l.del {
					h(c.Room)
				}
			case adapter.RoomJoined:
				for _, h := range l.join {
					h(c.Room, c.ID)
				}
			case adapter.RoomLeft:
				for _, h := range l.leave {
					h(c.Room, c.ID)
				}
			}
		}
	})
}

// LocalRooms returns the rooms of this namespace that sockets connected to
// this server are in (including sessions waiting for their client to recover),
// sorted, without the sockets' own rooms (named by their ids). For a parent
// namespace, the rooms of every namespace made from it.
func (n *Namespace) LocalRooms() []string {
	targets, err := n.targets()
	if err != nil {
		return nil
	}
	set := make(map[string]struct{})
	for _, t := range targets {
		t.mu.RLock()
		ids := make([]string, 0, len(t.sockets)+len(t.away))
		for id := range t.sockets {
			ids = append(ids, id)
		}
		for _, s := range t.away {
			ids = append(ids, s.id)
		}
		t.mu.RUnlock()
		for _, id := range ids {
			for _, r := range t.adapter.Rooms(id) {
				if r != id {
					set[r] = struct{}{}
				}
			}
		}
	}
	return sortedKeys(set)
}

// AllRooms returns the rooms of this namespace on every server, as LocalRooms
// does for this one: the rooms of the sockets FetchSockets finds. It is a
// cluster request, bounded by ctx.
func (n *Namespace) AllRooms(ctx context.Context) ([]string, error) {
	sockets, err := n.FetchSockets(ctx)
	set := make(map[string]struct{})
	for _, s := range sockets {
		for _, r := range s.Rooms {
			if r != s.ID {
				set[r] = struct{}{}
			}
		}
	}
	return sortedKeys(set), err
}

func sortedKeys(set map[string]struct{}) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// SetConcurrency lets the events of each socket of this namespace be handled
// by up to limit goroutines at once, in no particular order, instead of one at
// a time in the order the client sent them. While limit of them run, the
// socket's next event waits. An event with a Concurrent listener uses its own
// limit instead. limit < 2 restores the default. For a parent namespace it
// applies to every namespace made from it that has no limit of its own.
func (n *Namespace) SetConcurrency(limit int) {
	n.limit.Store(int32(max(0, min(limit, 1<<30))))
}

// concurrencyLimit is the namespace's limit, or its parent's.
func (n *Namespace) concurrencyLimit() int {
	if l := n.limit.Load(); l > 0 || n.parent == nil {
		return int(l)
	}
	return int(n.parent.limit.Load())
}
