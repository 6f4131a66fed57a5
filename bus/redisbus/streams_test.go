package redisbus

import (
	"context"
	"testing"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

func TestStreamMaxLen(t *testing.T) {
	srv := redistest.Standalone(t)
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		maxLen   int64
		min, max int64
	}{
		// Approximate trimming removes whole nodes of the stream
		// (stream-node-max-entries, 100 by default): at least maxLen stay.
		{"trimmed", 100, 100, 300},
		{"untrimmed", -1, 1000, 1000},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := faultOpts(Streams)
			o.Prefix, o.Partitions, o.StreamMaxLen = "maxlen-"+tt.name, 1, tt.maxLen
			tr := newTransport(t, srv.URL(), o)
			for i := 0; i < 1000; i += 100 {
				publish(t, tr, numbered(i, i+100, 1))
			}
			v, err := srv.Do(ctx, "XLEN", StreamKey(o.Prefix, 0))
			if err != nil {
				t.Fatal(err)
			}
			n, ok := v.(int64)
			if !ok || n < tt.min || n > tt.max {
				t.Errorf("XLEN = %v, want %d..%d", v, tt.min, tt.max)
			}
		})
	}
}

// TestForeignEntry checks that an entry without the frame field (written by
// something else) is delivered empty, for the bus to count as undecodable,
// and does not stop the reader.
func TestForeignEntry(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Partitions = 1
	tr := newTransport(t, srv.URL(), o)
	sub := startSubscribe(t, tr, "s")
	syncSubscribed(t, tr, "s", sub)
	if _, err := srv.Do(context.Background(), "XADD", StreamKey(DefaultPrefix, 0), "*", "other", "x"); err != nil {
		t.Fatal(err)
	}
	publish(t, tr, numbered(0, 1, 1))
	sub.waitFor(t, "frame after the foreign entry", countNumbered(0, 1))
	fs := dataFrames(sub.snapshot())
	if len(fs) != 2 || fs[0].Data != nil || fs[0].Partition != 0 || string(fs[1].Data) != "m0" {
		t.Errorf("frames = %+v, want an empty frame then m0", fs)
	}
}

// TestStreamsMarkStart: frames published after MarkStart and before the first
// Subscribe are delivered by it; a later MarkStart keeps the start. The
// pub/sub transport, without history, has no start to fix.
func TestStreamsMarkStart(t *testing.T) {
	srv := redistest.Standalone(t)
	o := faultOpts(Streams)
	o.Prefix = "markstart"
	pub := newTransport(t, srv.URL(), o)
	publish(t, pub, numbered(0, 4, o.Partitions)) // before MarkStart: not delivered
	tr := newTransport(t, srv.URL(), o)
	m, ok := tr.(bus.StartMarker)
	if !ok {
		t.Fatal("the streams transport does not implement bus.StartMarker")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	if err := m.MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	publish(t, pub, numbered(4, 10, o.Partitions))
	if err := m.MarkStart(ctx); err != nil {
		t.Fatal(err)
	}
	sub := startSubscribe(t, tr, "s")
	sub.waitFor(t, "frames published between MarkStart and Subscribe", countNumbered(4, 10))
	publish(t, pub, numbered(10, 12, o.Partitions))
	sub.waitFor(t, "frames published after Subscribe", countNumbered(4, 12))
	checkNumbered(t, dataFrames(sub.snapshot()), 4, 12, o.Partitions)
	for _, f := range dataFrames(sub.snapshot()) {
		if i, ok := frameNumber(f); !ok || i < 4 {
			t.Errorf("frame %q delivered; want only those published after MarkStart", f.Data)
		}
	}

	ps := newTransport(t, srv.URL(), faultOpts(PubSub))
	if _, ok := ps.(bus.StartMarker); ok {
		t.Error("the pub/sub transport implements bus.StartMarker")
	}
}
