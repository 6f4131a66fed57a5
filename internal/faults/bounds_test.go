package faults

import (
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
)

// Scenario 8: an outage longer than the outbox bounds. Every publisher emits
// more during the outage than its outbox may hold (or for longer than its max
// age):
//
//   - reject-new: Emit returns bus.ErrOutboxFull for the events above the bound
//     (the local clients still get them: G1), and every accepted event reaches
//     every other node: nothing accepted is lost, no gap.
//   - drop-oldest and max age: the bus drops the oldest accepted events, and
//     only those: each drop is counted in Stats and passed to OnDrop, and every
//     other node reports exactly the dropped events as a gap.
//
// In all three the buses are Connected again afterwards with an empty outbox.
func TestOutageLongerThanOutbox(t *testing.T) {
	t.Parallel()
	// The bound holds what the publishers emit in a third of the outage.
	bound := max(int(r3(outage())*float64(rate())), 20)
	cases := []struct {
		name   string
		outbox bus.OutboxConfig
		want   expectation
	}{
		{"reject-new", bus.OutboxConfig{MaxMessages: bound, Overflow: bus.RejectNew}, exact},
		{"drop-oldest", bus.OutboxConfig{MaxMessages: bound, Overflow: bus.DropOldest}, accounted},
		{"max-age", bus.OutboxConfig{MaxAge: outage() / 3}, accounted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := redistest.Standalone(t, redistest.WithAOF())
			r := newRun(t, "outbox-bounds-"+tc.name, options{kind: redisbus.Streams, outbox: tc.outbox})
			r.addNodes(srv.URL(), srv.URL(), srv.URL())
			r.warmUp()
			r.startPublishers()
			pause(steadyPhase)

			killRedis(t, srv)
			r.waitDisconnected("Redis killed", r.nodes...)
			pause(r.outage)
			r.checkLocal("outbox over its bounds")
			restartRedis(t, srv)
			r.waitConnected("Redis restarted")
			pause(steadyPhase)
			res := r.finish(tc.want)

			for _, n := range r.nodes {
				st := n.bus.Status()
				if st.State != bus.Connected || st.OutboxLen != 0 {
					t.Errorf("%s after the outage: state %v, %d messages in the outbox; want connected and empty", n.id, st.State, st.OutboxLen)
				}
			}
			s := res.stats
			switch tc.name {
			case "reject-new":
				if res.rejected == 0 || s.Rejected != res.rejected {
					t.Errorf("rejected: %d Emit calls saw ErrOutboxFull, Stats.Rejected %d; want the same, above 0", res.rejected, s.Rejected)
				}
				if d := s.DroppedMaxAge + s.DroppedOverflow + s.DroppedClosed; d != 0 {
					t.Errorf("reject-new dropped %d accepted messages", d)
				}
			case "drop-oldest":
				r.checkDropsAreGaps(res, func(s bus.Stats) uint64 { return s.DroppedOverflow })
			case "max-age":
				r.checkDropsAreGaps(res, func(s bus.Stats) uint64 { return s.DroppedMaxAge })
			}
		})
	}
}

func r3(d time.Duration) float64 { return d.Seconds() / 3 }

// checkDropsAreGaps checks that the publishers dropped events only by the
// configured bound and that every other node's loss is exactly what its bus
// reported as gaps, within what the publisher reported as dropped: with AOF,
// nothing but a configured drop may be lost.
//
// A drop can name more messages than the receivers miss: frames of a publish
// in progress when Redis went away may have reached the stream (bus.Drop says
// their delivery is unknown). Those are logged as dropped_but_delivered.
func (r *run) checkDropsAreGaps(res result, dropped func(bus.Stats) uint64) {
	r.t.Helper()
	if res.rejected != 0 {
		r.t.Errorf("%d Emit calls rejected under a drop policy", res.rejected)
	}
	var total uint64
	for _, o := range r.nodes {
		s := o.bus.Stats()
		d := dropped(s)
		total += d
		if other := s.DroppedMaxAge + s.DroppedOverflow + s.DroppedClosed - d; other != 0 {
			r.t.Errorf("%s dropped %d messages for another reason than the configured one", o.id, other)
		}
		dropRanges, _ := o.seqRanges()
		droppedSeq := make(map[[2]uint64]bool) // {partition, seq}
		for _, rg := range dropRanges {
			for s := rg.First; s <= rg.Last; s++ {
				droppedSeq[[2]uint64{uint64(rg.Partition), s}] = true
			}
		}
		if uint64(len(droppedSeq)) != d {
			r.t.Errorf("%s: OnDrop named %d sequence numbers, Stats counts %d drops", o.id, len(droppedSeq), d)
		}
		for _, n := range r.nodes {
			if n == o {
				continue
			}
			lost := res.lostPerPair[n.idx][o.idx]
			_, missing := n.seqRanges()
			var notDropped uint64
			for _, rg := range missing[o.idx] {
				for s := rg.First; s <= rg.Last; s++ {
					if !droppedSeq[[2]uint64{uint64(rg.Partition), s}] {
						notDropped++
					}
				}
			}
			if notDropped > 0 {
				r.t.Errorf("%s reported %d messages of %s missing that %s never dropped", n.id, notDropped, o.id, o.id)
			}
			if lost > d {
				r.t.Errorf("%s dropped %d events; %s lost %d", o.id, d, n.id, lost)
			}
			r.t.Logf("%s dropped %d events: %s lost %d and reported %d missing, dropped_but_delivered=%d",
				o.id, d, n.id, lost, res.gapMsgsPerPair[n.idx][o.idx], d-min(d, lost))
		}
	}
	if total == 0 {
		r.t.Errorf("no drop: the outage did not exceed the outbox bound")
	}
}
