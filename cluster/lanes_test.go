package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/adapter/adaptertest"
	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/testwait"
	"github.com/durasock/durasock/parser"
	"github.com/prometheus/client_golang/prometheus"
)

// More broadcasts with acks than MaxServing wait on a socket that never acks:
// the node that holds them still answers fetches, confirms joins and stays a
// known node. A relay holds no serving slot while it waits.
func TestAckRelaysDoNotBlockControl(t *testing.T) {
	const serving, relays = 4, 12
	opts := &Options{MaxServing: serving, HeartbeatInterval: 50 * time.Millisecond, NodeTimeout: time.Second}
	_, cs := memoryNodes(t, 2, opts)
	ns := bind(t, cs, "/")
	silent := ns[1].ns.Connect("silent", adaptertest.SocketOptions{Rooms: []string{"quiet"}})
	other := connect(ns[1], "other", "r")

	// The acks are awaited for a minute, far longer than the test.
	long, cancelLong := context.WithTimeout(context.Background(), time.Minute)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancelLong()
		wg.Wait()
	})
	for range relays {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ns[0].a.BroadcastWithAck(long, event(t, "never-acked"), adapter.Options{Rooms: []string{"quiet"}})
			if !isMissing(err) {
				t.Errorf("BroadcastWithAck to a silent socket: %v, want a MissingRepliesError", err)
			}
		}()
	}
	ctx := testCtx(t)
	if _, err := silent.WaitMessages(ctx, relays); err != nil {
		t.Fatalf("the silent socket got %d of %d broadcasts with acks: %v", len(silent.Messages()), relays, err)
	}
	testwait.For(t, waitTimeout, "the relays to be counted", func() bool { return cs[1].Stats().Relays == relays })

	// Node 1 is watched for the rest of the test: it must stay known to node 0.
	stopWatch := make(chan struct{})
	var missingSeen int
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopWatch:
				return
			case <-tick.C:
				if !slices.Contains(cs[0].Nodes(), cs[1].NodeID()) {
					missingSeen++
				}
			}
		}
	}()

	for i := range 3 {
		infos, err := ns[0].a.FetchSockets(ctx, adapter.Options{Rooms: []string{"r"}})
		if err != nil || len(infos) != 1 || infos[0].ID != "other" {
			t.Fatalf("FetchSockets %d with %d relays waiting: %+v, %v; want socket other", i, relays, infos, err)
		}
		if err := ns[0].a.AddSockets(ctx, adapter.Options{Rooms: []string{"r"}}, []string{"joined"}); err != nil {
			t.Fatalf("AddSockets %d with %d relays waiting: %v (want every node's confirmation)", i, relays, err)
		}
		if !slices.Contains(ns[1].a.Rooms("other"), "joined") {
			t.Fatalf("AddSockets confirmed before node 1 applied it")
		}
		replies, err := ns[0].a.BroadcastWithAck(ctx, event(t, "acked"), adapter.Options{Rooms: []string{"r"}})
		if err != nil || len(replies) != 1 {
			t.Fatalf("BroadcastWithAck to an acking socket with %d relays waiting: %d replies, %v", relays, len(replies), err)
		}
	}
	// Two node timeouts' worth of node 1's heartbeats while the relays wait
	// (node 0 hears nothing else from it meanwhile).
	beats := uint64(2 * opts.NodeTimeout / opts.HeartbeatInterval)
	from := cs[0].Stats().Received
	testwait.For(t, waitTimeout, fmt.Sprintf("node 0 to receive %d heartbeats of node 1", beats), func() bool { return cs[0].Stats().Received >= from+beats })
	close(stopWatch)
	watch.Wait()
	if missingSeen != 0 {
		t.Errorf("node 1 was missing from node 0's nodes %d times", missingSeen)
	}
	if !slices.Contains(cs[0].Nodes(), cs[1].NodeID()) {
		t.Errorf("node 0 forgot node 1")
	}
	st := cs[1].Stats()
	if st.DroppedRequests != 0 || st.RefusedRelays != 0 || st.Relays != relays {
		t.Errorf("node 1 stats: dropped %d, refused relays %d, relays %d; want 0, 0, %d", st.DroppedRequests, st.RefusedRelays, st.Relays, relays)
	}
	if got := len(other.Messages()); got != 3 {
		t.Errorf("acking socket got %d messages, want 3", got)
	}
}

// Beyond MaxRelays, a broadcast with acks of another node is refused: counted,
// visible to the requester as a missing node, and the socket does not get it.
// Relays end at the requester's deadline and forget their acks.
func TestAckRelaysBounded(t *testing.T) {
	const maxRelays, sent = 3, 5
	reg := prometheus.NewRegistry()
	hub := bus.NewMemoryHub()
	first := startNodes(t, 1, nil, func(id string) bus.Bus { return memoryBus(t, hub, "a-"+id) })
	second := startNodes(t, 1, &Options{MaxRelays: maxRelays, Registerer: reg}, func(id string) bus.Bus { return memoryBus(t, hub, "b-"+id) })
	cs := []*Cluster{first[0], second[0]}
	waitMesh(t, cs)
	ns := bind(t, cs, "/")
	silent := ns[1].ns.Connect("silent", adaptertest.SocketOptions{})

	errs := make(chan error, sent)
	for range sent {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := ns[0].a.BroadcastWithAck(ctx, event(t, "q"), adapter.Options{Rooms: []string{"silent"}})
			errs <- err
		}()
	}
	var refused, waited int
	for range sent {
		err := <-errs
		var me *adapter.MissingRepliesError
		if !errors.As(err, &me) {
			t.Fatalf("BroadcastWithAck: %v, want a MissingRepliesError", err)
		}
		switch {
		case slices.Equal(me.Missing, []string{"node:" + cs[1].NodeID()}):
			refused++
		case slices.Equal(me.Missing, []string{"silent"}):
			waited++
		default:
			t.Errorf("missing %q", me.Missing)
		}
	}
	if refused != sent-maxRelays || waited != maxRelays {
		t.Errorf("requesters saw %d refused and %d waiting relays, want %d and %d", refused, waited, sent-maxRelays, maxRelays)
	}
	st := cs[1].Stats()
	if st.RefusedRelays != sent-maxRelays {
		t.Errorf("Stats.RefusedRelays = %d, want %d", st.RefusedRelays, sent-maxRelays)
	}
	if m := gathered(t, reg, "durasock_cluster_relays_refused_total"); m != sent-maxRelays {
		t.Errorf("durasock_cluster_relays_refused_total = %v, want %d", m, sent-maxRelays)
	}
	if got := len(silent.Messages()); got != maxRelays {
		t.Errorf("the silent socket got %d packets, want %d (refused ones are not written)", got, maxRelays)
	}
	testwait.For(t, waitTimeout, "the relays to end at their deadline", func() bool { return cs[1].Stats().Relays == 0 })
	if n := silent.PendingAcks(); n != 0 {
		t.Errorf("%d acks still registered on the silent socket after the deadline", n)
	}
	if m := gathered(t, reg, "durasock_cluster_relays"); m != 0 {
		t.Errorf("durasock_cluster_relays = %v after the deadline", m)
	}
}

// A request that reaches a node after its requester's deadline (replayed from
// the stream after an outage, or stuck behind a backlog) is not served: no
// packet to sockets, no handler call, no answer; it is counted.
func TestExpiredRequestsNotServed(t *testing.T) {
	hub := bus.NewMemoryHub()
	reg := prometheus.NewRegistry()
	cs := startNodes(t, 1, &Options{Registerer: reg}, func(id string) bus.Bus { return memoryBus(t, hub, id) })
	ns := bind(t, cs, "/")
	target := connect(ns[0], "target")
	ns[0].ns.OnServerSideEmit(func(adaptertest.ServerEmit) ([]json.RawMessage, bool) {
		return []json.RawMessage{json.RawMessage(`1`)}, true
	})
	ctx := testCtx(t)

	requester := memoryBus(t, hub, "requester")
	t.Cleanup(func() {
		if err := requester.Close(context.Background()); err != nil {
			t.Error(err)
		}
	})
	answers := make(chan *message, 16)
	requester.Receive(func(bm bus.Message) {
		if m, err := decodeMessage(bm.Payload); err == nil && m.kind != kindHeartbeat {
			answers <- m
		}
	})
	testwait.For(t, waitTimeout, "the requester's bus to connect", func() bool { return requester.Status().State == bus.Connected })

	past := uint64(time.Now().Add(-time.Second).UnixMilli())
	expired := []*message{
		{kind: kindAckRequest, nsp: "/", reqID: 1, ptype: parser.Event, data: []byte(`["late-ack"]`), deadline: past},
		{kind: kindEmitRequest, nsp: "/", reqID: 2, event: "late-emit", deadline: past},
		{kind: kindFetchRequest, nsp: "/", reqID: 3, deadline: past},
	}
	for _, m := range expired {
		if err := requester.Publish(ctx, partitionKey("/"), m.marshal()); err != nil {
			t.Fatal(err)
		}
	}
	// A live request after them: once it is answered, the expired ones were
	// handled. A second one, on the direct plane, carries a timeout in
	// milliseconds instead of a deadline, as ack-requests of nodes of earlier
	// versions did.
	live := []*message{
		{kind: kindAckRequest, nsp: "/", reqID: 4, ptype: parser.Event, data: []byte(`["live"]`),
			deadline: uint64(time.Now().Add(waitTimeout).UnixMilli())},
		{kind: kindAckRequest, nsp: "/", reqID: 5, ptype: parser.Event, data: []byte(`["legacy"]`),
			deadline: uint64(waitTimeout.Milliseconds())},
	}
	if err := requester.Publish(ctx, partitionKey("/"), live[0].marshal()); err != nil {
		t.Fatal(err)
	}
	if err := requester.Send(ctx, "", live[1].marshal()); err != nil {
		t.Fatal(err)
	}
	var got []*message
	for len(got) < 4 { // each live request's count and reply
		select {
		case m := <-answers:
			got = append(got, m)
		case <-ctx.Done():
			t.Fatalf("answers to the live requests: %d of 4", len(got))
		}
	}
	for _, m := range got {
		if m.reqID != 4 && m.reqID != 5 {
			t.Errorf("an expired request was answered: %s for request %d", m.kind, m.reqID)
		}
	}
	ms, err := target.WaitMessages(ctx, 2)
	var events []string
	for _, m := range ms {
		events = append(events, m.Event)
	}
	slices.Sort(events)
	if err != nil || !slices.Equal(events, []string{"legacy", "live"}) {
		t.Errorf("socket got %q (%v), want only the live packets", events, err)
	}
	if emits := ns[0].ns.ServerEmits(); len(emits) != 0 {
		t.Errorf("an expired server-side emit reached the handler: %+v", emits)
	}
	if n := cs[0].Stats().ExpiredRequests; n != uint64(len(expired)) {
		t.Errorf("Stats.ExpiredRequests = %d, want %d", n, len(expired))
	}
	if m := gathered(t, reg, "durasock_cluster_expired_requests_total"); m != float64(len(expired)) {
		t.Errorf("durasock_cluster_expired_requests_total = %v, want %d", m, len(expired))
	}
}

// An answer that finds its lane full is dropped, counted in Stats and in the
// metric of its lane.
func TestLaneFullDropsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	hub := bus.NewMemoryHub()
	cs := startNodes(t, 1, &Options{Registerer: reg}, func(id string) bus.Bus { return memoryBus(t, hub, id) })
	c := cs[0]
	// A lane of one place that nobody drains.
	l := newLane(laneControl, 1)
	l.metric = c.metrics.dropped.WithLabelValues(laneControl)
	for range 3 {
		c.queue(l, "peer", &message{kind: kindApplied, nsp: "/", reqID: 1})
	}
	if n := c.Stats().DroppedRequests; n != 2 {
		t.Errorf("Stats.DroppedRequests = %d, want 2", n)
	}
	if m := gathered(t, reg, "durasock_cluster_dropped_requests_total"); m != 2 {
		t.Errorf("durasock_cluster_dropped_requests_total = %v, want 2", m)
	}
}

func TestHoldFor(t *testing.T) {
	const def = 5 * time.Second
	if got := holdFor(0, def); got != def {
		t.Errorf("no deadline: %v, want %v", got, def)
	}
	if got := holdFor(uint64(time.Now().Add(2*time.Hour).UnixMilli()), def); got != maxAckHold {
		t.Errorf("deadline in 2 h: %v, want %v", got, maxAckHold)
	}
	if got := holdFor(uint64(time.Now().Add(10*time.Second).UnixMilli()), def); got <= 9*time.Second || got > 10*time.Second {
		t.Errorf("deadline in 10 s: %v", got)
	}
	if got := holdFor(1<<64-1, def); got != maxAckHold {
		t.Errorf("deadline at the end of time: %v, want %v", got, maxAckHold)
	}
}
