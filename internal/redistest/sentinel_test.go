package redistest

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	start := time.Now()
	ss := Sentinel(t, WithAOF())
	t.Logf("sentinel set ready in %v", time.Since(start))

	if ss.MasterName() != "mymaster" || len(ss.SentinelAddrs()) != 3 {
		t.Fatalf("MasterName %q sentinels %v", ss.MasterName(), ss.SentinelAddrs())
	}
	want := "redis+sentinel://" + strings.Join(ss.SentinelAddrs(), ",") + "/mymaster"
	if ss.URL() != want {
		t.Fatalf("URL = %q, want %q", ss.URL(), want)
	}
	oldPrimary, oldReplica := ss.Primary(), ss.Replica()
	cur, err := ss.CurrentPrimary(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if cur != oldPrimary {
		t.Fatalf("CurrentPrimary = %s, want %s", cur.Addr(), oldPrimary.Addr())
	}
	// WAIT on the connection that wrote: the replica has the write before the kill.
	replies, err := oldPrimary.DoAll(ctx, []string{"SET", "k", "v"}, []string{"WAIT", "1", "10000"})
	if err != nil {
		t.Fatal(err)
	}
	if replies[0] != "OK" || replies[1] != int64(1) {
		t.Fatalf("SET, WAIT 1 = %#v: the write did not reach the replica", replies)
	}

	killed, err := ss.KillPrimary()
	if err != nil {
		t.Fatal(err)
	}
	if killed != oldPrimary {
		t.Fatal("KillPrimary killed the wrong server")
	}
	killedAt := time.Now()
	addr, err := ss.WaitFailover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("failover done %v after the kill", time.Since(killedAt))
	if addr != oldReplica.Addr() || ss.Primary() != oldReplica || ss.Replica() != oldPrimary {
		t.Fatalf("new primary %s, want %s", addr, oldReplica.Addr())
	}
	if v := mustDo(t, ctx, oldReplica, "GET", "k"); v != "v" {
		t.Fatalf("GET on promoted replica = %#v", v)
	}
	mustDo(t, ctx, oldReplica, "SET", "k2", "v2") // writable

	// The old primary comes back as a replica of the new one.
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("old primary rejoined as replica %v after its restart", time.Since(restartedAt))
	if v := mustDo(t, ctx, killed, "GET", "k2"); v != "v2" {
		t.Fatalf("GET on rejoined old primary = %#v", v)
	}
}

func TestSentinelACL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ss := Sentinel(t, WithUser("app", "pw"))
	want := "redis+sentinel://app:pw@" + strings.Join(ss.SentinelAddrs(), ",") + "/mymaster"
	if ss.URL() != want {
		t.Fatalf("URL = %q, want %q", ss.URL(), want)
	}
	if _, err := ss.CurrentPrimary(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestSentinelTLS(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	ss := Sentinel(t, WithTLS(), WithDefaultPassword("pw"))
	want := "rediss+sentinel://:pw@" + strings.Join(ss.SentinelAddrs(), ",") + "/mymaster"
	if ss.URL() != want {
		t.Fatalf("URL = %q, want %q", ss.URL(), want)
	}
	if ss.TLS() == nil || ss.Primary().TLS() != ss.TLS() || ss.Sentinels()[0].TLS() != ss.TLS() {
		t.Fatal("processes do not share one PKI")
	}
	// A failover that no WaitFailover follows: CurrentPrimary adopts it once
	// every sentinel reports it.
	old := ss.Primary()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	testwait.Every(t, 200*time.Millisecond, 2*time.Minute, "every sentinel to report a new primary", func() bool {
		_, err := ss.CurrentPrimary(ctx)
		return err == nil && ss.Primary() != old
	})
	if ss.Replica() != old {
		t.Fatalf("after the failover: Primary %s, Replica %s; want the old primary %s as the replica", ss.Primary().Addr(), ss.Replica().Addr(), old.Addr())
	}
}

// longCtx bounds the tests that fail over more than once on a loaded machine.
func longCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// writeAcked writes key=val on primary and returns how many replicas acknowledged
// it within 10s (WAIT on the writing connection).
func writeAcked(t *testing.T, ctx context.Context, primary *Server, key, val string, replicas int) int64 {
	t.Helper()
	replies, err := primary.DoAll(ctx, []string{"SET", key, val}, []string{"WAIT", strconv.Itoa(replicas), "10000"})
	if err != nil {
		t.Fatal(err)
	}
	if replies[0] != "OK" {
		t.Fatalf("SET %s on %s = %#v", key, primary.Addr(), replies[0])
	}
	n, _ := replies[1].(int64)
	return n
}

func TestSentinelTwoReplicas(t *testing.T) {
	t.Parallel()
	ctx := longCtx(t)
	ss := Sentinel(t, WithReplicas(2))
	old, reps := ss.Primary(), ss.Replicas()
	if len(reps) != 2 || reps[0] == reps[1] || slices.Contains(reps, old) || ss.Replica() != reps[0] {
		t.Fatalf("primary %s, replicas %v", old.Addr(), reps)
	}
	v := mustDo(t, ctx, ss.Sentinels()[0], "SENTINEL", "MASTER", MasterName)
	m, err := pairs(v)
	if err != nil || m["num-slaves"] != "2" || m["quorum"] != "2" {
		t.Fatalf("SENTINEL MASTER = %v, %v: want 2 replicas, quorum 2", m, err)
	}
	if n := writeAcked(t, ctx, old, "k", "v", 2); n != 2 {
		t.Fatalf("WAIT 2 = %d", n)
	}

	if _, err := ss.KillPrimary(); err != nil {
		t.Fatal(err)
	}
	addr, err := ss.WaitFailover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	promoted := ss.Primary()
	if promoted.Addr() != addr || !slices.Contains(reps, promoted) {
		t.Fatalf("promoted %s, want one of the replicas %s %s", addr, reps[0].Addr(), reps[1].Addr())
	}
	other := reps[0]
	if other == promoted {
		other = reps[1]
	}
	if got := ss.Replicas(); len(got) != 2 || !slices.Contains(got, old) || !slices.Contains(got, other) {
		t.Fatalf("Replicas after the failover = %v, want the old primary and %s", got, other.Addr())
	}
	// The sentinels make the replica that was not promoted follow the new primary.
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatal(err)
	}
	info, err := other.Info(ctx, "replication")
	if err != nil {
		t.Fatal(err)
	}
	if info["master_port"] != strconv.Itoa(promoted.Port()) || info["master_link_status"] != "up" {
		t.Fatalf("the other replica follows port %s (link %s), want %d", info["master_port"], info["master_link_status"], promoted.Port())
	}
	if n := writeAcked(t, ctx, promoted, "k2", "v2", 1); n != 1 {
		t.Fatalf("WAIT 1 on the new primary = %d: the other replica does not acknowledge", n)
	}
	for k, want := range map[string]string{"k": "v", "k2": "v2"} {
		if got := mustDo(t, ctx, other, "GET", k); got != want {
			t.Fatalf("GET %s on the other replica = %#v, want %q", k, got, want)
		}
	}

	// The old primary returns as a third follower of the new one.
	if err := old.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustDo(t, ctx, old, "GET", "k2"); got != "v2" {
		t.Fatalf("GET k2 on the rejoined old primary = %#v", got)
	}
}

// A lagging replica that the sentinels prefer is promoted without the writes it
// lacks; the up-to-date replica follows it and drops them too.
func TestSentinelLaggingReplicaPromoted(t *testing.T) {
	t.Parallel()
	ctx := longCtx(t)
	ss := Sentinel(t, WithReplicas(2))
	primary, reps := ss.Primary(), ss.Replicas()
	lagging, current := reps[0], reps[1]
	if err := ss.PreferReplica(ctx, lagging); err != nil {
		t.Fatal(err)
	}
	if n := writeAcked(t, ctx, primary, "before", "1", 2); n != 2 {
		t.Fatalf("WAIT 2 = %d", n)
	}
	if err := DetachReplica(ctx, primary, lagging); err != nil {
		t.Fatal(err)
	}
	// The current replica reconnects and acknowledges; the lagging one cannot.
	if n := writeAcked(t, ctx, primary, "after", "2", 1); n != 1 {
		t.Fatalf("WAIT 1 after the detach = %d", n)
	}
	if got := mustDo(t, ctx, current, "GET", "after"); got != "2" {
		t.Fatalf("GET after on the current replica = %#v", got)
	}
	if got := mustDo(t, ctx, lagging, "GET", "after"); got != nil {
		t.Fatalf("GET after on the detached replica = %#v, want nil", got)
	}

	if _, err := ss.KillPrimary(); err != nil {
		t.Fatal(err)
	}
	if _, err := ss.WaitFailover(ctx); err != nil {
		t.Fatal(err)
	}
	if ss.Primary() != lagging {
		t.Fatalf("promoted %s, want the preferred lagging replica %s", ss.Primary().Addr(), lagging.Addr())
	}
	if err := AttachReplica(ctx, lagging); err != nil {
		t.Fatal(err)
	}
	if err := ss.WaitReplicaSync(ctx); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*Server{lagging, current} {
		if got := mustDo(t, ctx, s, "GET", "before"); got != "1" {
			t.Fatalf("GET before on %s = %#v", s.Addr(), got)
		}
		if got := mustDo(t, ctx, s, "GET", "after"); got != nil {
			t.Fatalf("GET after on %s = %#v: the write the promoted replica lacked survived", s.Addr(), got)
		}
	}
}
