package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/cluster"
	"github.com/durasock/durasock/socketio"
)

// The demo chat tells the reliability story honestly, from what the servers and
// the other pages actually report:
//
//   - every page learns its node, its transport and its node's bus state
//     (it asks "hello" on connect, then gets "bus" on every change);
//   - a message is acknowledged by its node as sent or queued (the bus outbox
//     holds it while Redis is unreachable), then "published" once Redis took it,
//     then "receipt" per page that displayed it, relayed and stamped with the
//     receiving node by the servers: "delivered to N clients on M nodes", also
//     when that happens minutes later, after an outage;
//   - presence is kept by the pages from presence events and "here" replies
//     (no cluster-wide lookup, which fails during an outage and costs a round
//     trip through Redis per message): a page that joins announces itself, and
//     every member answers to that page alone.
//
// Every string the demo stores or broadcasts is trimmed and bounded in bytes
// before it is kept: a padded name or text cannot amplify memory.

// Limits of the demo chat's input, in bytes after trimming spaces.
const (
	maxNameLen = 32
	maxRoomLen = 32
	maxTextLen = 2000
)

// demoEventBudget bounds the relayed events a page may ask for (receipts,
// "here" replies, typing notices): demoEventBurst at once, demoEventRate per
// second after that. A page that asks for more is not answered; nothing else
// breaks.
const (
	demoEventBurst = 200
	demoEventRate  = 50
)

// maxPendingPublish bounds the messages whose "published" notice a node keeps
// waiting for Redis; past it a page still gets its receipts, only not the notice.
const maxPendingPublish = 10_000

// Rooms the demo uses on the server; a user's room name is prefixed so that it
// never names a page's own room.
const (
	chatRoomPrefix = "room:"
	pageRoomPrefix = "page:"
	// watchRoom holds this node's pages that want "bus" updates.
	watchRoom = "demo:watch"
)

// pageIDPattern is what a page id (chosen by the page, kept per browser tab) and
// a message id look like.
var pageIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

type joinMsg struct {
	Room string `json:"room"`
	Name string `json:"name"`
	Page string `json:"page"`
}

type chatIn struct {
	Room string `json:"room"`
	Text string `json:"text"`
	ID   string `json:"id"`
}

// chatOut is a chat message as the other pages get it.
type chatOut struct {
	ID   string `json:"id"`
	Room string `json:"room"`
	Text string `json:"text"`
	Name string `json:"name"`
	Page string `json:"page"`
	Node string `json:"node"`
	// SentAt is when the sender's node accepted it, in Unix milliseconds, so a
	// page can tell a message that waited through an outage.
	SentAt int64 `json:"sent_at"`
}

// chatAck is the answer to "chat": what the sender's node did with it.
type chatAck struct {
	ID string `json:"id"`
	// Node is the sender's node.
	Node string `json:"node"`
	// Queued: the message waits in the bus outbox for Redis (other nodes get it
	// when Redis takes it; a "published" event follows).
	Queued bool `json:"queued"`
	// Bus is the bus state, "" without a cluster.
	Bus string `json:"bus,omitempty"`
}

type presenceMsg struct {
	// Type is "join", "leave", "rename" or "here" (the answer of a member to a
	// page that joined).
	Type string `json:"type"`
	Room string `json:"room"`
	Page string `json:"page"`
	SID  string `json:"sid"`
	Name string `json:"name"`
	Old  string `json:"old,omitempty"`
	Node string `json:"node"`
}

type receiptIn struct {
	ID string `json:"id"`
	To string `json:"to"`
}

type receiptOut struct {
	ID   string `json:"id"`
	Page string `json:"page"`
	Name string `json:"name"`
	Node string `json:"node"`
}

type hereIn struct {
	To string `json:"to"`
}

// busView is the bus state as the pages see it: no error text (it names Redis
// hosts), no outbox contents.
type busView struct {
	State       string   `json:"state"`
	Since       int64    `json:"since"` // Unix milliseconds
	OutboxLen   int      `json:"outbox"`
	OutboxAgeMS int64    `json:"outbox_age_ms"`
	Nodes       []string `json:"nodes"`
}

type helloMsg struct {
	Node      string   `json:"node"`
	Cluster   bool     `json:"cluster"`
	Transport string   `json:"transport"`
	Recovered bool     `json:"recovered"`
	Bus       *busView `json:"bus,omitempty"`
}

// member is what the demo keeps per socket (Socket.Data, so that a session
// recovered on another node keeps its room and name).
type member struct {
	Name string `json:"name"`
	Room string `json:"room"`
	Page string `json:"page"`
}

// demo is the chat of one node.
type demo struct {
	nsp     *socketio.Namespace
	bus     *bus.Reliable    // nil on the in-memory adapter
	cluster *cluster.Cluster // nil on the in-memory adapter
	node    string
	log     *slog.Logger

	mu      sync.Mutex
	pending []pendingPublish // waiting for Redis to take them
	wake    chan struct{}    // wakes watchPublished
	poke    chan struct{}    // wakes watchBus: the outbox grew
}

type pendingPublish struct {
	s  *socketio.Socket
	id string
}

// setupDemo registers the demo chat on the main namespace. With a cluster bus
// (b and c not nil) it also tells the pages about the bus until the bus closes.
func setupDemo(srv *socketio.Server, b *bus.Reliable, c *cluster.Cluster, log *slog.Logger) {
	d := &demo{nsp: srv.Of("/"), log: log, node: "local", wake: make(chan struct{}, 1), poke: make(chan struct{}, 1)}
	if b != nil && c != nil {
		d.bus, d.cluster, d.node = b, c, b.NodeID()
		go d.watchBus()
		go d.watchPublished()
	}
	d.nsp.OnConnection(d.connected)
}

func (d *demo) view() *busView {
	if d.bus == nil {
		return nil
	}
	st := d.bus.Status()
	return &busView{
		State:       st.State.String(),
		Since:       st.Since.UnixMilli(),
		OutboxLen:   st.OutboxLen,
		OutboxAgeMS: st.OutboxOldest.Milliseconds(),
		Nodes:       append([]string{d.node}, d.cluster.Nodes()...),
	}
}

// watchBus sends "bus" to this node's pages when the bus state, the outbox or
// the set of nodes changes, until the bus closes.
func (d *demo) watchBus() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last *busView
	for {
		changed := d.bus.StateChanged()
		v := d.view()
		if last == nil || v.State != last.State || v.OutboxLen != last.OutboxLen || !slices.Equal(v.Nodes, last.Nodes) ||
			(v.OutboxLen > 0 && v.OutboxAgeMS/1000 != last.OutboxAgeMS/1000) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if err := d.nsp.Local().To(watchRoom).Emit(ctx, "bus", v); err != nil {
				d.log.Debug("demo: bus state not sent", "err", err)
			}
			cancel()
			last = v
		}
		if v.State == bus.Closed.String() {
			return
		}
		select {
		case <-changed:
		case <-tick.C:
		case <-d.poke:
		}
	}
}

// expectPublished remembers that the page of s waits to hear when message id
// reaches Redis.
func (d *demo) expectPublished(s *socketio.Socket, id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.pending) >= maxPendingPublish {
		return false
	}
	d.pending = append(d.pending, pendingPublish{s, id})
	for _, c := range []chan struct{}{d.wake, d.poke} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	return true
}

// watchPublished tells pages when their queued messages reached Redis (or were
// dropped by a bound of the outbox), until the bus closes.
func (d *demo) watchPublished() {
	for {
		select {
		case <-d.wake:
		case <-d.bus.StateChanged():
			if d.bus.Status().State == bus.Closed {
				return
			}
			continue
		}
		d.mu.Lock()
		batch := d.pending
		d.pending = nil
		d.mu.Unlock()
		var err error
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err = d.bus.Sync(ctx)
			cancel()
			if err == nil || errors.Is(err, bus.ErrDropped) {
				break
			}
			if d.bus.Status().State == bus.Closed {
				return
			}
		}
		bySocket := map[*socketio.Socket][]string{}
		for _, p := range batch {
			bySocket[p.s] = append(bySocket[p.s], p.id)
		}
		for s, ids := range bySocket {
			if !s.Connected() {
				continue
			}
			// The page may be gone; its receipts tell the rest.
			_ = s.Emit("published", map[string]any{"ids": ids, "dropped": err != nil})
		}
	}
}

// budget is a token bucket of relayed events for one socket.
type budget struct {
	tokens float64
	last   time.Time
}

func (b *budget) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = demoEventBurst
	} else {
		b.tokens = min(demoEventBurst, b.tokens+now.Sub(b.last).Seconds()*demoEventRate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (d *demo) connected(s *socketio.Socket) {
	var (
		mu        sync.Mutex // handlers of one socket run in order; OnDisconnect may not
		me        member
		allowance budget
	)
	var recovered member
	if err := bindData(s, &recovered); err == nil && recovered.Room != "" {
		me = recovered
	}
	ctx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.Background(), 5*time.Second)
	}
	// A demo page asks for "hello" and so subscribes to "bus" updates; other
	// Socket.IO clients of the node get no demo events they did not ask for.
	s.On("hello", func(e *socketio.Event) {
		s.Join(watchRoom)
		ackOrLog(e, d.log, helloMsg{Node: d.node, Cluster: d.bus != nil, Transport: s.Transport(), Recovered: me.Room != "", Bus: d.view()})
	})
	presence := func(to, typ string, m member, old string) {
		c, cancel := ctx()
		defer cancel()
		p := presenceMsg{Type: typ, Room: m.Room, Page: m.Page, SID: s.ID(), Name: m.Name, Old: old, Node: d.node}
		if err := s.To(to).Emit(c, "presence", p); err != nil {
			d.log.Warn("demo: presence not sent", "type", typ, "err", err)
		}
	}

	s.On("join", func(e *socketio.Event) {
		var m joinMsg
		if err := e.Bind(&m); err != nil {
			replyError(e, "join wants {room, name, page}")
			return
		}
		room, okRoom := cleanText(m.Room, maxRoomLen)
		name, okName := cleanText(m.Name, maxNameLen)
		if !okRoom || !okName {
			replyError(e, "room and name: not empty, at most 32 bytes, no control characters")
			return
		}
		if !pageIDPattern.MatchString(m.Page) {
			replyError(e, "page: 1 to 32 letters, digits, - or _")
			return
		}
		mu.Lock()
		prev := me
		me = member{Name: name, Room: room, Page: m.Page}
		next := me
		mu.Unlock()
		if err := s.SetData(next); err != nil {
			d.log.Warn("demo: socket data", "err", err)
		}
		switch {
		case prev.Room == room && prev.Page == m.Page && prev.Name != name:
			presence(chatRoomPrefix+room, "rename", next, prev.Name)
		default:
			if prev.Room != "" && prev.Room != room {
				s.Leave(chatRoomPrefix + prev.Room)
				presence(chatRoomPrefix+prev.Room, "leave", prev, "")
			}
			if prev.Page != "" && prev.Page != m.Page {
				s.Leave(pageRoomPrefix + prev.Page)
			}
			s.Join(chatRoomPrefix+room, pageRoomPrefix+m.Page)
			presence(chatRoomPrefix+room, "join", next, "")
		}
		ackOrLog(e, d.log, map[string]any{"ok": true, "room": room, "name": name, "node": d.node, "sid": s.ID()})
	})

	s.On("chat", func(e *socketio.Event) {
		var m chatIn
		if err := e.Bind(&m); err != nil {
			replyError(e, "chat wants {room, text, id}")
			return
		}
		mu.Lock()
		from := me
		mu.Unlock()
		text, ok := cleanText(m.Text, maxTextLen)
		switch {
		case from.Room == "":
			replyError(e, "join a room first")
			return
		case strings.TrimSpace(m.Room) != from.Room:
			replyError(e, "you are not in that room")
			return
		case !pageIDPattern.MatchString(m.ID):
			replyError(e, "id: 1 to 32 letters, digits, - or _")
			return
		case !ok:
			replyError(e, "not sent: a message has 1 to 2000 bytes, without control characters")
			return
		}
		out := chatOut{ID: m.ID, Room: from.Room, Text: text, Name: from.Name, Page: from.Page, Node: d.node, SentAt: time.Now().UnixMilli()}
		c, cancel := ctx()
		defer cancel()
		if err := s.To(chatRoomPrefix+from.Room).Emit(c, "chat", out); err != nil {
			replyError(e, "not sent: "+emitReason(err))
			return
		}
		ack := chatAck{ID: m.ID, Node: d.node}
		if d.bus != nil {
			st := d.bus.Status()
			ack.Bus = st.State.String()
			ack.Queued = st.State != bus.Connected || st.OutboxLen > 0
			if ack.Queued && !d.expectPublished(s, m.ID) {
				d.log.Debug("demo: too many messages wait for Redis; no published notice for this one")
			}
		}
		ackOrLog(e, d.log, ack)
	})

	// A page that displayed a message confirms it to the sender's page; the
	// node stamps itself on the receipt.
	s.On("receipt", func(e *socketio.Event) {
		var m receiptIn
		mu.Lock()
		from, ok := me, allowance.take(time.Now())
		mu.Unlock()
		if !ok || from.Room == "" || e.Bind(&m) != nil || !pageIDPattern.MatchString(m.ID) || !pageIDPattern.MatchString(m.To) {
			return
		}
		c, cancel := ctx()
		defer cancel()
		r := receiptOut{ID: m.ID, Page: from.Page, Name: from.Name, Node: d.node}
		if err := s.To(pageRoomPrefix+m.To).Emit(c, "receipt", r); err != nil {
			d.log.Debug("demo: receipt not sent", "err", err)
		}
	})

	// A member answers a page that joined its room: "I am here too".
	s.On("here", func(e *socketio.Event) {
		var m hereIn
		mu.Lock()
		from, ok := me, allowance.take(time.Now())
		mu.Unlock()
		if !ok || from.Room == "" || e.Bind(&m) != nil || !pageIDPattern.MatchString(m.To) {
			return
		}
		presence(pageRoomPrefix+m.To, "here", from, "")
	})

	s.On("typing", func(e *socketio.Event) {
		mu.Lock()
		from, ok := me, allowance.take(time.Now())
		mu.Unlock()
		if !ok || from.Room == "" {
			return
		}
		c, cancel := ctx()
		defer cancel()
		// Typing notices are volatile: losing one is harmless.
		if err := s.To(chatRoomPrefix+from.Room).Volatile().Emit(c, "typing", map[string]string{"name": from.Name, "page": from.Page}); err != nil {
			d.log.Debug("demo: typing not sent", "err", err)
		}
	})

	s.OnDisconnect(func(string) {
		mu.Lock()
		last := me
		me = member{}
		mu.Unlock()
		if last.Room != "" {
			presence(chatRoomPrefix+last.Room, "leave", last, "")
		}
	})
}

// bindData reads the member a recovered session kept: its Data is the member
// itself on the node that set it, its JSON after a recovery on another node.
func bindData(s *socketio.Socket, m *member) error {
	switch v := s.Data().(type) {
	case member:
		*m = v
		return nil
	case json.RawMessage:
		return json.Unmarshal(v, m)
	default:
		return errors.New("no member data")
	}
}

// cleanText trims s and says whether the rest is valid chat text: not empty, at
// most max bytes, valid UTF-8, no control characters. Only the trimmed value is
// ever kept or sent on.
func cleanText(s string, max int) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > max || !utf8.ValidString(s) {
		return "", false
	}
	if strings.ContainsFunc(s, unicode.IsControl) {
		return "", false
	}
	return s, true
}

// emitReason says in words why a broadcast was refused.
func emitReason(err error) string {
	switch {
	case errors.Is(err, bus.ErrOutboxFull):
		return "the outbox of this node is full (Redis has been unreachable for long)"
	case errors.Is(err, bus.ErrClosed):
		return "this node is shutting down"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	default:
		return "refused by the server"
	}
}

func replyError(e *socketio.Event, msg string) {
	if e.HasAck() {
		// The client may be gone; nothing else to do with the error.
		_ = e.Ack(map[string]string{"error": msg})
	}
}

func ackOrLog(e *socketio.Event, log *slog.Logger, v any) {
	if !e.HasAck() {
		return
	}
	if err := e.Ack(v); err != nil {
		log.Debug("demo: ack not sent", "err", err)
	}
}
