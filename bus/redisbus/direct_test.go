package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// baseOf returns what both transports share.
func baseOf(t testing.TB, tr bus.Transport) *base {
	t.Helper()
	switch v := tr.(type) {
	case *streams:
		return v.base
	case *pubsub:
		return v.base
	}
	t.Fatalf("transport %T", tr)
	return nil
}

// legacyPeer is the direct plane of a node of the version before the node
// channels had hash tags of their own: it listens on {P}:node:<id> and
// {P}:all, and sends to those names only. It borrows the client of a
// transport, so it talks to the same deployment.
type legacyPeer struct {
	*collector
	c      rueidis.Client
	prefix string
	cancel context.CancelFunc
	done   chan error
}

func startLegacyPeer(t testing.TB, tr bus.Transport, id string) *legacyPeer {
	t.Helper()
	b := baseOf(t, tr)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := b.client(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p := &legacyPeer{collector: newCollector(), c: c, prefix: b.opts.Prefix, cancel: cancel, done: make(chan error, 1)}
	channels := []string{legacyNodeChannel(p.prefix, id), AllChannel(p.prefix)}
	go func() {
		p.done <- b.receive(ctx, c, isCluster(c), channels, func(m rueidis.PubSubMessage) {
			p.deliver(bus.Frame{Partition: -1, Data: []byte(m.Message)})
		})
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the peer's subscription; it is idempotent.
func (p *legacyPeer) stop() {
	p.cancel()
	if err, ok := <-p.done; ok {
		_ = err // context.Canceled
		close(p.done)
	}
}

// send publishes as the earlier version did: to {P}:node:<to>, or to {P}:all.
func (p *legacyPeer) send(ctx context.Context, to string, data string) error {
	ch := AllChannel(p.prefix)
	if to != "" {
		ch = legacyNodeChannel(p.prefix, to)
	}
	return p.c.Do(ctx, publishCmd(p.c, ch, data)).Error()
}

// directFrames are the frames of fs whose data starts with tag, as strings.
func directFrames(fs []bus.Frame, tag string) []string {
	var out []string
	for _, f := range fs {
		if s := string(f.Data); len(s) >= len(tag) && s[:len(tag)] == tag {
			out = append(out, s)
		}
	}
	return out
}

// sendUntilSeen sends a marker to node to until c has received one: the
// receiver's subscription is live.
func sendUntilSeen(t testing.TB, send func(ctx context.Context, to, data string) error, to string, c *collector) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for round := 0; ; round++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err := send(ctx, to, "sync-peer-"+strconv.Itoa(round))
		cancel()
		if c.await(200*time.Millisecond, func(fs []bus.Frame) bool { return len(directFrames(fs, "sync-peer-")) > 0 }) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reachable after %v (last send error %v)", to, waitLong, err)
		}
	}
}

func transportSend(tr bus.Transport) func(ctx context.Context, to, data string) error {
	return func(ctx context.Context, to, data string) error { return tr.Send(ctx, to, []byte(data)) }
}

// testDirectCompat is the rolling upgrade of the direct plane: nodes of this
// version and of the earlier one (legacyPeer) reach each other both ways, to
// one node and to all, each frame exactly once, also while a node is
// upgraded and downgraded under a sender that keeps running.
func testDirectCompat(t *testing.T, newT func(t testing.TB) bus.Transport) {
	ctx := context.Background()
	sender := newT(t)
	baseOf(t, sender).legacy = newLegacyTargets(100 * time.Millisecond)
	nNode := newT(t)
	subN := startSubscribe(t, nNode, "n")
	waitSubscribed(t, nNode, NodeChannel(baseOf(t, nNode).opts.Prefix, "n"))
	syncSubscribed(t, sender, "n", subN)
	old := startLegacyPeer(t, newT(t), "o")
	sendUntilSeen(t, transportSend(sender), "o", old.collector)

	// Earlier version to this one, to one node and to all.
	for i := range 10 {
		if err := old.send(ctx, "n", "old-to-n-"+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.send(ctx, "", "old-to-all"); err != nil {
		t.Fatal(err)
	}
	subN.waitFor(t, "frames of the earlier version", func(fs []bus.Frame) bool {
		return len(directFrames(fs, "old-to-")) >= 11
	})

	// This version to the earlier one, and to one of its own version.
	for i := range 10 {
		if err := sender.Send(ctx, "o", []byte("new-to-o-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if err := sender.Send(ctx, "n", []byte("new-to-n-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := sender.Send(ctx, "", []byte("new-to-all")); err != nil {
		t.Fatal(err)
	}
	old.waitFor(t, "frames at the earlier version", func(fs []bus.Frame) bool {
		return len(directFrames(fs, "new-to-")) >= 11
	})
	subN.waitFor(t, "frames at this version", func(fs []bus.Frame) bool {
		return len(directFrames(fs, "new-to-")) >= 11
	})
	// Fences on the channels each receiver listens to: when they are in,
	// a duplicate sent before them would be in too.
	if err := sender.Send(ctx, "", []byte("fence-all")); err != nil {
		t.Fatal(err)
	}
	subN.waitFor(t, "fence at n", func(fs []bus.Frame) bool { return len(directFrames(fs, "fence-")) >= 1 })
	old.waitFor(t, "fence at o", func(fs []bus.Frame) bool { return len(directFrames(fs, "fence-")) >= 1 })
	if err := sender.Send(ctx, "n", []byte("fence-n")); err != nil {
		t.Fatal(err)
	}
	subN.waitFor(t, "fence to n", func(fs []bus.Frame) bool { return len(directFrames(fs, "fence-")) >= 2 })
	wantOnce(t, "n", directFrames(subN.snapshot(), "old-to-"), "old-to-n-", 10, "old-to-all")
	wantOnce(t, "n", directFrames(subN.snapshot(), "new-to-"), "new-to-n-", 10, "new-to-all")
	wantOnce(t, "o", directFrames(old.snapshot(), "new-to-"), "new-to-o-", 10, "new-to-all")
	if legacy := baseOf(t, sender).legacy.has("n", time.Now()); legacy {
		t.Error("the sender writes to n, a node of this version, on its legacy channel")
	}

	// o is upgraded, then downgraded, while the sender keeps sending: every
	// frame sent while some o listens arrives once.
	old.stop()
	upgraded := newT(t)
	subO := startSubscribe(t, upgraded, "o")
	sendUntilSeen(t, transportSend(sender), "o", subO.collector)
	for i := range 10 {
		if err := sender.Send(ctx, "o", []byte("up-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			// Past the time the sender keeps o as an earlier version.
			testwait.For(t, waitLong, "the sender trying o's own channel again", func() bool {
				return !baseOf(t, sender).legacy.has("o", time.Now())
			})
		}
	}
	subO.waitFor(t, "frames at the upgraded node", func(fs []bus.Frame) bool { return len(directFrames(fs, "up-")) >= 10 })
	if err := subO.stop(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Subscribe of the upgraded node: %v", err)
	}
	downgraded := startLegacyPeer(t, newT(t), "o")
	sendUntilSeen(t, transportSend(sender), "o", downgraded.collector)
	for i := range 10 {
		if err := sender.Send(ctx, "o", []byte("down-"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	downgraded.waitFor(t, "frames at the downgraded node", func(fs []bus.Frame) bool { return len(directFrames(fs, "down-")) >= 10 })
	if err := sender.Send(ctx, "", []byte("fence-all")); err != nil {
		t.Fatal(err)
	}
	downgraded.waitFor(t, "fence", func(fs []bus.Frame) bool { return len(directFrames(fs, "fence-")) >= 1 })
	wantOnce(t, "upgraded o", directFrames(subO.snapshot(), "up-"), "up-", 10)
	wantOnce(t, "downgraded o", directFrames(downgraded.snapshot(), "down-"), "down-", 10)
}

// wantOnce checks that got holds prefix0..prefix<n-1> and the extra frames,
// each exactly once, in any order: the direct plane does not keep order
// between channels.
func wantOnce(t *testing.T, who string, got []string, prefix string, n int, extra ...string) {
	t.Helper()
	var want []string
	for i := range n {
		want = append(want, prefix+strconv.Itoa(i))
	}
	want = append(want, extra...)
	slices.Sort(want)
	got = slices.Clone(got)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s received %d frames %q, want each of %q once", who, len(got), got, want)
	}
}

func TestLegacyTargets(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLegacyTargets(5 * time.Second)
	if l.has("a", now) {
		t.Fatal("an empty set has a")
	}
	l.add("a", now)
	if !l.has("a", now.Add(4*time.Second)) {
		t.Error("a forgotten before its time")
	}
	if l.has("a", now.Add(5*time.Second)) {
		t.Error("a kept past its time")
	}
	if len(l.until) != 0 {
		t.Errorf("%d entries kept after they expired", len(l.until))
	}
	for i := range 2 * maxLegacyTargets {
		l.add(fmt.Sprint("n", i), now.Add(time.Duration(i)*time.Millisecond))
		if len(l.until) > maxLegacyTargets {
			t.Fatalf("%d entries, bound %d", len(l.until), maxLegacyTargets)
		}
	}
	last := fmt.Sprint("n", 2*maxLegacyTargets-1)
	if !l.has(last, now.Add(2*maxLegacyTargets*time.Millisecond)) {
		t.Errorf("the last node added is not kept")
	}
}

// spublishCalls is the number of SPUBLISH each server has run (INFO
// commandstats).
func spublishCalls(t testing.TB, servers []*redistest.Server) []int64 {
	t.Helper()
	out := make([]int64, len(servers))
	for i, s := range servers {
		info, err := s.Info(context.Background(), "commandstats")
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := info["cmdstat_spublish"]; ok {
			calls, _, _ := strings.Cut(strings.TrimPrefix(v, "calls="), ",")
			if out[i], err = strconv.ParseInt(calls, 10, 64); err != nil {
				t.Fatalf("cmdstat_spublish %q: %v", v, err)
			}
		}
	}
	return out
}

// shardSubscribers is PUBSUB SHARDNUMSUB of ch on s.
func shardSubscribers(t testing.TB, s *redistest.Server, ch string) int64 {
	t.Helper()
	v, err := s.Do(context.Background(), "PUBSUB", "SHARDNUMSUB", ch)
	if err != nil {
		t.Fatal(err)
	}
	reply, ok := v.([]any)
	if !ok || len(reply) != 2 {
		t.Fatalf("PUBSUB SHARDNUMSUB reply %#v", v)
	}
	n, ok := reply[1].(int64)
	if !ok {
		t.Fatalf("PUBSUB SHARDNUMSUB reply %#v", v)
	}
	return n
}

// primaryIndex is the index in primaries of the primary serving key's slot.
func primaryIndex(t testing.TB, cs *redistest.ClusterSet, primaries []*redistest.Server, key string) int {
	t.Helper()
	p, err := cs.PrimaryOfSlot(context.Background(), redistest.KeySlot(key))
	if err != nil {
		t.Fatal(err)
	}
	i := slices.Index(primaries, p)
	if i < 0 {
		t.Fatalf("primary %s of %q is not one of the primaries", p.Addr(), key)
	}
	return i
}

// waitSubscribed waits until channel ch has a subscriber, asking through
// tr's client (on a cluster PUBSUB SHARDNUMSUB, sent to the shard of ch).
func waitSubscribed(t testing.TB, tr bus.Transport, ch string) {
	t.Helper()
	ctx := context.Background()
	c, err := baseOf(t, tr).client(ctx)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Every(t, 10*time.Millisecond, waitLong, "a subscriber of "+ch, func() bool {
		cmd := c.B().PubsubNumsub().Channel(ch).Build()
		if isCluster(c) {
			cmd = c.B().PubsubShardnumsub().Channel(ch).Build()
		}
		reply, err := c.Do(ctx, cmd).ToArray()
		if err != nil || len(reply) != 2 {
			return false
		}
		n, err := reply[1].AsInt64()
		return err == nil && n > 0
	})
}

// directMesh is n nodes on the direct plane of one deployment: of this
// version, or of the earlier one (legacy), with a collector each.
type directMesh struct {
	ids  []string
	send []func(ctx context.Context, to, data string) error
	recv []*collector
}

func newDirectMesh(t testing.TB, newT func(t testing.TB) bus.Transport, n int, legacy bool) *directMesh {
	t.Helper()
	m := &directMesh{}
	for i := range n {
		id := "node-" + strconv.Itoa(i)
		tr := newT(t)
		m.ids = append(m.ids, id)
		if legacy {
			p := startLegacyPeer(t, tr, id)
			m.send = append(m.send, p.send)
			m.recv = append(m.recv, p.collector)
			waitSubscribed(t, tr, legacyNodeChannel(baseOf(t, tr).opts.Prefix, id))
		} else {
			sub := startSubscribe(t, tr, id)
			m.send = append(m.send, transportSend(tr))
			m.recv = append(m.recv, sub.collector)
			// Sent to before it listens there, a node is reached on its
			// legacy channel for a while.
			waitSubscribed(t, tr, NodeChannel(baseOf(t, tr).opts.Prefix, id))
		}
	}
	for i := range m.ids {
		sendUntilSeen(t, m.send[(i+1)%n], m.ids[i], m.recv[i])
	}
	return m
}

// exchange sends k frames from every node to every other one and waits until
// each node has received its (n-1)·k, exactly once each.
func (m *directMesh) exchange(t testing.TB, k int) {
	t.Helper()
	ctx := context.Background()
	n := len(m.ids)
	for r := range k {
		for from := range n {
			for to := range n {
				if to == from {
					continue
				}
				data := fmt.Sprintf("mesh-%d-%d-%d", from, to, r)
				if err := m.send[from](ctx, m.ids[to], data); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	for to, c := range m.recv {
		want := (n - 1) * k
		c.waitFor(t, "mesh frames at "+m.ids[to], func(fs []bus.Frame) bool {
			return len(directFrames(fs, "mesh-")) >= want
		})
		got := directFrames(c.snapshot(), "mesh-")
		if len(got) != want || len(slices.Compact(slices.Sorted(slices.Values(got)))) != want {
			t.Errorf("%s received %d mesh frames (%d distinct), want %d once each",
				m.ids[to], len(got), len(slices.Compact(slices.Sorted(slices.Values(got)))), want)
		}
	}
}

// testDirectSpread shows where the direct frames of 4 nodes go on a Redis
// Cluster of 3 primaries: each node's channel is served by the primary of its
// own slot (PUBSUB SHARDNUMSUB), and the SPUBLISH of the frames to a node are
// run by that primary only, where nodes of the earlier version ran every one
// on the primary of {P}.
func testDirectSpread(t *testing.T, cs *redistest.ClusterSet) {
	const nodes, k = 4, 50
	o := faultOpts(Streams)
	o.Prefix, o.Partitions = "direct-spread", 1
	newT := func(t testing.TB) bus.Transport { return newTransport(t, cs.URL(), o) }
	primaries, err := cs.Primaries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	legacyAt := primaryIndex(t, cs, primaries, AllChannel(o.Prefix))
	// run builds a mesh in a subtest (its nodes stop at its end), checks it
	// with check, and returns the SPUBLISH per primary of the exchange.
	run := func(name string, legacy bool, check func(t *testing.T)) []int64 {
		var calls []int64
		t.Run(name, func(t *testing.T) {
			m := newDirectMesh(t, newT, nodes, legacy)
			check(t)
			before := spublishCalls(t, primaries)
			m.exchange(t, k)
			calls = spublishCalls(t, primaries)
			for i := range calls {
				calls[i] -= before[i]
			}
		})
		return calls
	}

	old := run("earlier-version", true, func(*testing.T) {})
	want := make([]int64, len(primaries))
	want[legacyAt] = nodes * (nodes - 1) * k
	if !slices.Equal(old, want) {
		t.Errorf("earlier version: SPUBLISH per primary %v, want %v", old, want)
	}

	clear(want)
	used := map[int]bool{}
	now := run("this-version", false, func(t *testing.T) {
		for i := range nodes {
			id := "node-" + strconv.Itoa(i)
			at := primaryIndex(t, cs, primaries, NodeChannel(o.Prefix, id))
			used[at] = true
			want[at] += (nodes - 1) * k
			for j, p := range primaries {
				subs := shardSubscribers(t, p, NodeChannel(o.Prefix, id))
				if j == at && subs != 1 || j != at && subs != 0 {
					t.Errorf("%s: %d subscribers of its channel on primary %d, want 1 on primary %d only", id, subs, j, at)
				}
			}
			// Still on its legacy channel, for nodes of the earlier version.
			if subs := shardSubscribers(t, primaries[legacyAt], legacyNodeChannel(o.Prefix, id)); subs != 1 {
				t.Errorf("%s: %d subscribers of its legacy channel, want 1", id, subs)
			}
		}
	})
	// These four ids hash to slots of all three primaries.
	if len(used) != len(primaries) {
		t.Errorf("the channels of %d nodes are on %d of %d primaries", nodes, len(used), len(primaries))
	}
	if !slices.Equal(now, want) {
		t.Errorf("SPUBLISH per primary %v, want %v", now, want)
	}
	t.Logf("SPUBLISH per primary for %d frames between %d nodes: earlier version %v, this version %v",
		nodes*(nodes-1)*k, nodes, old, now)
}

// TestClusterDirectFailover kills the primary that serves one node's direct
// channel and no other channel or stream of it: the node's Subscribe ends with
// an error, the next one listens on the new primary, and frames to the node
// arrive again on its own channel, once each.
func TestClusterDirectFailover(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	o := faultOpts(Streams)
	o.Prefix, o.Partitions = "dfail", 1
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primaries, err := cs.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A node whose channel has a primary of its own.
	id := ""
	others := []int{
		primaryIndex(t, cs, primaries, AllChannel(o.Prefix)),
		primaryIndex(t, cs, primaries, StreamKey(o.Prefix, 0)),
	}
	for i := 0; id == ""; i++ {
		cand := "node-" + strconv.Itoa(i)
		if !slices.Contains(others, primaryIndex(t, cs, primaries, NodeChannel(o.Prefix, cand))) {
			id = cand
		}
	}
	sender, rx := newTransport(t, cs.URL(), o), newTransport(t, cs.URL(), o)
	sub := startSubscribe(t, rx, id)
	sendUntilSeen(t, transportSend(sender), id, sub.collector)

	if _, err := cs.KillPrimaryOfSlot(ctx, redistest.KeySlot(NodeChannel(o.Prefix, id))); err != nil {
		t.Fatal(err)
	}
	if err := sub.waitEnded(t, waitLong); err == nil {
		t.Fatal("Subscribe returned nil when the primary of the node's channel died")
	}
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	sub2 := startResubscribe(t, rx, id)
	sendUntilSeen(t, transportSend(sender), id, sub2.collector)
	newPrimary, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(NodeChannel(o.Prefix, id)))
	if err != nil {
		t.Fatal(err)
	}
	// The marker may have come through the legacy channel while the
	// subscription of the node's channel still tried the dead primary.
	testwait.Every(t, 20*time.Millisecond, waitLong, "the node listening on the new primary", func() bool {
		return shardSubscribers(t, newPrimary, NodeChannel(o.Prefix, id)) == 1
	})
	// Past the time the sender may keep writing to the legacy channel
	// (nobody listened on the node's channel during the failover).
	testwait.For(t, waitLong, "the sender writing to the node's channel again", func() bool {
		return !baseOf(t, sender).legacy.has(id, time.Now())
	})
	before := spublishCalls(t, []*redistest.Server{newPrimary})
	for i := range 20 {
		// The sender's client may still route a send to the dead primary
		// for a moment (it refreshes the slot map when a command fails): a
		// failed send reached no server, the next one goes to the new one.
		testwait.Every(t, 50*time.Millisecond, waitLong, "a send on the new primary", func() bool {
			return sender.Send(ctx, id, []byte("after-"+strconv.Itoa(i))) == nil
		})
	}
	sub2.waitFor(t, "frames after the failover", func(fs []bus.Frame) bool { return len(directFrames(fs, "after-")) >= 20 })
	if err := sender.Send(ctx, "", []byte("fence")); err != nil {
		t.Fatal(err)
	}
	sub2.waitFor(t, "fence", func(fs []bus.Frame) bool { return len(directFrames(fs, "fence")) >= 1 })
	wantOnce(t, id, directFrames(sub2.snapshot(), "after-"), "after-", 20)
	if got := spublishCalls(t, []*redistest.Server{newPrimary})[0] - before[0]; got != 20 {
		t.Errorf("the new primary of the node's channel ran %d SPUBLISH for 20 frames, want 20", got)
	}
}
