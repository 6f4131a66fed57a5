package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/engineio"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
	"github.com/durasock/durasock/socketio"
)

// logLines records the messages and attributes a server logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) find(sub string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, sub) {
			return s
		}
	}
	return ""
}

// recoveringClient is a raw Socket.IO client that recovers as the official
// client does: it sends back the pid and the last offset it received.
type recoveringClient struct {
	*wsClient
	pid    string
	offset string
}

func dialRecovering(t *testing.T, url, pid, offset string) *recoveringClient {
	t.Helper()
	c, _, err := websocket.Dial(testCtx(t), strings.Replace(url, "http", "ws", 1)+"/socket.io/?EIO=4&transport=websocket", nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.CloseNow() })
	w := &wsClient{t: t, c: c}
	if open := w.read(); !strings.HasPrefix(open, "0{") {
		t.Fatalf("Engine.IO open packet: %q", open)
	}
	auth := ""
	if pid != "" {
		b, _ := json.Marshal(map[string]string{"pid": pid, "offset": offset})
		auth = string(b)
	}
	w.send("40" + auth)
	var hello struct{ SID, PID string }
	if got := w.read(); !strings.HasPrefix(got, "40{") || json.Unmarshal([]byte(got[2:]), &hello) != nil {
		t.Fatalf("CONNECT answer: %q", got)
	}
	w.id = hello.SID
	return &recoveringClient{wsClient: w, pid: hello.PID, offset: offset}
}

// event reads the next event and returns its first argument, remembering its
// offset (the last argument).
func (c *recoveringClient) event() int {
	c.t.Helper()
	msg := c.read()
	var args []json.RawMessage
	if !strings.HasPrefix(msg, "42") || json.Unmarshal([]byte(msg[2:]), &args) != nil || len(args) != 3 {
		c.t.Fatalf("want an event with an argument and an offset, got %q", msg)
	}
	var n int
	if err := json.Unmarshal(args[1], &n); err != nil {
		c.t.Fatalf("event %q: %v", msg, err)
	}
	if err := json.Unmarshal(args[2], &c.offset); err != nil {
		c.t.Fatalf("offset of %q: %v", msg, err)
	}
	return n
}

// awayStored waits until session pid is stored as away: its record's time
// to live is the session's own (keep), no longer keep plus the slack of a
// connected session.
func awayStored(t *testing.T, redis *redistest.Server, pid string, keep time.Duration) {
	t.Helper()
	ctx := testCtx(t)
	testwait.For(t, waitTimeout, "the session stored as away", func() bool {
		keys, err := redis.Do(ctx, "KEYS", "*:kv:session:"+pid)
		if err != nil || len(keys.([]any)) != 1 {
			return false
		}
		ttl, err := redis.Do(ctx, "PTTL", keys.([]any)[0].(string))
		return err == nil && ttl.(int64) >= 0 && ttl.(int64) <= keep.Milliseconds()
	})
}

// sessionRecordOf returns the record of session pid in Redis, "" when none.
func sessionRecordOf(t *testing.T, redis *redistest.Server, pid string) string {
	ctx := testCtx(t)
	keys, err := redis.Do(ctx, "KEYS", "*:kv:session:"+pid)
	if err != nil || len(keys.([]any)) != 1 {
		return ""
	}
	v, err := redis.Do(ctx, "GET", keys.([]any)[0].(string))
	if err != nil || v == nil {
		return ""
	}
	return v.(string)
}

type recoveryNode struct {
	srv *socketio.Server
	url string
	log *logLines
	c   *Cluster
}

// wantNewSession checks that back, client c reconnected to node, got a new
// session (fatal says what else happened) and that node logged why, with
// reason.
func wantNewSession(t *testing.T, node recoveryNode, c, back *recoveringClient, fatal, reason string) {
	t.Helper()
	if back.id == c.id {
		t.Fatal(fatal)
	}
	if line := node.log.find("session not recovered"); !strings.Contains(line, reason) {
		t.Fatalf("log says %q", line)
	}
}

// drain shuts n's server down and closes its cluster (its goodbye), as a
// drained process does; its bus stays open. The others learn n's interest
// once its server is gone (its sockets left their rooms, its namespace
// closed), before it says goodbye: the rooms of the sessions it keeps are in
// it still.
func (n recoveryNode) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(testCtx(t), waitTimeout)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	n.routed(t)
	if err := n.c.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// routed returns once every node has applied n's interest (at once when the
// namespace is not routed): an emit then reaches n's sockets.
func (n recoveryNode) routed(t *testing.T) {
	t.Helper()
	if err := n.c.AwaitRouting(testCtx(t), "/"); err != nil {
		t.Fatal(err)
	}
}

func recoveryNodes(t *testing.T, redisURL string, routed bool, rec *socketio.RecoveryOptions) []recoveryNode {
	return recoveryNodesOn(t, recoveryBuses(t, redisURL, routed), routed, rec)
}

// recoveryBuses makes the buses of a fresh cluster on Redis at url: with
// inboxes when routed.
func recoveryBuses(t *testing.T, url string, routed bool) func(id string) bus.Bus {
	if !routed {
		return redisBuses(t, url, redisbus.Streams)
	}
	newBus := redisEnv(url).newCluster(t)
	return func(id string) bus.Bus { return newBus(id) }
}

// eachRouting runs test with the namespace routed (interest routing) and not.
func eachRouting(t *testing.T, test func(t *testing.T, routed bool)) {
	t.Run("shared", func(t *testing.T) { test(t, false) })
	t.Run("routed", func(t *testing.T) { test(t, true) })
}

func recoveryNodesOn(t *testing.T, buses func(id string) bus.Bus, routed bool, rec *socketio.RecoveryOptions) []recoveryNode {
	return recoveryNodesN(t, 2, buses, routed, rec)
}

// recoveryNodesN starts n nodes, with recovery options recs: one for every
// node, or one per node.
func recoveryNodesN(t *testing.T, n int, buses func(id string) bus.Bus, routed bool, recs ...*socketio.RecoveryOptions) []recoveryNode {
	var opts *Options
	if routed {
		opts = &Options{InterestRouting: true}
	}
	cs := startNodes(t, n, opts, buses)
	if routed {
		for _, c := range cs {
			if c.route == nil || !c.routes("/") {
				t.Fatalf("%s does not route namespace /", c.NodeID())
			}
		}
	}
	var out []recoveryNode
	for i, c := range cs {
		logs := &logLines{}
		rec := recs[0]
		if len(recs) == n {
			rec = recs[i]
		}
		s := socketio.NewServer(&socketio.Options{Adapter: c.Adapter, Recovery: rec,
			Options: engineio.Options{Logger: slog.New(logs)}})
		// Joined in middleware: in the room before the client learns it is
		// connected, so an emit right after the CONNECT answer reaches it.
		s.Use(func(_ context.Context, so *socketio.Socket) error {
			so.Join("room")
			return nil
		})
		out = append(out, recoveryNode{srv: s, url: serve(t, s), log: logs, c: c})
	}
	return out
}

// A client whose connection breaks reconnects to another node and gets its
// session back with every event it missed, in order, once; beyond the limits
// (time away, missed events, history kept) it gets a new session and the
// server says why.
func TestRecoveryOnAnotherNode(t *testing.T) { eachRouting(t, testRecoveryOnAnotherNode) }

func testRecoveryOnAnotherNode(t *testing.T, routed bool) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	emit := func(n recoveryNode, from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			if err := n.srv.To("room").Emit(ctx, "e", i); err != nil {
				t.Fatal(err)
			}
		}
	}
	// leave breaks a client's connection and waits until its node stored the
	// session as away: its record's time to live is then the session's own
	// (keep), no longer keep plus the slack of a connected session.
	leave := func(c *recoveringClient, keep time.Duration) {
		t.Helper()
		c.c.CloseNow()
		awayStored(t, redis, c.pid, keep)
	}

	t.Run("recovered", func(t *testing.T) {
		nodes := recoveryNodes(t, redis.URL(), routed, &socketio.RecoveryOptions{})
		a, b := nodes[0], nodes[1]
		c := dialRecovering(t, a.url, "", "")
		a.routed(t)
		emit(a, 1, 3) // from its own node
		emit(b, 4, 6) // from the other
		for want := 1; want <= 6; want++ {
			if got := c.event(); got != want {
				t.Fatalf("event %d, want %d", got, want)
			}
		}
		leave(c, socketio.DefaultMaxDisconnectionDuration)
		emit(a, 7, 8)
		emit(b, 9, 10)
		back := dialRecovering(t, b.url, c.pid, c.offset)
		if back.id != c.id || back.pid != c.pid {
			t.Fatalf("session not recovered: sid %s pid %s, want %s %s\n%s", back.id, back.pid, c.id, c.pid, b.log.find("session"))
		}
		emit(a, 11, 11)
		emit(b, 12, 12)
		// Each node's events in order, once; the two nodes' interleave.
		fromA, fromB := []int{7, 8, 11}, []int{9, 10, 12}
		for range 6 {
			switch got := back.event(); {
			case len(fromA) > 0 && got == fromA[0]:
				fromA = fromA[1:]
			case len(fromB) > 0 && got == fromB[0]:
				fromB = fromB[1:]
			default:
				t.Fatalf("after recovery: event %d, want the next of %v (node a) or %v (node b)", got, fromA, fromB)
			}
		}
	})

	// The session is restored right after its new node applied an event of
	// the other node, before that node's bus counted the event as delivered:
	// the event, written before the socket was there, is replayed.
	// (Routed, node b has no socket in the room: it gets no event of a.)
	restoredAfterApply := func(t *testing.T) {
		nodes := recoveryNodes(t, redis.URL(), routed, &socketio.RecoveryOptions{})
		a, b := nodes[0], nodes[1]
		c := dialRecovering(t, a.url, "", "")
		a.routed(t)
		emit(a, 1, 1)
		emit(b, 2, 2) // b has delivered a recoverable event: its applies take the lock
		for want := 1; want <= 2; want++ {
			if got := c.event(); got != want {
				t.Fatalf("event %d, want %d", got, want)
			}
		}
		leave(c, socketio.DefaultMaxDisconnectionDuration)
		applied, restored := make(chan struct{}), make(chan struct{})
		var once sync.Once
		hook := func(_ string, m *message) {
			if m.kind == kindBroadcast && strings.HasSuffix(string(m.data), ",3]") {
				once.Do(func() {
					close(applied)
					<-restored
				})
			}
		}
		testAfterApply.Store(&hook)
		defer testAfterApply.Store(nil)
		emit(a, 3, 3)
		select {
		case <-applied:
		case <-time.After(waitTimeout):
			t.Fatal("node b did not apply event 3")
		}
		back := dialRecovering(t, b.url, c.pid, c.offset)
		close(restored)
		if back.id != c.id {
			t.Fatalf("session not recovered\n%s", b.log.find("session"))
		}
		emit(b, 4, 4)
		for want := 3; want <= 4; want++ {
			if got := back.event(); got != want {
				t.Fatalf("after recovery: event %d, want %d", got, want)
			}
		}
	}
	if !routed {
		t.Run("restored right after an apply", restoredAfterApply)
	}

	t.Run("away too long", func(t *testing.T) {
		nodes := recoveryNodes(t, redis.URL(), routed, &socketio.RecoveryOptions{MaxDisconnectionDuration: 500 * time.Millisecond})
		a, b := nodes[0], nodes[1]
		c := dialRecovering(t, a.url, "", "")
		a.routed(t)
		emit(a, 1, 1)
		c.event()
		leave(c, 500*time.Millisecond)
		// Real time on purpose: the session must stay away longer than
		// MaxDisconnectionDuration by the clocks that expire it (the record's
		// time to live in Redis, the node's own), which no test can move; a
		// second is twice that.
		time.Sleep(time.Second)
		back := dialRecovering(t, b.url, c.pid, c.offset)
		wantNewSession(t, b, c, back, "a session away longer than MaxDisconnectionDuration was recovered", "unknown or expired")
	})

	t.Run("too many missed", func(t *testing.T) {
		nodes := recoveryNodes(t, redis.URL(), routed, &socketio.RecoveryOptions{MaxMissedPackets: 3})
		a, b := nodes[0], nodes[1]
		c := dialRecovering(t, a.url, "", "")
		a.routed(t)
		emit(a, 1, 1)
		c.event()
		leave(c, socketio.DefaultMaxDisconnectionDuration)
		emit(b, 2, 6)
		back := dialRecovering(t, b.url, c.pid, c.offset)
		wantNewSession(t, b, c, back, "recovered with more missed events than MaxMissedPackets", "more than 3 missed")
	})

	t.Run("history trimmed", func(t *testing.T) {
		nodes := recoveryNodes(t, redis.URL(), routed, &socketio.RecoveryOptions{})
		a, b := nodes[0], nodes[1]
		c := dialRecovering(t, a.url, "", "")
		a.routed(t)
		emit(a, 1, 1)
		c.event()
		leave(c, socketio.DefaultMaxDisconnectionDuration)
		emit(b, 2, 3)
		// Redis drops everything the stream held (MAXLEN 0).
		keys, err := redis.Do(ctx, "KEYS", "*:stream")
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys.([]any) {
			if _, err := redis.Do(ctx, "XTRIM", k.(string), "MAXLEN", "0"); err != nil {
				t.Fatal(err)
			}
		}
		back := dialRecovering(t, b.url, c.pid, c.offset)
		wantNewSession(t, b, c, back, "recovered although the events it missed were trimmed away", "trimmed")
	})
}

// A publisher that is not a node (package emitter: its own bus origin, no
// cluster) does not mark its broadcasts recoverable. A client of a namespace
// that keeps sessions still gets them with an offset, and once recovered on
// another node it gets every one it missed, exactly once.
func TestRecoveryOnAnotherNodeEmitterEvents(t *testing.T) {
	eachRouting(t, testRecoveryOnAnotherNodeEmitterEvents)
}

func testRecoveryOnAnotherNodeEmitterEvents(t *testing.T, routed bool) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	buses := recoveryBuses(t, redis.URL(), routed)
	nodes := recoveryNodesOn(t, buses, routed, &socketio.RecoveryOptions{})
	a, b := nodes[0], nodes[1]
	pub := buses("")
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := pub.Close(cctx); err != nil {
			t.Errorf("bus Close: %v", err)
		}
	})
	// emitFrom publishes as package emitter does (it imports this package).
	emitFrom := func(from, to int) {
		t.Helper()
		for i := from; i <= to; i++ {
			p, err := parser.EventPacket("/", "e", i)
			if err != nil {
				t.Fatal(err)
			}
			m, err := encodeBroadcast("/", p, adapter.Options{Rooms: []string{"room"}})
			if err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(ctx, partitionKey("/"), m); err != nil {
				t.Fatal(err)
			}
		}
	}
	emit := func(n recoveryNode, i int) {
		t.Helper()
		if err := n.srv.To("room").Emit(ctx, "e", i); err != nil {
			t.Fatal(err)
		}
	}

	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	emitFrom(1, 3)
	for want := 1; want <= 3; want++ {
		if got := c.event(); got != want {
			t.Fatalf("event %d, want %d", got, want)
		}
	}
	c.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	emitFrom(4, 6)
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id || back.pid != c.pid {
		t.Fatalf("session not recovered: sid %s pid %s, want %s %s\n%s", back.id, back.pid, c.id, c.pid, b.log.find("session"))
	}
	emitFrom(7, 8)
	for want := 4; want <= 8; want++ {
		if got := back.event(); got != want {
			t.Fatalf("after recovery: event %d, want %d", got, want)
		}
	}
	// Then an event of its new node: nothing may come twice before it.
	emit(b, 9)
	if got := back.event(); got != 9 {
		t.Fatalf("after recovery: event %d, want 9 (an event came twice)", got)
	}
}
