package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/socketio"
)

// A client of a routed namespace moves from node a to node b while all three
// nodes emit to its room without pause (b and d have sockets in it too, so
// that they apply events while the session is restored): it gets every
// node's events exactly once and in order, none lost — after its connection
// broke (a still running), and after a drained (its server shut down, its
// node said goodbye) with a's publisher stopping at the drain.
func TestRecoveryRoutedHandoff(t *testing.T) {
	redis := redistest.Standalone(t)
	for _, drain := range []bool{false, true} {
		name := "connection broke"
		if drain {
			name = "node drained"
		}
		t.Run(name, func(t *testing.T) {
			testRoutedHandoff(t, redis.URL(), drain)
		})
	}
}

func testRoutedHandoff(t *testing.T, url string, drain bool) {
	ctx := testCtx(t)
	nodes := recoveryNodesN(t, 3, recoveryBuses(t, url, true), true, &socketio.RecoveryOptions{MaxMissedPackets: 100000})
	a, b, d := nodes[0], nodes[1], nodes[2]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	for _, n := range []recoveryNode{b, d} {
		w := dialRecovering(t, n.url, "", "")
		n.routed(t)
		go func() { // the watchers' events are read and dropped
			for {
				if _, _, err := w.c.Read(ctx); err != nil {
					return
				}
			}
		}()
	}

	em := startEmitters(t, nodes, "room")
	last := em.last
	next := make([]int64, len(nodes)) // the next event expected of each node
	for i := range next {
		next[i] = 1
	}
	take := func(r *recoveringClient) {
		t.Helper()
		v := int64(r.event())
		i, k := v/emitBase, v%emitBase
		if i < 0 || int(i) >= len(nodes) || k != next[i] {
			t.Fatalf("event %d of node %d, want %d (next of each node: %v)", k, i, next[max(0, min(int(i), len(nodes)-1))], next)
		}
		next[i]++
	}
	for next[0] < 100 || next[1] < 100 || next[2] < 100 {
		take(c)
	}

	c.c.CloseNow()
	if drain {
		a.drain(t)
	}
	em.past(t, 1, next[1]+100) // emitted while the client is away
	em.past(t, 2, next[2]+100)
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatalf("session not recovered\n%s", b.log.find("session"))
	}
	// Past what was emitted while it was away, then the rest once the
	// publishers stopped.
	l1, l2 := last[1].Load(), last[2].Load()
	em.past(t, 1, l1+100)
	em.past(t, 2, l2+100)
	for next[1] < l1+100 || next[2] < l2+100 {
		take(back)
	}
	em.stop()
	for i := range nodes {
		for next[i] <= last[i].Load() {
			take(back)
		}
	}
	t.Logf("%s: events of a, b, d: %d, %d, %d", map[bool]string{false: "broke", true: "drained"}[drain], last[0].Load(), last[1].Load(), last[2].Load())
}

// emitters emit to a room from each of a set of nodes, node i's k-th event
// being i×10^6 + k, every millisecond or so, until stop.
type emitters struct {
	last []atomic.Int64 // the last event each node emitted
	end  atomic.Bool
	wg   sync.WaitGroup
}

const emitBase = 1_000_000

func startEmitters(t *testing.T, nodes []recoveryNode, room string) *emitters {
	ctx := testCtx(t)
	em := &emitters{last: make([]atomic.Int64, len(nodes))}
	for i, n := range nodes {
		em.wg.Add(1)
		go func() {
			defer em.wg.Done()
			pace := time.NewTicker(time.Millisecond) // about 1 000 events a second each
			defer pace.Stop()
			for k := int64(1); !em.end.Load(); k++ {
				if err := n.srv.To(room).Emit(ctx, "e", int64(i)*emitBase+k); err != nil {
					return // the node drained
				}
				em.last[i].Store(k)
				<-pace.C
			}
		}()
	}
	t.Cleanup(em.stop)
	return em
}

// stop ends the emitters and returns once none emits.
func (em *emitters) stop() {
	em.end.Store(true)
	em.wg.Wait()
}

// past waits until node i emitted past k.
func (em *emitters) past(t *testing.T, i int, k int64) {
	t.Helper()
	testwait.For(t, waitTimeout, fmt.Sprintf("node %d to emit past %d", i, k), func() bool { return em.last[i].Load() > k })
}

// A room the session joined while away (socketsJoin from another node to its
// stand-in) is routed to its earlier node only; the restore holds it too, and
// the client gets every event to it, once, in order.
func TestRecoveryRoomJoinedWhileAway(t *testing.T) { eachRouting(t, testRecoveryRoomJoinedWhileAway) }

func testRecoveryRoomJoinedWhileAway(t *testing.T, routed bool) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	nodes := recoveryNodesN(t, 3, recoveryBuses(t, redis.URL(), routed), routed, &socketio.RecoveryOptions{MaxMissedPackets: 100000})
	a, b, d := nodes[0], nodes[1], nodes[2]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	c.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	if err := d.srv.In(c.id).SocketsJoin(ctx, "r3"); err != nil {
		t.Fatal(err)
	}
	a.routed(t)
	em := startEmitters(t, []recoveryNode{d}, "r3")
	em.past(t, 0, 100)
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatalf("not recovered: %s", b.log.find("session"))
	}
	em.past(t, 0, em.last[0].Load()+100)
	em.stop()
	for want := 1; want <= int(em.last[0].Load()); want++ {
		if got := back.event(); got != want {
			t.Fatalf("event %d, want %d (last emitted %d)", got, want, em.last[0].Load())
		}
	}
}

// confirmlessBus drops this node's cut answers that say its outbox reached
// Redis: the node answers (it is alive) but never confirms.
type confirmlessBus struct {
	*bus.Reliable
	on *atomic.Bool
}

func (d confirmlessBus) Send(ctx context.Context, to string, payload []byte) error {
	if d.on.Load() {
		if m, err := decodeMessage(payload); err == nil && m.kind == kindCutAnswer && m.flags&flagFlushed != 0 {
			return nil
		}
	}
	return d.Reliable.Send(ctx, to, payload)
}

// A client's earlier node that is alive but cannot confirm its cut (its
// outbox does not reach Redis) is not taken for gone: the client gets a new
// session, with the reason logged, rather than events twice or none.
func TestRecoveryRoutedEarlierNodeUnconfirmed(t *testing.T) {
	redis := redistest.Standalone(t)
	newBus := redisEnv(redis.URL()).newCluster(t)
	var on atomic.Bool
	buses := func(id string) bus.Bus {
		r := newBus(id)
		if id == "node-0" {
			return confirmlessBus{Reliable: r, on: &on}
		}
		return r
	}
	nodes := recoveryNodesN(t, 2, buses, true, &socketio.RecoveryOptions{MaxMissedPackets: 100000})
	a, b := nodes[0], nodes[1]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	em := startEmitters(t, []recoveryNode{a}, "room")
	for want := 1; want < 50; want++ {
		if got := c.event(); got != want {
			t.Fatalf("before: event %d, want %d", got, want)
		}
	}
	c.c.CloseNow()
	on.Store(true)
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	back := dialRecovering(t, b.url, c.pid, c.offset)
	em.stop()
	wantNewSession(t, b, c, back, "recovered although its earlier node, alive, did not confirm its cut", "none confirmed by [node-0]")
}

// A client restored on b that got only events replayed from a's inbox, then
// no other, keeps an offset of a's inbox. Restored again on d once a no
// longer keeps its rooms (what is sent to them goes to b's inbox only), it
// gets what b got for it meanwhile.
func TestRecoveryTwiceOffsetOfEarlierInbox(t *testing.T) {
	eachRouting(t, testRecoveryTwiceOffsetOfEarlierInbox)
}

func testRecoveryTwiceOffsetOfEarlierInbox(t *testing.T, routed bool) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	// a keeps sessions for keep; b and d much longer, so that the session b
	// stores outlives by far a's stand-in and kept rooms.
	keep := 2 * time.Second
	long := &socketio.RecoveryOptions{MaxDisconnectionDuration: 10 * keep}
	nodes := recoveryNodesN(t, 3, recoveryBuses(t, redis.URL(), routed), routed,
		&socketio.RecoveryOptions{MaxDisconnectionDuration: keep}, long, long)
	a, b, d := nodes[0], nodes[1], nodes[2]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	c.c.CloseNow()
	awayStored(t, redis, c.pid, keep)
	for i := 1; i <= 2; i++ {
		if err := d.srv.To("room").Emit(ctx, "e", i); err != nil {
			t.Fatal(err)
		}
	}
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatalf("not recovered on b: %s", b.log.find("session"))
	}
	for want := 1; want <= 2; want++ {
		if got := back.event(); got != want {
			t.Fatalf("on b: event %d, want %d", got, want)
		}
	}
	back.c.CloseNow()
	awayStored(t, redis, back.pid, long.MaxDisconnectionDuration)
	// a's stand-in and its kept rooms end with a's keep, counted from when
	// the client left a: once they have, and the other nodes no longer
	// route the room to a, event 3 reaches b's inbox only.
	testwait.For(t, waitTimeout, "a's stand-in and kept rooms to end", func() bool {
		if len(a.srv.Of("/").Adapter().Rooms(c.id)) > 0 {
			return false
		}
		return !routed || (!knowsRoom(b.c, a.c.NodeID(), "/", "room") && !knowsRoom(d.c, a.c.NodeID(), "/", "room"))
	})
	if err := d.srv.To("room").Emit(ctx, "e", 3); err != nil {
		t.Fatal(err)
	}
	again := dialRecovering(t, d.url, back.pid, back.offset)
	if again.id != c.id {
		t.Fatalf("not recovered on d: %s", d.log.find("session"))
	}
	if got := again.event(); got != 3 {
		t.Fatalf("on d: event %d, want 3", got)
	}
}

// The cuts a restore keeps in the session's record stay there when the
// client comes back to the same node after its record was written as away.
func TestRecoveryCutsKeptOnTakeOver(t *testing.T) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	_, b, d, c := awayFromA(t, redis, recoveryBuses(t, redis.URL(), true))
	if err := d.srv.To("room").Emit(ctx, "e", 1); err != nil {
		t.Fatal(err)
	}
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatal("not recovered on b")
	}
	back.event()
	testwait.For(t, waitTimeout, "the cuts in b's record", func() bool {
		return strings.Contains(sessionRecordOf(t, redis, c.pid), `"cuts"`)
	})
	back.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	again := dialRecovering(t, b.url, back.pid, back.offset)
	if again.id != c.id {
		t.Fatal("not taken over on b")
	}
	testwait.For(t, waitTimeout, "the record written again, connected", func() bool {
		keys, err := redis.Do(ctx, "KEYS", "*:kv:session:"+c.pid)
		if err != nil || len(keys.([]any)) != 1 {
			return false
		}
		ttl, err := redis.Do(ctx, "PTTL", keys.([]any)[0].(string))
		return err == nil && ttl.(int64) > socketio.DefaultMaxDisconnectionDuration.Milliseconds()
	})
	if r := sessionRecordOf(t, redis, c.pid); !strings.Contains(r, `"cuts"`) {
		t.Fatalf("the cuts are gone from the record: %s", r)
	}
}

// A node that drained and started again under the same id restores the
// session of a client of its earlier process, with what it emitted itself
// to the client's rooms before the client was back.
func TestRecoveryRoutedRestartSameID(t *testing.T) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	rec := &socketio.RecoveryOptions{}
	buses := recoveryBuses(t, redis.URL(), true)
	var busA bus.Bus
	nodes := recoveryNodesN(t, 2, func(id string) bus.Bus {
		b := buses(id)
		if id == "node-0" {
			busA = b
		}
		return b
	}, true, rec)
	a, b := nodes[0], nodes[1]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	c.c.CloseNow()
	sctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	a.drain(t)
	if err := busA.Close(sctx); err != nil {
		t.Fatal(err)
	}
	bus2 := buses("node-0") // a again, a new process under the same id
	c2, err := New(bus2, &Options{InterestRouting: true, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := c2.Close(ctx); err != nil {
			t.Error(err)
		}
		if err := bus2.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	waitMesh(t, []*Cluster{c2, b.c})
	srv2 := socketio.NewServer(&socketio.Options{Adapter: c2.Adapter, Recovery: rec})
	srv2.Use(func(_ context.Context, so *socketio.Socket) error { so.Join("room"); return nil })
	url2 := serve(t, srv2)
	if err := c2.AwaitRouting(ctx, "/"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		if err := srv2.To("room").Emit(ctx, "e", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.srv.To("room").Emit(ctx, "e", 4); err != nil {
		t.Fatal(err)
	}
	back := dialRecovering(t, url2, c.pid, c.offset)
	if back.id != c.id {
		t.Fatal("not recovered on the restarted a")
	}
	// a's 1, 2, 3 in order, b's 4 among them (no order between origins).
	next, fromB := 1, false
	for range 4 {
		switch got := back.event(); {
		case got == 4 && !fromB:
			fromB = true
		case got == next && next <= 3:
			next++
		default:
			t.Fatalf("event %d, want %d of a or 4 of b (once)", got, next)
		}
	}
}

// A client whose connection breaks while it receives its replay, right after
// an event replayed from its earlier node's inbox, and that comes back to a
// third node, gets every event once, in order: or, when the offset it has no
// longer says what it got, a new session rather than events lost or twice.
func TestRecoveryBreakDuringReplay(t *testing.T) {
	redis := redistest.Standalone(t)
	nodes := recoveryNodesN(t, 3, recoveryBuses(t, redis.URL(), true), true, &socketio.RecoveryOptions{MaxMissedPackets: 100000})
	a, b, d := nodes[0], nodes[1], nodes[2]
	c := dialRecovering(t, a.url, "", "")
	a.routed(t)
	em := startEmitters(t, nodes, "room")
	next := []int64{1, 1, 1}
	take := func(r *recoveringClient) {
		t.Helper()
		v := int64(r.event())
		i, k := v/emitBase, v%emitBase
		if i < 0 || i > 2 || k != next[i] {
			t.Fatalf("event %d of node %d, want the next of %v", k, i, next)
		}
		next[i]++
	}
	for next[0] < 50 || next[1] < 50 || next[2] < 50 {
		take(c)
	}
	c.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	back := dialRecovering(t, b.url, c.pid, c.offset)
	if back.id != c.id {
		t.Fatal("not recovered on b")
	}
	partOf := func(off string) string { return strings.Split(off, "~")[3] }
	aPart := partOf(c.offset)
	var lastA string
	var nextA []int64
	for {
		take(back)
		if partOf(back.offset) != aPart {
			break
		}
		lastA, nextA = back.offset, slices.Clone(next)
	}
	if lastA == "" {
		t.Fatal("no event replayed from a's inbox: the test does not test")
	}
	back.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	next = nextA // the connection broke right after lastA
	again := dialRecovering(t, d.url, c.pid, lastA)
	if again.id != c.id {
		// Allowed when lastA was not the last event replayed from a's inbox.
		if line := d.log.find("session not recovered"); !strings.Contains(line, "older than the session's last move") {
			t.Fatalf("not recovered on d: %s", line)
		}
		return
	}
	for i := range nodes {
		em.past(t, i, next[i]+100)
	}
	em.stop()
	for i := range nodes {
		for next[i] <= em.last[i].Load() {
			take(again)
		}
	}
}

// slowConfirmBus signals its node's first cut answer, and sends the answers
// that confirm a second later.
type slowConfirmBus struct {
	*bus.Reliable
	on  *atomic.Bool
	cut chan struct{}
}

func (d slowConfirmBus) Send(ctx context.Context, to string, payload []byte) error {
	if d.on.Load() {
		if m, err := decodeMessage(payload); err == nil && m.kind == kindCutAnswer {
			if m.flags&flagFlushed != 0 {
				p := slices.Clone(payload)
				time.AfterFunc(time.Second, func() { _ = d.Reliable.Send(context.Background(), to, p) })
				return nil
			}
			select {
			case d.cut <- struct{}{}:
			default:
			}
		}
	}
	return d.Reliable.Send(ctx, to, payload)
}

// eventsUntil reads events of r until sentinel, and returns them.
func eventsUntil(r *recoveringClient, sentinel int) map[int]bool {
	got := map[int]bool{}
	for {
		n := r.event()
		got[n] = true
		if n == sentinel {
			return got
		}
	}
}

// A node makes the session join a room after it gave its cut, while the
// session is restored on b, which did not hold that room: what is sent to it
// may be in no inbox. The client gets every event to the room, or a new
// session saying so; never a session in the room that lacks some.
func TestRecoveryRoutedJoinDuringRestore(t *testing.T) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	newBus := redisEnv(redis.URL()).newCluster(t)
	var on atomic.Bool
	cut := make(chan struct{}, 1)
	buses := func(id string) bus.Bus {
		r := newBus(id)
		if id == "node-2" {
			return slowConfirmBus{Reliable: r, on: &on, cut: cut}
		}
		return r
	}
	_, b, d, c := awayFromA(t, redis, buses)
	on.Store(true)
	done := make(chan *recoveringClient, 1)
	go func() { done <- dialRecovering(t, b.url, c.pid, c.offset) }()
	select {
	case <-cut: // d gave its cut
	case <-time.After(waitTimeout):
		t.Fatal("no cut from d")
	}
	if err := d.srv.In(c.id).SocketsJoin(ctx, "r4"); err != nil {
		t.Fatal(err)
	}
	emitToJoined(t, b, d, "r4")
	checkJoined(t, b, d, c, <-done, "r4", `joined room "r4" while its session was restored`)
}

// emitToJoined emits 42 from b and 43 from d to room.
func emitToJoined(t *testing.T, b, d recoveryNode, room string) {
	t.Helper()
	ctx := testCtx(t)
	if err := b.srv.To(room).Emit(ctx, "e", 42); err != nil {
		t.Fatal(err)
	}
	if err := d.srv.To(room).Emit(ctx, "e", 43); err != nil {
		t.Fatal(err)
	}
}

// checkJoined checks back, client c restored on b after it was made to join
// room: a new session whose reason b logged, or c's session with the events
// emitToJoined sent (d's 99 to its id marks the end).
func checkJoined(t *testing.T, b, d recoveryNode, c, back *recoveringClient, room, reason string) {
	t.Helper()
	if back.id != c.id {
		if line := b.log.find("session not recovered"); !strings.Contains(line, reason) {
			t.Fatalf("not recovered: %s", line)
		}
		return
	}
	if err := d.srv.To(c.id).Emit(testCtx(t), "e", 99); err != nil {
		t.Fatal(err)
	}
	if got := eventsUntil(back, 99); !got[42] || !got[43] {
		t.Fatalf("restored in %s without events 42 and 43: %v", room, got)
	}
}

// A session made to join a room while away, after its node drained: that
// node's kept interest does not have the room, so what was sent to it is in
// no inbox the restore reads. The client gets a new session saying so, or
// every event.
func TestRecoveryRoutedJoinWhileAwayNodeGone(t *testing.T) {
	redis := redistest.Standalone(t)
	ctx := testCtx(t)
	a, b, d, c := awayFromA(t, redis, recoveryBuses(t, redis.URL(), true))
	a.drain(t)
	testwait.For(t, waitTimeout, "a's goodbye at b and d", func() bool {
		return !slices.Contains(b.c.Nodes(), "node-0") && !slices.Contains(d.c.Nodes(), "node-0")
	})
	if err := d.srv.In(c.id).SocketsJoin(ctx, "r3"); err != nil {
		t.Fatal(err)
	}
	emitToJoined(t, b, d, "r3")
	checkJoined(t, b, d, c, dialRecovering(t, b.url, c.pid, c.offset), "r3", "joined rooms while away and its node is gone")
}

// awayFromA starts three routed nodes a, b and d on buses, and a client of
// a whose connection broke and whose session a stored as away.
func awayFromA(t *testing.T, redis *redistest.Server, buses func(id string) bus.Bus) (a, b, d recoveryNode, c *recoveringClient) {
	t.Helper()
	nodes := recoveryNodesN(t, 3, buses, true, &socketio.RecoveryOptions{})
	a, b, d = nodes[0], nodes[1], nodes[2]
	c = dialRecovering(t, a.url, "", "")
	a.routed(t)
	c.c.CloseNow()
	awayStored(t, redis, c.pid, socketio.DefaultMaxDisconnectionDuration)
	return a, b, d, c
}
