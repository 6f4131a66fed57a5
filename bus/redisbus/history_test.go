package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// ReadHistory gives back what was published on a partition, in order, from any
// position, and says when what followed a position was trimmed away.
func TestReadHistory(t *testing.T) {
	srv := redistest.Standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, srv.URL(), &Options{Bus: bus.Config{NodeID: "a", Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	for i := range 600 { // more than two pages
		if _, err := b.PublishSeq(ctx, "/chat", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var all []bus.HistoryEntry
	if err := b.ReadHistory(ctx, "/chat", "", func(e bus.HistoryEntry) bool { all = append(all, e); return true }); err != nil {
		t.Fatal(err)
	}
	if len(all) != 600 {
		t.Fatalf("read %d entries, want 600", len(all))
	}
	for i, e := range all {
		if string(e.Payload) != fmt.Sprintf("m%d", i) || e.Seq != uint64(i+1) || e.Origin != "a" || e.Instance != b.Instance() || e.ID == "" {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	var rest []bus.HistoryEntry
	if err := b.ReadHistory(ctx, "/chat", all[299].ID, func(e bus.HistoryEntry) bool { rest = append(rest, e); return len(rest) < 10 }); err != nil {
		t.Fatal(err)
	}
	if len(rest) != 10 || rest[0].Seq != 301 || rest[9].Seq != 310 {
		t.Fatalf("read after entry 300, stopped at 10: %d entries from seq %d", len(rest), rest[0].Seq)
	}

	// From the very start ("0-0", where a node that found no stream starts):
	// complete while nothing was ever trimmed.
	if err := b.ReadHistory(ctx, "/chat", "0-0", func(bus.HistoryEntry) bool { return false }); err != nil {
		t.Fatalf("reading from the start of an untrimmed stream: %v", err)
	}
	if got := b.Position("/chat"); got == "" || bus.ComparePositions(got, "0-0") < 0 {
		t.Fatalf("Position = %q", got)
	}

	// Trim the first 100 away: reading after one of them fails, after a kept one works.
	key := StreamKey(DefaultPrefix, b.PartitionOf("/chat"))
	if _, err := srv.Do(ctx, "XTRIM", key, "MINID", all[100].ID); err != nil {
		t.Fatal(err)
	}
	err = b.ReadHistory(ctx, "/chat", all[10].ID, func(bus.HistoryEntry) bool { return true })
	if !errors.Is(err, bus.ErrHistoryTrimmed) {
		t.Fatalf("reading after a trimmed entry: err = %v, want ErrHistoryTrimmed", err)
	}
	if err := b.ReadHistory(ctx, "/chat", all[150].ID, func(bus.HistoryEntry) bool { return true }); err != nil {
		t.Fatalf("reading after a kept entry: %v", err)
	}
	if err := b.ReadHistory(ctx, "/chat", "0-0", func(bus.HistoryEntry) bool { return true }); !errors.Is(err, bus.ErrHistoryTrimmed) {
		t.Fatalf("reading from the start after a trim: err = %v, want ErrHistoryTrimmed", err)
	}
}

// The key-value store keeps values for their time to live and hands each one
// to one taker.
func TestKeyValue(t *testing.T) {
	srv := redistest.Standalone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := NewTransport(&Options{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer closeTransport(t, tr)
	kv := tr.(bus.KeyValue)
	if err := kv.PutValue(ctx, "k", []byte("v1"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := kv.ExtendValues(ctx, []string{"k", "absent"}, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	ttl, err := srv.Do(ctx, "PTTL", DefaultPrefix+":kv:k")
	if err != nil || ttl.(int64) < 60_000 {
		t.Fatalf("PTTL after ExtendValues = %v %v", ttl, err)
	}
	v, err := kv.TakeValue(ctx, "k")
	if err != nil || string(v) != "v1" {
		t.Fatalf("TakeValue = %q %v", v, err)
	}
	if v, err := kv.TakeValue(ctx, "k"); err != nil || v != nil {
		t.Fatalf("second TakeValue = %q %v, want nothing", v, err)
	}
	if err := kv.PutValue(ctx, "short", []byte("x"), 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := kv.TakeValue(ctx, "short")
		if err != nil {
			t.Fatal(err)
		}
		if v == nil {
			break
		}
		if err := kv.PutValue(ctx, "short", v, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("value outlived its time to live")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := kv.PutValue(ctx, "d", []byte("x"), time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := kv.DeleteValue(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	if v, err := kv.TakeValue(ctx, "d"); err != nil || v != nil {
		t.Fatalf("TakeValue after DeleteValue = %q %v", v, err)
	}
}

// A history read or a session take (a client's recovery) right after Redis
// restarted succeeds: the client's idle connections broke with the restart,
// and a command that meets one asks again.
func TestReadHistoryAfterRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.Standalone(t, redistest.WithAOFPolicy("always"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := Open(ctx, srv.URL(), &Options{Bus: bus.Config{NodeID: "a", Logger: slog.New(slog.DiscardHandler)}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	kv, err := b.KeyValue()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := b.PublishSeq(ctx, "/chat", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var first string
	if err := b.ReadHistory(ctx, "/chat", "", func(e bus.HistoryEntry) bool { first = e.ID; return false }); err != nil {
		t.Fatal(err)
	}
	readHistory := func(round int) {
		n := 0
		if err := b.ReadHistory(ctx, "/chat", first, func(bus.HistoryEntry) bool { n++; return true }); err != nil {
			t.Fatalf("round %d: read after the restart: %v", round, err)
		}
		if n != 4 {
			t.Fatalf("round %d: read %d entries after the first, want 4", round, n)
		}
	}
	take := func(round int) {
		v, err := kv.TakeValue(ctx, fmt.Sprint("s", round))
		if err != nil || string(v) != fmt.Sprint("v", round) {
			t.Fatalf("round %d: take after the restart: %q, %v", round, v, err)
		}
	}
	for round := range 6 {
		if err := kv.PutValue(ctx, fmt.Sprint("s", round), fmt.Append(nil, "v", round), time.Minute); err != nil {
			t.Fatal(err)
		}
		if err := srv.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		// Whichever comes first meets the broken connections.
		if round%2 == 0 {
			readHistory(round)
			take(round)
		} else {
			take(round)
			readHistory(round)
		}
	}
}
