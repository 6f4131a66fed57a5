package faults

import (
	"context"
	"testing"
	"time"

	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// Scenario 3: Sentinel failover. The primary is killed during traffic; the
// sentinels promote the replica and the nodes follow it. With WaitReplicas=1 a
// message leaves the outbox only once the replica has it, so the promoted
// replica holds every message Redis acknowledged: nothing is lost, duplicated
// or reordered. (Publishing waits until the old primary is back as a replica:
// without a replica, WAIT cannot succeed and messages stay in the outbox.)
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ss := redistest.Sentinel(t)
	r := newRun(t, "sentinel-failover", options{kind: redisbus.Streams, waitReplicas: 1})
	r.addNodes(ss.URL(), ss.URL(), ss.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	start := time.Now()
	old, err := ss.KillPrimary()
	if err != nil {
		t.Fatalf("kill the primary: %v", err)
	}
	r.waitDisconnected("primary killed", r.nodes...)
	r.checkLocal("primary killed")
	promoted, err := ss.WaitFailover(ctx)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	t.Logf("sentinels promoted %s", promoted)
	if err := old.Start(ctx); err != nil {
		t.Fatalf("start the old primary again: %v", err)
	}
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatalf("old primary back as a replica: %v", err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond) // from the kill to every bus connected
	pause(steadyPhase)
	r.finish(exact)
}

// Scenario 4: Redis Cluster failover. The primary serving the stream the
// nodes' broadcasts travel on is killed; its replica takes over. With
// WaitReplicas=1 nothing acknowledged is lost: nothing is lost, duplicated or
// reordered. The old primary comes back as a replica so that WAIT can succeed
// again.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	r := newRun(t, "cluster-failover", options{kind: redisbus.Streams, waitReplicas: 1})
	r.addNodes(cs.URL(), cs.URL(), cs.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	ctx, cancel := context.WithTimeout(context.Background(), 2*settle)
	defer cancel()
	key := r.eventStream()
	start := time.Now()
	old, err := cs.KillPrimaryOf(ctx, key)
	if err != nil {
		t.Fatalf("kill the primary of %s: %v", key, err)
	}
	t.Logf("killed %s, the primary of %s", old.Addr(), key)
	r.checkLocal("primary killed")
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatalf("cluster failover: %v", err)
	}
	if err := old.Start(ctx); err != nil {
		t.Fatalf("start the old primary again: %v", err)
	}
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatalf("old primary back: %v", err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond) // from the kill to every bus connected
	pause(steadyPhase)
	r.finish(exact)
}

// laggingMarker is written on the primary after its replica was detached: found
// missing on the promoted replica, it proves the failover lost the primary's last
// writes (the bus's entries among them).
const laggingMarker = ":lagging-marker"

// Scenario 3b: Sentinel failover to a lagging replica, WaitReplicas=0. Two
// replicas; the sentinels prefer the one whose replication link is broken
// (redistest.DetachReplica) for the length of an outage while the nodes
// publish, so the promoted replica lacks what the old primary acknowledged last
// and the up-to-date replica drops it when it follows. The broken connection
// makes every node republish what it retained (Config.Retain): nothing is
// lost and no gap is reported.
func TestSentinelLaggingFailover(t *testing.T) {
	t.Parallel()
	ss := redistest.Sentinel(t, redistest.WithReplicas(2))
	ctx, cancel := context.WithTimeout(context.Background(), 4*settle)
	defer cancel()
	lagging := ss.Replicas()[0]
	if err := ss.PreferReplica(ctx, lagging); err != nil {
		t.Fatal(err)
	}
	r := newRun(t, "sentinel-lagging-failover", options{kind: redisbus.Streams})
	r.addNodes(ss.URL(), ss.URL(), ss.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	primary := ss.Primary()
	start := time.Now()
	if err := redistest.DetachReplica(ctx, primary, lagging); err != nil {
		t.Fatal(err)
	}
	pause(r.outage) // the nodes publish what only the primary gets
	if _, err := primary.Do(ctx, "SET", laggingMarker[1:], "1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.KillPrimary(); err != nil {
		t.Fatalf("kill the primary: %v", err)
	}
	r.checkLocal("primary killed")
	if _, err := ss.WaitFailover(ctx); err != nil {
		t.Fatalf("failover: %v", err)
	}
	if ss.Primary() != lagging {
		t.Fatalf("the sentinels promoted %s, not the lagging replica %s", ss.Primary().Addr(), lagging.Addr())
	}
	if v, err := lagging.Do(ctx, "GET", laggingMarker[1:]); err != nil || v != nil {
		t.Fatalf("GET marker on the promoted replica = %#v, %v: it did not lag", v, err)
	}
	r.phase("the lagging replica %s is primary", lagging.Addr())
	if err := redistest.AttachReplica(ctx, lagging); err != nil {
		t.Fatal(err)
	}
	// The old primary stays down: WaitReplicas=0 needs no replica, and the
	// up-to-date one follows the promoted one (dropping what it lacks).
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatalf("the other replica following the promoted one: %v", err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond)
	pause(steadyPhase)
	r.finish(exact)
}

// Scenario 4b: Redis Cluster failover to a lagging replica, WaitReplicas=0. The
// replica of the primary serving the nodes' stream is detached for the length of
// an outage while the nodes publish, then takes over with CLUSTER FAILOVER
// TAKEOVER; the old primary, still running, follows it and drops what it
// acknowledged last. No connection breaks: the old primary answers the next
// batch with MOVED, the transport refuses it (ErrPrimaryChanged), and the node
// republishes what it retained before anything newer: nothing is lost and no
// gap is reported.
func TestClusterLaggingFailover(t *testing.T) {
	t.Parallel()
	cs := redistest.Cluster(t)
	r := newRun(t, "cluster-lagging-failover", options{kind: redisbus.Streams})
	r.addNodes(cs.URL(), cs.URL(), cs.URL())
	r.warmUp()
	r.startPublishers()
	pause(steadyPhase)

	ctx, cancel := context.WithTimeout(context.Background(), 4*settle)
	defer cancel()
	key := r.eventStream()
	primary, err := cs.PrimaryOfSlot(ctx, redistest.KeySlot(key))
	if err != nil {
		t.Fatal(err)
	}
	reps, err := cs.ReplicasOf(ctx, primary)
	if err != nil || len(reps) == 0 {
		t.Fatalf("replicas of %s: %v, %v", primary.Addr(), reps, err)
	}
	replica := reps[0]
	marker := key + laggingMarker // the stream's hash tag: the same slot
	start := time.Now()
	if err := redistest.DetachReplica(ctx, primary, replica); err != nil {
		t.Fatal(err)
	}
	pause(r.outage) // the nodes publish what only the primary gets
	if _, err := primary.Do(ctx, "SET", marker, "1"); err != nil {
		t.Fatal(err)
	}
	if err := cs.Failover(ctx, replica, "TAKEOVER"); err != nil {
		t.Fatalf("takeover by %s: %v", replica.Addr(), err)
	}
	if v, err := replica.Do(ctx, "GET", marker); err != nil || v != nil {
		t.Fatalf("GET marker on the promoted replica = %#v, %v: it did not lag", v, err)
	}
	r.phase("the lagging replica %s serves %s", replica.Addr(), key)
	if err := redistest.AttachReplica(ctx, replica); err != nil {
		t.Fatal(err)
	}
	r.waitConnected("after the failover")
	r.outage = time.Since(start).Round(100 * time.Millisecond)
	pause(steadyPhase)
	r.finish(exact)
}
