package redistest

import (
	"errors"
	"strings"
	"testing"
)

// A slot migrates step by step: while it is half done, the source answers ASK
// for the keys it moved and still serves the others; once finished, it answers
// MOVED and the target serves every key.
func TestClusterMigrateSlot(t *testing.T) {
	t.Parallel()
	ctx := longCtx(t)
	cs := Cluster(t)
	slot := KeySlot("{m}")
	from, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		t.Fatal(err)
	}
	prims, err := cs.Primaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	to := prims[0]
	if to == from {
		to = prims[1]
	}
	for _, k := range []string{"{m}a", "{m}b", "{m}c"} {
		mustDo(t, ctx, from, "SET", k, k)
	}
	m, err := cs.StartMigration(ctx, slot, to)
	if err != nil {
		t.Fatal(err)
	}
	if m.From() != from || m.To() != to {
		t.Fatalf("migration %s -> %s, want %s -> %s", m.From().Addr(), m.To().Addr(), from.Addr(), to.Addr())
	}
	if n, err := m.MoveKeys(ctx, 2); err != nil || n != 2 {
		t.Fatalf("MoveKeys(2) = %d, %v", n, err)
	}
	var asked, local int
	for _, k := range []string{"{m}a", "{m}b", "{m}c"} {
		v, err := from.Do(ctx, "GET", k)
		var re ReplyError
		switch {
		case errors.As(err, &re) && strings.HasPrefix(string(re), "ASK "):
			asked++
			got, err := to.DoAll(ctx, []string{"ASKING"}, []string{"GET", k})
			if err != nil || got[1] != k {
				t.Fatalf("ASKING GET %s on the target = %#v, %v", k, got, err)
			}
		case err == nil && v == k:
			local++
		default:
			t.Fatalf("GET %s on the source = %#v, %v", k, v, err)
		}
	}
	if asked != 2 || local != 1 {
		t.Fatalf("half done: %d keys answered ASK, %d served, want 2 and 1", asked, local)
	}
	if n, err := m.MoveKeys(ctx, 10); err != nil || n != 1 {
		t.Fatalf("MoveKeys(10) = %d, %v", n, err)
	}
	if n, err := m.MoveKeys(ctx, 10); err != nil || n != 0 {
		t.Fatalf("MoveKeys with nothing left = %d, %v", n, err)
	}
	if err := m.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if owner, err := cs.PrimaryOfSlot(ctx, slot); err != nil || owner != to {
		t.Fatalf("slot served by %v (%v), want %s", owner, err, to.Addr())
	}
	_, err = from.Do(ctx, "GET", "{m}a")
	var re ReplyError
	if !errors.As(err, &re) || !strings.HasPrefix(string(re), "MOVED ") {
		t.Fatalf("GET on the source after the migration: %v, want MOVED", err)
	}
	if got := mustDo(t, ctx, to, "GET", "{m}c"); got != "{m}c" {
		t.Fatalf("GET on the target = %#v", got)
	}
	// Back, in one call.
	if err := cs.MigrateSlot(ctx, slot, from); err != nil {
		t.Fatal(err)
	}
	if got := mustDo(t, ctx, from, "GET", "{m}b"); got != "{m}b" {
		t.Fatalf("GET after migrating back = %#v", got)
	}
}
