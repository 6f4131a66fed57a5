package redistest

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestKeySlot(t *testing.T) {
	// Values from the Redis Cluster specification and CLUSTER KEYSLOT.
	for key, want := range map[string]int{
		"123456789":    12739,
		"foo":          12182,
		"bar":          5061,
		"{user1000}.x": KeySlot("user1000"),
		"a{}b":         KeySlot("a{}b"),
		"":             0,
	} {
		if got := KeySlot(key); got != want {
			t.Errorf("KeySlot(%q) = %d, want %d", key, got, want)
		}
	}
	if crc16("123456789") != 0x31C3 {
		t.Errorf("crc16 check value = %#x", crc16("123456789"))
	}
}

func TestClusterFailover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	start := time.Now()
	cs := Cluster(t)
	t.Logf("cluster ready in %v", time.Since(start))
	if len(cs.Nodes()) != 6 || len(cs.Addrs()) != 6 {
		t.Fatalf("nodes %v", cs.Addrs())
	}
	if want := "redis+cluster://" + strings.Join(cs.Addrs(), ","); cs.URL() != want {
		t.Fatalf("URL = %q, want %q", cs.URL(), want)
	}
	// Our own computation agrees with the server's.
	for _, key := range []string{"foo", "bar", "{tag}x", "durasock:stream:0"} {
		v := mustDo(t, ctx, cs.Nodes()[0], "CLUSTER", "KEYSLOT", key)
		if v != int64(KeySlot(key)) {
			t.Fatalf("CLUSTER KEYSLOT %q = %v, KeySlot = %d", key, v, KeySlot(key))
		}
	}
	primaries, err := cs.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(primaries) != 3 {
		t.Fatalf("%d primaries, want 3", len(primaries))
	}
	owner, err := cs.PrimaryOfSlot(ctx, KeySlot("foo"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(primaries, owner) {
		t.Fatalf("owner %s is not among the primaries", owner.Addr())
	}
	// WAIT on the connection that wrote: the replica has the write before the kill.
	replies, err := owner.DoAll(ctx, []string{"SET", "foo", "bar"}, []string{"WAIT", "1", "10000"})
	if err != nil {
		t.Fatal(err)
	}
	if replies[0] != "OK" || replies[1] != int64(1) {
		t.Fatalf("SET, WAIT 1 = %#v: the write did not reach the replica", replies)
	}
	// Every other node redirects to the owner.
	for _, n := range cs.Nodes() {
		if n == owner {
			continue
		}
		_, err := n.Do(ctx, "GET", "foo")
		var re ReplyError
		if !errors.As(err, &re) || !strings.HasSuffix(string(re), " "+owner.Addr()) || !strings.HasPrefix(string(re), "MOVED") {
			t.Fatalf("GET foo on %s = %v, want MOVED to %s", n.Addr(), err, owner.Addr())
		}
	}

	killed, err := cs.KillPrimaryOf(ctx, "foo")
	if err != nil {
		t.Fatal(err)
	}
	if killed != owner || killed.Running() {
		t.Fatal("KillPrimaryOf killed the wrong node")
	}
	killedAt := time.Now()
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster healthy again %v after the kill", time.Since(killedAt))
	promoted, err := cs.PrimaryOfSlot(ctx, KeySlot("foo"))
	if err != nil {
		t.Fatal(err)
	}
	if promoted == killed {
		t.Fatal("slot still served by the killed node")
	}
	if v := mustDo(t, ctx, promoted, "GET", "foo"); v != "bar" {
		t.Fatalf("GET on promoted replica = %#v", v)
	}

	// The killed node rejoins as a replica.
	if err := killed.Start(ctx); err != nil {
		t.Fatal(err)
	}
	restartedAt := time.Now()
	if err := waitReplicaSync(ctx, promoted, killed); err != nil {
		t.Fatal(err)
	}
	if err := cs.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed node rejoined as replica %v after its restart", time.Since(restartedAt))
}

func TestClusterTLSAndACL(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	cs := Cluster(t, WithTLS(), WithUser("app", "pw"))
	if cs.TLS() == nil {
		t.Fatal("no TLS files")
	}
	if want := "rediss+cluster://app:pw@" + strings.Join(cs.Addrs(), ","); cs.URL() != want {
		t.Fatalf("URL = %q, want %q", cs.URL(), want)
	}
	owner, err := cs.PrimaryOfSlot(ctx, KeySlot("k"))
	if err != nil {
		t.Fatal(err)
	}
	mustDo(t, ctx, owner, "SET", "k", "v")
	conf, err := cs.TLS().ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialRESP(ctx, owner.Addr(), conf, []string{"app", "pw"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if v, err := c.do(ctx, "GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET over TLS = %v, %v", v, err)
	}
}

// A replica that lags its primary takes over with CLUSTER FAILOVER TAKEOVER
// without the writes it lacks; the old primary, still running, follows it and
// drops them too.
func TestClusterLaggingFailover(t *testing.T) {
	t.Parallel()
	ctx := longCtx(t)
	cs := Cluster(t)
	primary, err := cs.PrimaryOfSlot(ctx, KeySlot("{k}before"))
	if err != nil {
		t.Fatal(err)
	}
	reps, err := cs.ReplicasOf(ctx, primary)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 1 || reps[0] == primary {
		t.Fatalf("replicas of %s: %v", primary.Addr(), reps)
	}
	replica := reps[0]
	if n := writeAcked(t, ctx, primary, "{k}before", "1", 1); n != 1 {
		t.Fatalf("WAIT 1 = %d", n)
	}
	if err := DetachReplica(ctx, primary, replica); err != nil {
		t.Fatal(err)
	}
	// Acknowledged by the primary, never replicated.
	if n := writeAcked(t, ctx, primary, "{k}after", "2", 0); n != 0 {
		t.Fatalf("WAIT 0 = %d", n)
	}
	if err := cs.Failover(ctx, replica, "TAKEOVER"); err != nil {
		t.Fatal(err)
	}
	if owner, err := cs.PrimaryOfSlot(ctx, KeySlot("{k}")); err != nil || owner != replica {
		t.Fatalf("slot served by %v (%v), want %s", owner, err, replica.Addr())
	}
	if err := AttachReplica(ctx, replica); err != nil {
		t.Fatal(err)
	}
	if got, err := cs.ReplicasOf(ctx, replica); err != nil || !slices.Contains(got, primary) {
		t.Fatalf("replicas of the new primary: %v, %v; want the old primary", got, err)
	}
	if got := mustDo(t, ctx, replica, "GET", "{k}before"); got != "1" {
		t.Fatalf("GET before on the new primary = %#v", got)
	}
	for _, s := range []*Server{replica, primary} {
		v, err := s.DoAll(ctx, []string{"READONLY"}, []string{"GET", "{k}after"})
		if err != nil {
			t.Fatal(err)
		}
		if v[1] != nil {
			t.Fatalf("GET after on %s = %#v: the write the promoted replica lacked survived", s.Addr(), v[1])
		}
	}
}
