package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
)

// Two live processes under one node id (a misconfiguration the bus reports)
// each have sockets in a room of their own: a node that routes to that id
// routes by the interest of both, so no event to either room is lost.
func TestRoutingTwoProcessesOneNodeID(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	opts := routingOptions()
	opts.Logger = quietLogger
	mk := func(id string) *Cluster {
		b := reliableBus(t, hub.Transport(), id)
		o := *opts
		c, err := New(b, &o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			_ = c.Close(ctx)
			_ = b.Close(ctx)
		})
		return c
	}
	cs := []*Cluster{mk("node-0"), mk("dup"), mk("dup")}
	ns := bind(t, cs, "/")
	sa := connect(ns[1], sid("a"), "a")
	sb := connect(ns[2], sid("b"), "b")
	testwait.For(t, waitTimeout, "node-0 to hold the interest of both processes of dup", func() bool {
		r := cs[0].route
		r.mu.Lock()
		defer r.mu.Unlock()
		n := r.peers["dup"]
		return n != nil && len(n.insts) == 2
	})
	// AwaitRouting waits for the nodes this process has heard from: one
	// that has not heard node-0 yet would return at once, confirming
	// nothing (under load, events 0–5 of b were then routed by an earlier
	// announcement of process 2, without b, and lost).
	for _, i := range []int{1, 2} {
		testwait.For(t, waitTimeout, "dup process to hear node-0", func() bool {
			return slices.Contains(cs[i].liveNodes(), "node-0")
		})
	}
	for _, i := range []int{1, 2} {
		if err := cs[i].AwaitRouting(testCtx(t), "/"); err != nil {
			t.Fatalf("AwaitRouting of dup process %d: %v", i, err)
		}
	}
	const n = 200
	for i := range n {
		emit(t, ns[0].a, "a", i, "a")
		emit(t, ns[0].a, "b", i, "b")
	}
	for _, s := range []struct {
		name string
		ev   string
		got  func() int
		wait func(context.Context, int) error
	}{
		{"dup's socket in room a", "a", func() int { return len(sa.Messages()) }, func(ctx context.Context, k int) error { _, err := sa.WaitMessages(ctx, k); return err }},
		{"dup's socket in room b", "b", func() int { return len(sb.Messages()) }, func(ctx context.Context, k int) error { _, err := sb.WaitMessages(ctx, k); return err }},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := s.wait(ctx, n)
		cancel()
		if err != nil {
			t.Errorf("%s: %d of %d events (%d lost): %v", s.name, s.got(), n, n-s.got(), err)
		}
	}
	checkSeq(t, "dup's socket in room a", sa.Messages(), "a", n)
	checkSeq(t, "dup's socket in room b", sb.Messages(), "b", n)
}

// A node restarted under the same id whose clock is behind its earlier
// process announces lower versions: they are another instance's, taken as
// they come, and the node is routed to for the rooms of the new process, the
// answer to its AwaitRouting being the version it announced.
func TestRoutingRestartWithLowerVersion(t *testing.T) {
	c := &Cluster{opts: Options{NodeTimeout: time.Minute}, nodes: map[string]time.Time{}, gone: map[string]time.Time{}}
	c.route = newRouteState(nil, "")
	old := &message{kind: kindInterest, version: 2000, interest: []nspInterest{{nsp: "/", flags: interestSockets}}}
	if v, ok := c.applyInterest("b", 1, old); !ok || v != 2000 {
		t.Fatalf("first process: applied %d %v, want 2000", v, ok)
	}
	in := nspInterest{nsp: "/", flags: interestSockets}
	in.rooms.set(roomBucket("r"))
	v, ok := c.applyInterest("b", 2, &message{kind: kindInterest, version: 1000, interest: []nspInterest{in}})
	if !ok || v != 1000 {
		t.Errorf("restarted process (version 1000 < 2000 of the earlier one): applied %d %v, want 1000", v, ok)
	}
	if !slices.Contains(c.routeTargets("/", []string{"r"}, false), "b") {
		t.Errorf("room r of the restarted process is not routed to")
	}
	// Within one instance a later announcement replaces, an earlier one not.
	if v, _ := c.applyInterest("b", 2, &message{kind: kindInterest, version: 999}); v != 1000 {
		t.Errorf("an older announcement of the same instance: held %d, want 1000", v)
	}
	if v, _ := c.applyInterest("b", 2, &message{kind: kindInterest, version: 1001}); v != 1001 {
		t.Errorf("a newer announcement of the same instance: held %d, want 1001", v)
	}
	if slices.Contains(c.routeTargets("/", []string{"r"}, false), "b") {
		t.Errorf("room r left by the restarted process (version 1001) is still routed to")
	}
}

// An instance not heard for NodeTimeout (a process that ended or was
// replaced by a restart) stops counting, although the node id is alive by
// another instance; the node is forgotten when none is left.
func TestRoutingSilentInstanceDropped(t *testing.T) {
	const timeout = time.Second
	r := newRouteState(nil, "")
	now := time.Now()
	r.connectedAt.Store(now.Add(-time.Hour).UnixNano())
	sockets := map[string]*nspInterest{"/": {nsp: "/", flags: interestSockets}}
	r.peers["b"] = &peerNode{insts: map[uint64]*peerInterest{
		1: {version: 9, heard: now.Add(-2 * timeout), nsps: sockets},
		2: {version: 1, heard: now, nsps: sockets},
	}}
	r.peers["gone"] = &peerNode{insts: map[uint64]*peerInterest{1: {heard: now.Add(-2 * timeout)}}}
	r.expire(now, map[string]bool{"b": true}, timeout, timeout)
	if n := r.peers["b"]; n == nil || len(n.insts) != 1 || n.insts[2] == nil {
		t.Errorf("b holds %v, want instance 2 only", n)
	}
	if r.peers["gone"] != nil {
		t.Errorf("a node whose every instance is silent is kept")
	}
}

// An answer to AwaitRouting names the instance whose version it holds: one
// for another process under this node's id does not count, one of a node of
// an earlier version (no instance) does.
func TestRoutingAppliedAnswerOfOtherInstance(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, routingOptions(), func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	c := cs[0]
	own := c.route.bus.Instance()
	rw := &routingWaiter{version: 10, answered: make(map[string]bool), wake: make(chan struct{}, 1)}
	c.route.waiters.add(rw)
	defer c.route.waiters.remove(rw)
	answer := func(from string, inst uint64) bool {
		c.receive(bus.Message{Origin: from, Payload: (&message{kind: kindInterestApplied, version: 10, instance: inst}).marshal()})
		c.route.waiters.mu.Lock()
		defer c.route.waiters.mu.Unlock()
		return rw.answered[from]
	}
	if answer("x", own+1) {
		t.Errorf("an answer to another instance counted")
	}
	if !answer("x", own) {
		t.Errorf("an answer to this instance did not count")
	}
	if !answer("y", 0) {
		t.Errorf("an answer without instance (a node of an earlier version) did not count")
	}
}

// Each room a socketsJoin grants has its own end: a later socketsJoin to the
// same node for another room does not extend it, and expire drops it.
func TestRoutingGracePerRoom(t *testing.T) {
	r := newRouteState(nil, "")
	c := &Cluster{opts: Options{NodeTimeout: time.Second}, nodes: map[string]time.Time{}, route: r}
	t0 := time.Now()
	r.peers["b"] = &peerNode{insts: map[uint64]*peerInterest{1: {version: 1, heard: t0, nsps: map[string]*nspInterest{"/": {nsp: "/", flags: interestSockets}}}}}
	r.markGrace([]string{"b"}, "/", []string{"old"}, t0.Add(time.Second))
	r.markGrace([]string{"b"}, "/", []string{"new"}, t0.Add(1900*time.Millisecond))
	later := t0.Add(1500 * time.Millisecond) // the grace of old is over, that of new not
	r.mu.Lock()
	if r.interestedLocked(c, "b", "/", []string{"old"}, later) {
		t.Errorf("room old, granted until t0+1s, still routed at t0+1.5s")
	}
	if !r.interestedLocked(c, "b", "/", []string{"new"}, later) {
		t.Errorf("room new, granted until t0+1.9s, not routed at t0+1.5s")
	}
	r.mu.Unlock()
	r.expire(later, map[string]bool{"b": true}, time.Hour, time.Hour)
	if g := r.grace[graceKey{"b", "/"}]; g == nil || len(g.rooms) != 1 {
		t.Errorf("grace after expire at t0+1.5s: %v, want the bucket of new only", g)
	}
	r.expire(t0.Add(2*time.Second), map[string]bool{"b": true}, time.Hour, time.Hour)
	if g := r.grace[graceKey{"b", "/"}]; g != nil {
		t.Errorf("grace after every room's end: %v, want none", g)
	}
}

// The goodbye of one of two processes under one node id leaves the node alive
// and routed to for what the other process wants; the goodbye of the last
// one makes it leave.
func TestRoutingGoodbyeOfOneProcess(t *testing.T) {
	hub := bus.NewMemoryHubConfig(routedHubConfig)
	cs := startNodes(t, 1, routingOptions(), func(id string) bus.Bus { return reliableBus(t, hub.Transport(), id) })
	c := cs[0]
	from := func(inst uint64, m *message) {
		c.receive(bus.Message{Origin: "dup", Instance: inst, Payload: m.marshal()})
	}
	for inst, room := range map[uint64]string{1: "a", 2: "b"} {
		in := nspInterest{nsp: "/", flags: interestSockets}
		in.rooms.set(roomBucket(room))
		from(inst, &message{kind: kindHeartbeat})
		from(inst, &message{kind: kindInterest, version: 5, interest: []nspInterest{in}})
	}
	from(1, &message{kind: kindGoodbye})
	if !slices.Contains(c.liveNodes(), "dup") {
		t.Fatalf("the goodbye of one of dup's two processes made dup leave")
	}
	if !slices.Contains(c.routeTargets("/", []string{"b"}, false), "dup") {
		t.Errorf("room b of dup's remaining process is not routed to")
	}
	if slices.Contains(c.routeTargets("/", []string{"a"}, false), "dup") {
		t.Errorf("room a of dup's process that left is still routed to")
	}
	from(2, &message{kind: kindGoodbye})
	if slices.Contains(c.liveNodes(), "dup") || slices.Contains(c.routeTargets("/", nil, true), "dup") {
		t.Errorf("dup is still live or routed to after the goodbye of its last process")
	}
}
