package socketio

import (
	"slices"
	"sync/atomic"

	"github.com/durasock/durasock/parser"
)

// EventMiddleware sees every event a client sends to a socket before its
// listeners do (Socket.Use). An error refuses the event: no OnAny or event
// listener sees it, the socket's OnError handlers get the error, and when the
// client asked for an acknowledgement it gets one with the error as its only
// argument, {"message": err.Error()} (or, for a *ConnectError, {"message":
// Message, "data": Data}). A middleware may change e.Args before the listeners
// see them.
type EventMiddleware func(e *Event) error

// ListenerOption configures a listener registered with Socket.On.
type ListenerOption func(*listener)

// Concurrent lets the event's listeners run on goroutines of their own, at
// most limit of them at once for one socket, instead of one event after the
// other in the order the client sent them. While limit of them run, the next
// event of the socket waits (and with it the socket's later events), which
// bounds the goroutines a client can make the server start. The limit of the
// first listener of an event registered with Concurrent is the event's; limit
// < 2 leaves the listener in order.
func Concurrent(limit int) ListenerOption {
	return func(l *listener) { l.limit = limit }
}

// listener is one registered handler; id tells it apart for removal, since
// functions cannot be compared.
type listener struct {
	id    uint64
	h     func(*Event)
	limit int // > 1: the event runs concurrently, at most limit at once
}

var listenerIDs atomic.Uint64

func newListener(h func(*Event)) listener {
	return listener{id: listenerIDs.Add(1), h: h}
}

// listenerTable holds a socket's listeners by event: a slice searched in
// order while there are few events (most sockets listen to a handful, and a
// map costs a few hundred bytes per socket), a map beyond fewEvents. Its
// lists are replaced, never changed in place, so that a caller may keep one
// outside the socket's lock.
type listenerTable struct {
	few  []eventListeners
	many map[string][]listener
}

type eventListeners struct {
	event string
	list  []listener
}

const fewEvents = 8

func (t *listenerTable) get(event string) []listener {
	if t.many != nil {
		return t.many[event]
	}
	for i := range t.few {
		if t.few[i].event == event {
			return t.few[i].list
		}
	}
	return nil
}

// set makes list the listeners of event; an empty list removes the event.
func (t *listenerTable) set(event string, list []listener) {
	if t.many != nil {
		if len(list) == 0 {
			delete(t.many, event)
		} else {
			t.many[event] = list
		}
		return
	}
	for i := range t.few {
		if t.few[i].event != event {
			continue
		}
		if len(list) == 0 {
			t.few = slices.Delete(t.few, i, i+1)
			if len(t.few) == 0 {
				t.few = nil
			}
		} else {
			t.few[i].list = list
		}
		return
	}
	if len(list) == 0 {
		return
	}
	if len(t.few) < fewEvents {
		t.few = append(t.few, eventListeners{event: event, list: list})
		return
	}
	t.many = make(map[string][]listener, len(t.few)+1)
	for _, e := range t.few {
		t.many[e.event] = e.list
	}
	t.many[event] = list
	t.few = nil
}

// without returns list without the listener id, as a new slice: readers hold
// the old one outside the lock.
func without(list []listener, id uint64) []listener {
	i := slices.IndexFunc(list, func(l listener) bool { return l.id == id })
	if i < 0 {
		return list
	}
	out := make([]listener, 0, len(list)-1)
	out = append(out, list[:i]...)
	return append(out, list[i+1:]...)
}

// On registers a listener of event. Every listener of an event runs, in the
// order registered; the returned function removes this one (Off removes them
// all). Listeners of a socket run one at a time, in the order its client sent
// the events, unless Concurrent (or Namespace.SetConcurrency) says otherwise.
func (s *Socket) On(event string, h func(*Event), opts ...ListenerOption) (off func()) {
	l := newListener(h)
	for _, o := range opts {
		o(&l)
	}
	return s.addListener(event, l)
}

func (s *Socket) addListener(event string, l listener) (off func()) {
	s.mu.Lock()
	s.handlers.set(event, append(slices.Clip(s.handlers.get(event)), l))
	s.mu.Unlock()
	return func() { s.removeListener(event, l.id) }
}

func (s *Socket) removeListener(event string, id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers.set(event, without(s.handlers.get(event), id))
}

// Once registers a listener of event that runs for the next such event only.
func (s *Socket) Once(event string, h func(*Event), opts ...ListenerOption) (off func()) {
	var fired atomic.Bool
	l := newListener(nil)
	l.h = func(e *Event) {
		if fired.CompareAndSwap(false, true) {
			s.removeListener(event, l.id)
			h(e)
		}
	}
	for _, o := range opts {
		o(&l)
	}
	return s.addListener(event, l)
}

// Off removes every listener of event.
func (s *Socket) Off(event string) {
	s.mu.Lock()
	s.handlers.set(event, nil)
	s.mu.Unlock()
}

// ListenerCount returns the number of listeners of event.
func (s *Socket) ListenerCount(event string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.handlers.get(event))
}

// OnAny registers a listener called for every event the client sends, before
// the event's own listeners, after those registered earlier. The returned
// function removes it.
func (s *Socket) OnAny(h func(*Event)) (off func()) { return s.addAny(&s.extraField().anyIn, h, false) }

// PrependAny is OnAny placing the listener before those registered earlier.
func (s *Socket) PrependAny(h func(*Event)) (off func()) {
	return s.addAny(&s.extraField().anyIn, h, true)
}

// OffAny removes every OnAny and PrependAny listener.
func (s *Socket) OffAny() {
	s.mu.Lock()
	if s.extra != nil {
		s.extra.anyIn = nil
	}
	s.mu.Unlock()
}

// OnAnyOutgoing registers a listener called for every event sent to the
// client: by Emit, EmitWithAck, or a broadcast that reaches this socket from
// this server or another. It runs on the sending goroutine, after the event
// was queued, and must not block; e.Ack is not available. With connection
// state recovery the event's last argument is its recovery offset. The
// returned function removes it.
func (s *Socket) OnAnyOutgoing(h func(*Event)) (off func()) {
	return s.addAny(&s.extraField().anyOut, h, false)
}

// PrependAnyOutgoing is OnAnyOutgoing placing the listener before those
// registered earlier.
func (s *Socket) PrependAnyOutgoing(h func(*Event)) (off func()) {
	return s.addAny(&s.extraField().anyOut, h, true)
}

// OffAnyOutgoing removes every OnAnyOutgoing and PrependAnyOutgoing listener.
func (s *Socket) OffAnyOutgoing() {
	s.mu.Lock()
	if s.extra != nil {
		s.extra.anyOut = nil
	}
	s.outgoing.Store(false)
	s.mu.Unlock()
}

// extraField returns s.extra, made on first use; the pointer is stable.
func (s *Socket) extraField() *socketExtra {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.extraLocked()
}

func (s *Socket) addAny(list *[]listener, h func(*Event), prepend bool) func() {
	l := newListener(h)
	s.mu.Lock()
	if prepend {
		*list = append([]listener{l}, *list...)
	} else {
		*list = append(slices.Clip(*list), l)
	}
	s.outgoing.Store(s.extra != nil && len(s.extra.anyOut) > 0)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		*list = without(*list, l.id)
		s.outgoing.Store(len(s.extra.anyOut) > 0)
		s.mu.Unlock()
	}
}

// Use adds a middleware that sees every event the client sends to this
// socket before its listeners (see EventMiddleware). Middleware runs in the
// order added, on the goroutine of the event's listeners.
func (s *Socket) Use(m EventMiddleware) {
	s.mu.Lock()
	x := s.extraLocked()
	x.middlewares = append(slices.Clip(x.middlewares), m)
	s.mu.Unlock()
}

// OnError registers a handler of the errors of the socket: an event refused by
// an EventMiddleware. It runs on the goroutine of the event's listeners.
func (s *Socket) OnError(h func(err error)) {
	s.mu.Lock()
	x := s.extraLocked()
	x.onError = append(slices.Clip(x.onError), h)
	s.mu.Unlock()
}

// notifyOutgoing runs the OnAnyOutgoing listeners for an event written to the
// client. Packets other than events (acks, CONNECT) are not reported.
func (s *Socket) notifyOutgoing(e *parser.Encoded) {
	if !s.outgoing.Load() {
		return
	}
	p, _, err := parser.Decode(e.Text)
	if err != nil || (p.Type != parser.Event && p.Type != parser.BinaryEvent) {
		return
	}
	all := parser.SplitValid(p.Data)
	name, err := parser.EventName(p.Data)
	if err != nil || len(all) == 0 {
		return
	}
	s.mu.Lock()
	var list []listener
	if s.extra != nil {
		list = s.extra.anyOut
	}
	s.mu.Unlock()
	ev := &Event{Name: name, Args: all[1:], Attachments: e.Attachments, socket: s}
	for _, l := range list {
		l.h(ev)
	}
}
