package cluster

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// noRecord hides the bus's membership record (and every other capability
// beyond bus.Bus): the node sends heartbeats, as a node of an earlier version
// or on a bus without a record does.
type noRecord struct{ bus.Bus }

// commandCalls returns how often Redis ran each command so far (INFO
// commandstats).
func commandCalls(t testing.TB, srv *redistest.Server) map[string]int {
	t.Helper()
	r, err := srv.Do(context.Background(), "INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := r.(string)
	out := make(map[string]int)
	for _, m := range regexp.MustCompile(`cmdstat_([a-z|]+):calls=(\d+)`).FindAllStringSubmatch(s, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// directFrames is how many frames the direct plane carried (PUBLISH, SPUBLISH)
// and how many beats the record took (EVALSHA) during d.
func directFrames(t testing.TB, srv *redistest.Server, d time.Duration) (frames, beats int) {
	t.Helper()
	before := commandCalls(t, srv)
	time.Sleep(d) // a window of time to count in
	after := commandCalls(t, srv)
	for _, c := range []string{"publish", "spublish"} {
		frames += after[c] - before[c]
	}
	// EVAL is also the streams transport's trim check: the record's script
	// runs as EVALSHA (EVAL only the first time on a Redis).
	beats = after["evalsha"] - before["evalsha"]
	return frames, beats
}

// rosterOptions beat often, so that a test sees many intervals.
func rosterOptions() *Options {
	return &Options{HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: 400 * time.Millisecond}
}

// TestRosterReplacesHeartbeats: on Redis, nodes write the membership record
// instead of sending heartbeats: an idle cluster's direct plane carries no
// frame at all, one beat per node per interval goes to Redis, every node
// keeps knowing the others for many NodeTimeouts, and a node that stops
// (its bus closed, no goodbye) times out on the others. The control, the
// same nodes without the record, sends a heartbeat (and its interest) per
// node per interval.
func TestRosterReplacesHeartbeats(t *testing.T) {
	for _, record := range []bool{true, false} {
		t.Run(map[bool]string{true: "record", false: "heartbeats"}[record], func(t *testing.T) {
			srv := redistest.Standalone(t)
			newBus := redisBuses(t, srv.URL(), redisbus.Streams)
			var buses []bus.Bus
			cs := startNodes(t, 3, rosterOptions(), func(id string) bus.Bus {
				b := newBus(id)
				buses = append(buses, b)
				if !record {
					return noRecord{b}
				}
				return b
			})
			for _, c := range cs {
				if (c.roster != nil) != record {
					t.Fatalf("%s: record in use %v, want %v", c.NodeID(), c.roster != nil, record)
				}
			}
			if record {
				testwait.For(t, waitTimeout, "the hellos of the start, and their answers, to end", func() bool {
					frames, _ := directFrames(t, srv, 2*rosterOptions().HeartbeatInterval)
					return frames == 0
				})
			} else {
				time.Sleep(10 * rosterOptions().HeartbeatInterval) // heartbeats go on: only the start's hellos end
			}
			window := 20 * rosterOptions().HeartbeatInterval
			frames, beats := directFrames(t, srv, window)
			t.Logf("%v with 3 idle nodes: %d direct frames, %d beats", window, frames, beats)
			if record {
				if frames != 0 {
					t.Errorf("direct frames in an idle cluster with the record: %d, want 0", frames)
				}
				if beats < 3 || beats > 3*(20+2) {
					t.Errorf("beats: %d, want one per node per interval (3 to 66)", beats)
				}
			} else if frames < 3*5 || beats != 0 {
				t.Errorf("without the record: %d direct frames (want heartbeats, ≥ 15), %d beats (want 0)", frames, beats)
			}
			for _, c := range cs {
				if n := len(c.Nodes()); n != 2 {
					t.Fatalf("%s knows %v after %v, want the 2 others", c.NodeID(), c.Nodes(), window)
				}
			}

			// Node 2 stops without goodbye.
			if err := buses[2].Close(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			testwait.For(t, waitTimeout, "node 2 to time out on the others", func() bool {
				return !slices.Contains(cs[0].Nodes(), cs[2].NodeID()) && !slices.Contains(cs[1].Nodes(), cs[2].NodeID())
			})
			if record && cs[0].roster.staled.Load()+cs[1].roster.staled.Load() == 0 {
				// Its entry turned stale NodeTimeout after its last beat; the
				// others' own clocks time it out only an interval later.
				t.Error("node 2 timed out by silence alone: no node read that its entry turned stale")
			}
			if !slices.Contains(cs[0].Nodes(), cs[1].NodeID()) || !slices.Contains(cs[1].Nodes(), cs[0].NodeID()) {
				t.Fatalf("the nodes that stayed lost each other: %v, %v", cs[0].Nodes(), cs[1].Nodes())
			}
		})
	}
}

// TestRosterWithNodeWithoutRecord: a node that does not write the record
// (an earlier version) joins nodes that do: they send it heartbeats, so that
// no one times out on anyone; once it left, they stop.
func TestRosterWithNodeWithoutRecord(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	cs := startNodes(t, 3, rosterOptions(), func(id string) bus.Bus {
		b := newBus(id)
		if id == "node-2" {
			return noRecord{b}
		}
		return b
	})
	time.Sleep(3 * rosterOptions().NodeTimeout) // longer than any node would wait for a heartbeat
	for _, c := range cs {
		if n := len(c.Nodes()); n != 2 {
			t.Fatalf("%s knows %v after 3 node timeouts, want the 2 others", c.NodeID(), c.Nodes())
		}
	}
	if frames, _ := directFrames(t, srv, 10*rosterOptions().HeartbeatInterval); frames < 3*3 {
		t.Errorf("direct frames with a node without the record: %d, want every node's heartbeats (≥ 9)", frames)
	}

	ctx := testCtx(t)
	if err := cs[2].Close(ctx); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "the others to stop sending heartbeats once it left", func() bool {
		frames, _ := directFrames(t, srv, 4*rosterOptions().HeartbeatInterval)
		return frames == 0
	})
	for _, c := range cs[:2] {
		if n := len(c.Nodes()); n != 1 {
			t.Fatalf("%s knows %v, want the other node with the record", c.NodeID(), c.Nodes())
		}
	}
}

// flakyRecord is a bus whose membership record refuses beats while fail is
// set, or delays each beat by slow first (a beat under way when Close leaves).
type flakyRecord struct {
	bus.Bus
	fail atomic.Bool
	// written: a failing beat is written all the same (its reply is lost).
	written bool
	slow    time.Duration
	// blind: beats are written, but read no change; full: the next beat
	// reads the whole record.
	blind, full atomic.Bool
	// byeDelay holds back the delivery of each goodbye (a receive backlog).
	byeDelay time.Duration
}

func (f *flakyRecord) Receive(h bus.Handler) {
	f.Bus.Receive(func(m bus.Message) {
		if f.byeDelay > 0 {
			if dm, err := decodeMessage(m.Payload); err == nil && dm.kind == kindGoodbye {
				time.Sleep(f.byeDelay)
			}
		}
		h(m)
	})
}

func (f *flakyRecord) Instance() uint64 {
	return f.Bus.(interface{ Instance() uint64 }).Instance()
}

func (f *flakyRecord) Roster() (bus.Roster, error) {
	ro, err := f.Bus.(interface{ Roster() (bus.Roster, error) }).Roster()
	if err != nil {
		return nil, err
	}
	return flakyRoster{ro, f}, nil
}

type flakyRoster struct {
	bus.Roster
	f *flakyRecord
}

var errBeatRefused = errors.New("beat refused")

func (r flakyRoster) Beat(ctx context.Context, b bus.RosterBeat) (bus.RosterView, error) {
	if r.f.fail.Load() {
		if r.f.written {
			_, _ = r.Roster.Beat(ctx, b)
		}
		return bus.RosterView{}, errBeatRefused
	}
	if r.f.blind.Load() {
		_, err := r.Roster.Beat(ctx, b)
		return bus.RosterView{Version: b.Since}, err
	}
	if r.f.full.CompareAndSwap(true, false) {
		b.Since = bus.RosterVersion{}
	}
	if r.f.slow > 0 && !b.Leave {
		time.Sleep(r.f.slow)
		// Written before the caller gave up: Redis runs it anyway.
		ctx = context.WithoutCancel(ctx)
	}
	return r.Roster.Beat(ctx, b)
}

// TestRosterOneNodeCannotWrite: one node's beats fail (its beats alone)
// for three NodeTimeouts while the direct plane works: refused, so that its
// entry turns stale, or written with their replies lost, so that its entry
// stays fresh while it reads none. The others hear its heartbeats, which ask
// for theirs: no node times out any other. Once its beats succeed again, the
// heartbeats stop.
func TestRosterOneNodeCannotWrite(t *testing.T) {
	for _, written := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "reply-lost"}[written], func(t *testing.T) {
			testOneNodeCannotWrite(t, written)
		})
	}
}

func testOneNodeCannotWrite(t *testing.T, written bool) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	flaky := &flakyRecord{written: written}
	cs := startNodes(t, 3, rosterOptions(), func(id string) bus.Bus {
		if id == "node-2" {
			flaky.Bus = newBus(id)
			return flaky
		}
		return newBus(id)
	})
	if cs[2].roster == nil {
		t.Fatal("node 2 does not use the record")
	}
	var before [3]uint64
	for i, c := range cs {
		before[i] = c.Stats().NodeTimeouts
	}
	flaky.fail.Store(true)
	time.Sleep(3 * rosterOptions().NodeTimeout) // a window to count timeouts in
	for i, c := range cs {
		if n := c.Stats().NodeTimeouts - before[i]; n != 0 || len(c.Nodes()) != 2 {
			t.Fatalf("%s timed out %d nodes while node 2 could not write the record, knows %v; want 0 and the 2 others", c.NodeID(), n, c.Nodes())
		}
	}
	if frames, _ := directFrames(t, srv, 4*rosterOptions().HeartbeatInterval); frames < 3*2 {
		t.Errorf("direct frames while node 2 cannot write: %d, want every node's heartbeats", frames)
	}
	flaky.fail.Store(false)
	testwait.For(t, waitTimeout, "the heartbeats to stop once node 2 writes again", func() bool {
		frames, _ := directFrames(t, srv, 4*rosterOptions().HeartbeatInterval)
		return frames == 0
	})
	for i, c := range cs {
		if n := c.Stats().NodeTimeouts - before[i]; n != 0 || len(c.Nodes()) != 2 {
			t.Fatalf("%s timed out %d nodes, knows %v; want 0 and the 2 others", c.NodeID(), n, c.Nodes())
		}
	}
}

// TestRosterFullReadStale: a node that reads the whole record (a new epoch,
// its periodic whole read, or after its beats failed) and finds there stale
// the entry of a process it held as fresh times that node out. Node 0 reads
// no change while node 2 stops, then reads the whole record.
func TestRosterFullReadStale(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	reader := &flakyRecord{}
	var buses []bus.Bus
	cs := startNodes(t, 3, rosterOptions(), func(id string) bus.Bus {
		b := newBus(id)
		buses = append(buses, b)
		if id == "node-0" {
			reader.Bus = b
			return reader
		}
		return b
	})
	testwait.For(t, waitTimeout, "node 0 to read node 2's entry", func() bool {
		rs := cs[0].roster
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return rs.freshNodeLocked(cs[2].NodeID())
	})
	reader.blind.Store(true)
	if err := buses[2].Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 1 to read that node 2's entry turned stale", func() bool {
		return !slices.Contains(cs[1].Nodes(), cs[2].NodeID())
	})
	if !slices.Contains(cs[0].Nodes(), cs[2].NodeID()) {
		t.Fatal("node 0 timed node 2 out while it read no change")
	}
	reader.full.Store(true)
	reader.blind.Store(false)
	testwait.For(t, waitTimeout, "node 0 to time node 2 out", func() bool {
		return !slices.Contains(cs[0].Nodes(), cs[2].NodeID())
	})
	if n := cs[0].roster.staled.Load(); n != 1 {
		t.Fatalf("node 0 timed node 2 out by silence, not by the whole record's stale entry (%d)", n)
	}
}

// TestRosterPauseRevivesNoOne: no node can write the record (every beat
// refused) while node 2 crashes; the others time it out by silence. Once
// they write again, the record moves node 2's bound on by the pause, like
// every other; but its entry is only unconfirmed, no sign of life: no node
// takes node 2 for live again (which would time it out a second time).
func TestRosterPauseRevivesNoOne(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	opts := rosterOptions()
	var flaky []*flakyRecord
	var buses []bus.Bus
	cs := startNodes(t, 3, opts, func(id string) bus.Bus {
		b := newBus(id)
		buses = append(buses, b)
		f := &flakyRecord{Bus: b}
		flaky = append(flaky, f)
		return f
	})
	testwait.For(t, waitTimeout, "every node to read every entry", func() bool {
		for _, c := range cs {
			rs := c.roster
			rs.mu.Lock()
			n := len(rs.fresh)
			rs.mu.Unlock()
			if n != len(cs)-1 {
				return false
			}
		}
		return true
	})
	for _, f := range flaky {
		f.fail.Store(true)
	}
	time.Sleep(opts.HeartbeatInterval)
	if err := buses[2].Close(testCtx(t)); err != nil { // a crash: no goodbye
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 2 to time out by silence", func() bool {
		return !slices.Contains(cs[0].Nodes(), cs[2].NodeID()) && !slices.Contains(cs[1].Nodes(), cs[2].NodeID())
	})
	time.Sleep(2 * opts.NodeTimeout) // the pause outlasts node 2's bound
	before := [2]uint64{cs[0].Stats().NodeTimeouts, cs[1].Stats().NodeTimeouts}
	for _, f := range flaky[:2] {
		f.fail.Store(false)
	}
	time.Sleep(3 * opts.NodeTimeout) // a node taken for live again would time out again meanwhile
	for i, c := range cs[:2] {
		if n := c.Stats().NodeTimeouts - before[i]; n != 0 || len(c.Nodes()) != 1 {
			t.Fatalf("%s after the pause: %d more timeouts, knows %v; want 0 and node 2 gone", c.NodeID(), n, c.Nodes())
		}
	}
}

// TestRosterLeaveBeforeGoodbye: node 2 closes (goodbye, then leave); node 1
// handles the goodbye late (a receive backlog) and reads the leave first. It
// takes node 2 as left, not as timed out.
func TestRosterLeaveBeforeGoodbye(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	late := &flakyRecord{byeDelay: 2 * rosterOptions().HeartbeatInterval * 2}
	cs := startNodes(t, 3, rosterOptions(), func(id string) bus.Bus {
		if id == "node-1" {
			late.Bus = newBus(id)
			return late
		}
		return newBus(id)
	})
	time.Sleep(2 * rosterOptions().NodeTimeout) // no direct frame since the start
	before := cs[1].Stats().NodeTimeouts
	if err := cs[2].Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 2 gone on node 1", func() bool {
		return !slices.Contains(cs[1].Nodes(), cs[2].NodeID())
	})
	testwait.For(t, waitTimeout, "node 1 to take node 2's goodbye", func() bool {
		cs[1].mu.RLock()
		defer cs[1].mu.RUnlock()
		_, bye := cs[1].gone[cs[2].NodeID()]
		return bye
	})
	if n := cs[1].Stats().NodeTimeouts - before; n != 0 {
		t.Fatalf("node 1 counted node 2, which closed, as timed out (%d)", n)
	}
}

// TestRosterStaleHeardCountsFromLastFrame: node 2 stops beating, sends one
// direct frame (an answer, an announcement) and crashes. Its entry turns
// stale while the frame is recent, so the others keep it until it falls
// silent: from then on its life counts from that frame, not from the
// record's last word that it lived, as without the record.
func TestRosterStaleHeardCountsFromLastFrame(t *testing.T) {
	srv := redistest.Standalone(t)
	opts := rosterOptions()
	opts.NodeTimeout = 3 * time.Second // the frame is recent when the entry turns stale
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	var b2 bus.Bus
	cs := startNodes(t, 3, opts, func(id string) bus.Bus {
		b := newBus(id)
		if id == "node-2" {
			b2 = b
		}
		return b
	})
	held := func(c *Cluster) bool {
		rs := c.roster
		rs.mu.Lock()
		defer rs.mu.Unlock()
		return rs.freshNodeLocked("node-2")
	}
	testwait.For(t, waitTimeout, "node 0 to read node 2's entry", func() bool { return held(cs[0]) })
	cs[2].stopBeats()
	<-cs[2].beatsDone
	time.Sleep(opts.NodeTimeout * 2 / 3) // the frame goes out a NodeTimeout/3 before the entry's bound
	if err := b2.Send(testCtx(t), "", (&message{kind: kindApplied, reqID: 12345}).marshal()); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 0 to hear node 2's frame", func() bool {
		cs[0].mu.RLock()
		defer cs[0].mu.RUnlock()
		_, ok := cs[0].directAt["node-2"]
		return ok
	})
	if err := b2.Close(testCtx(t)); err != nil { // a crash: no goodbye
		t.Fatal(err)
	}
	testwait.For(t, waitTimeout, "node 0 to read node 2's entry stale", func() bool { return !held(cs[0]) })
	cs[0].mu.RLock()
	seen, known := cs[0].nodes["node-2"]
	at := cs[0].directAt["node-2"]
	insts := len(cs[0].insts["node-2"])
	cs[0].mu.RUnlock()
	if !known {
		t.Fatal("node 0 timed node 2 out although its frame was recent")
	}
	if seen.After(at) || insts != 0 {
		t.Fatalf("node 2 counts as heard at %v, its last frame at %v, with %d live processes: the stale entry still keeps it alive", seen, at, insts)
	}
	testwait.For(t, waitTimeout, "node 0 to time node 2 out", func() bool { return !slices.Contains(cs[0].Nodes(), "node-2") })
}

// TestRosterRestartSameIDThenClose: node 2 crashes and starts again at once
// under the same id (a new process). Once the old process's entry turned
// stale, the new process closes with a goodbye: the node leaves (it is not
// kept for the old process, nor counted as timed out), with the record as
// with heartbeats.
func TestRosterRestartSameIDThenClose(t *testing.T) {
	for _, record := range []bool{true, false} {
		t.Run(map[bool]string{true: "record", false: "heartbeats"}[record], func(t *testing.T) {
			srv := redistest.Standalone(t)
			opts := rosterOptions()
			newBus := redisBuses(t, srv.URL(), redisbus.Streams)
			wrap := func(b bus.Bus) bus.Bus {
				if !record {
					return noRecord{b}
				}
				return b
			}
			var b2 bus.Bus
			cs := startNodes(t, 2, opts, func(id string) bus.Bus {
				b := newBus(id)
				if id == "node-1" {
					b2 = b
				}
				return wrap(b)
			})
			time.Sleep(2 * opts.NodeTimeout) // only the record, no direct frame
			before := cs[0].Stats().NodeTimeouts
			if err := b2.Close(testCtx(t)); err != nil { // the old process crashes
				t.Fatal(err)
			}
			nb := newBus("node-1")
			o := *opts
			o.Logger = quietLogger
			n1, err := New(wrap(nb), &o)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = nb.Close(testCtx(t)) }()
			old := b2.(interface{ Instance() uint64 }).Instance()
			testwait.For(t, waitTimeout, "node 0 to read the old process's entry stale, or time it out", func() bool {
				if rs := cs[0].roster; rs != nil {
					rs.mu.Lock()
					defer rs.mu.Unlock()
					_, held := rs.fresh[instKey{"node-1", old}]
					return !held
				}
				cs[0].mu.RLock()
				defer cs[0].mu.RUnlock()
				_, alive := cs[0].insts["node-1"][old]
				return !alive
			})
			if !slices.Contains(cs[0].Nodes(), "node-1") {
				t.Fatal("node 0 lost node 1, which was started again")
			}
			if err := n1.Close(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			testwait.For(t, waitTimeout, "node 1 to leave node 0", func() bool { return !slices.Contains(cs[0].Nodes(), "node-1") })
			if n := cs[0].Stats().NodeTimeouts - before; n != 0 {
				t.Fatalf("node 0 counted %d timeouts; want 0: the only live process of node 1 said goodbye", n)
			}
		})
	}
}

// TestRosterCloseLeaves: Close stops the beats before it leaves, so that a
// beat under way cannot make the entry fresh again after it: once Close
// returns, every node reads the entry stale.
func TestRosterCloseLeaves(t *testing.T) {
	srv := redistest.Standalone(t)
	newBus := redisBuses(t, srv.URL(), redisbus.Streams)
	opts := rosterOptions()
	slow := &flakyRecord{slow: 2 * opts.HeartbeatInterval}
	cs := startNodes(t, 2, opts, func(id string) bus.Bus {
		if id == "node-1" {
			slow.Bus = newBus(id)
			return slow
		}
		return newBus(id)
	})
	time.Sleep(3 * slow.slow) // beats of node 1 under way
	if err := cs[1].Close(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ro, err := cs[0].bus.(*bus.Reliable).Roster()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * slow.slow) // a beat that Close did not wait for would land meanwhile
	v, err := ro.Beat(testCtx(t), bus.RosterBeat{Node: "reader", Instance: 1, Stale: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range v.Changed {
		if e.Node == cs[1].NodeID() && e.Fresh {
			t.Fatalf("node 1's entry is fresh after its Close: %+v", e)
		}
	}
}

// TestRosterMissedInterestAsked: with interest routing and the record, no
// heartbeat carries a node's interest again. A node that missed an
// announcement (it heard nothing meanwhile) sees in the record that the
// announcer announced a version it does not hold, asks for it, and routes
// to the room.
func TestRosterMissedInterestAsked(t *testing.T) {
	srv := redistest.Standalone(t)
	opts := routingOptions()
	opts.HeartbeatInterval, opts.NodeTimeout = rosterOptions().HeartbeatInterval, rosterOptions().NodeTimeout
	cs, buses := routedNodes(t, redisEnv(srv.URL()), 2, opts)
	ns := bind(t, cs, "/")
	s := connect(ns[1], sid("s"))
	waitSettled(t, cs, "/")

	buses[0].deaf.Store(true)
	before := cs[1].route.announced.Load()
	ns[1].a.Join(s.ID(), "room")
	testwait.For(t, waitTimeout, "node 1 to announce the join to every node", func() bool {
		return cs[1].route.announced.Load() > before
	})
	time.Sleep(2 * opts.HeartbeatInterval) // node 0 beats, deaf, meanwhile
	if slices.Contains(cs[0].routeTargets("/", []string{"room"}, false), cs[1].NodeID()) {
		t.Fatal("node 0 routes to the room although it heard no announcement")
	}
	buses[0].deaf.Store(false)
	testwait.For(t, waitTimeout, "node 0 to learn node 1's interest", func() bool {
		return slices.Contains(cs[0].routeTargets("/", []string{"room"}, false), cs[1].NodeID())
	})
	for _, c := range cs {
		if c.roster == nil || c.needsHeartbeats(true, time.Now()) {
			t.Fatalf("%s: record %v, sends heartbeats %v; want the record alone", c.NodeID(), c.roster != nil, c.roster == nil || c.needsHeartbeats(true, time.Now()))
		}
	}
	emit(t, ns[0].a, "after", 0, "room")
	msgs, err := s.WaitMessages(testCtx(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	checkSeq(t, "socket", msgs, "after", 1)
}

// BenchmarkIdleLiveness measures what keeps an idle cluster's nodes knowing
// each other, with the membership record and without it (heartbeats), for
// 2 to 16 nodes on one Redis: per node and heartbeat interval, the direct
// frames sent (PUBLISH), the cluster messages delivered, and the record's
// beats (EVALSHA). Run with -benchtime 1x.
//
//	go test ./cluster -run '^$' -bench IdleLiveness -benchtime 1x
func BenchmarkIdleLiveness(b *testing.B) {
	srv := redistest.Standalone(b)
	const interval = 100 * time.Millisecond
	const window = 20 // intervals
	for _, n := range []int{2, 4, 8, 16} {
		for _, record := range []bool{true, false} {
			b.Run(fmt.Sprintf("nodes=%d/%s", n, map[bool]string{true: "record", false: "heartbeats"}[record]), func(b *testing.B) {
				for range b.N {
					newBus := redisBuses(b, srv.URL(), redisbus.Streams)
					cs := startNodes(b, n, &Options{HeartbeatInterval: interval, NodeTimeout: 3 * interval}, func(id string) bus.Bus {
						if !record {
							return noRecord{newBus(id)}
						}
						return newBus(id)
					})
					time.Sleep(10 * interval) // the hellos of the start end
					var got0 uint64
					for _, c := range cs {
						got0 += c.Stats().Received
					}
					frames, beats := directFrames(b, srv, window*interval)
					var got uint64
					for _, c := range cs {
						got += c.Stats().Received
					}
					per := float64(n * window)
					b.ReportMetric(float64(frames)/per, "frames/node/interval")
					b.ReportMetric(float64(got-got0)/per, "delivered/node/interval")
					b.ReportMetric(float64(beats)/per, "beats/node/interval")
					b.ReportMetric(0, "ns/op")
				}
			})
		}
	}
}
