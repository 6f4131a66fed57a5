package redistest

import (
	"strings"
	"testing"
	"time"
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
	if _, err := ss.KillPrimary(); err != nil {
		t.Fatal(err)
	}
	addr, err := ss.WaitFailover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if addr != ss.Primary().Addr() {
		t.Fatalf("failover to %s, Primary %s", addr, ss.Primary().Addr())
	}
}
