package nemesis

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/durasock/durasock/adapter"
)

// The checker is tested on small hand-made histories: two node instances (0 on
// n0, 1 on n1), one publisher on instance 0 sending seqs 1..10 to room r1 (and
// r2 for odd seqs, see pubHist.room), a session on instance 1 in both rooms.

const ms = int64(time.Millisecond)

func testHistory(got []uint64) *History {
	p := &pubHist{ID: 0, Namespace: "/a", Rooms: []string{"r1", "r2"}}
	for i := range 10 {
		p.Status = append(p.Status, statusOK)
		p.Sent = append(p.Sent, int64(100+i)*ms)
	}
	p.Sessions = []pubSess{{Instance: 0, NodeID: "n0", First: 1, Last: 10}}
	s := &sessHist{ID: 0, Client: 0, Namespace: "/a", Rooms: []string{"r1", "r2"}, Instance: 1, Ready: 50 * ms, End: 900 * ms, Reason: reasonClosed}
	for _, q := range got {
		s.Got = append(s.Got, recv{Pub: 0, Seq: q})
	}
	return &History{
		Scenario:   "unit",
		Publishers: []*pubHist{p},
		Sessions:   []*sessHist{s},
		Instances:  []*instHist{{Instance: 0, NodeID: "n0"}, {Instance: 1, NodeID: "n1", Slot: 1}},
	}
}

func seqs(from, to uint64, skip ...uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		ok := true
		for _, k := range skip {
			if s == k {
				ok = false
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

func TestCheckPassesACompleteHistory(t *testing.T) {
	v := Check(testHistory(seqs(1, 10)))
	if !v.OK() || v.Owed != 10 || v.Delivered != 10 {
		t.Fatalf("complete history: %s", v.Table())
	}
}

func TestCheckFindsSilentLoss(t *testing.T) {
	v := Check(testHistory(seqs(1, 10, 4, 5)))
	if v.OK() || v.Lost != 2 || v.Accounted != 0 {
		t.Fatalf("want 2 lost, unaccounted: %s", v.Table())
	}
	if len(v.Evidence) == 0 || !strings.Contains(v.Evidence[0], "publisher 0 seq 4") {
		t.Fatalf("evidence does not name the first missing event: %q", v.Evidence)
	}
}

func TestCheckFindsTailLoss(t *testing.T) {
	v := Check(testHistory(seqs(1, 7)))
	if v.Lost != 3 {
		t.Fatalf("want the 3 events of the tail lost: %s", v.Table())
	}
}

func TestCheckAccountsReportedGaps(t *testing.T) {
	h := testHistory(seqs(1, 10, 4, 5))
	h.Instances[1].Gaps = []report{{Kind: "gap", Origin: "n0", After: 3, Next: 6, Missing: 2}}
	v := Check(h)
	if !v.OK() || v.Accounted != 2 || v.GapMessages != 2 {
		t.Fatalf("a reported gap accounts for the loss: %s", v.Table())
	}
	// A gap reported about another origin accounts for nothing.
	h.Instances[1].Gaps[0].Origin = "n2"
	if v := Check(h); v.Lost != 2 {
		t.Fatalf("a gap of another origin must not account: %s", v.Table())
	}
	// Nor does a gap reported by another receiver.
	h.Instances[1].Gaps = nil
	h.Instances[0].Gaps = []report{{Kind: "gap", Origin: "n0", Missing: 2}}
	if v := Check(h); v.Lost != 2 {
		t.Fatalf("a gap of another receiver must not account: %s", v.Table())
	}
}

func TestCheckAccountsOriginDrops(t *testing.T) {
	h := testHistory(seqs(1, 8))
	h.Instances[0].Drops = []report{{Kind: "drop", Origin: "n0", Reason: "max_age", Count: 2}}
	if v := Check(h); !v.OK() || v.LostDropped != 2 || v.Accounted != 0 {
		t.Fatalf("a counted drop accounts for the loss: %s", v.Table())
	}
}

func TestCheckFindsDuplicates(t *testing.T) {
	v := Check(testHistory(append(seqs(1, 10), 6)))
	if v.OK() || v.Duplicates != 1 {
		t.Fatalf("want 1 duplicate: %s", v.Table())
	}
}

func TestCheckFindsReorders(t *testing.T) {
	v := Check(testHistory([]uint64{1, 2, 3, 5, 4, 6, 7, 8, 9, 10}))
	if v.OK() || v.Reordered != 1 || v.Lost != 0 {
		t.Fatalf("want 1 reordered: %s", v.Table())
	}
}

func TestCheckOrderIsPerPublisherSession(t *testing.T) {
	// The publisher moved to instance 2 at seq 6; events 1..5 of the first
	// session may arrive after 6..10 of the second (different origins).
	h := testHistory([]uint64{6, 7, 8, 9, 10, 1, 2, 3, 4, 5})
	h.Instances = append(h.Instances, &instHist{Instance: 2, NodeID: "n2", Slot: 2})
	h.Publishers[0].Sessions = []pubSess{{Instance: 0, NodeID: "n0", First: 1, Last: 5}, {Instance: 2, NodeID: "n2", First: 6, Last: 10}}
	if v := Check(h); !v.OK() {
		t.Fatalf("order across publisher sessions is not promised: %s", v.Table())
	}
}

func TestCheckOwesOnlyWhatFollowsReadiness(t *testing.T) {
	h := testHistory(seqs(4, 10))
	h.Sessions[0].Ready = 102*ms + 1 // after seq 3 was sent
	if v := Check(h); !v.OK() || v.Owed != 7 {
		t.Fatalf("events sent before the session was ready are not owed: %s", v.Table())
	}
}

func TestCheckNotOwedWhenNotAccepted(t *testing.T) {
	h := testHistory(seqs(1, 10, 4, 5))
	h.Publishers[0].Status[3] = statusUnknown
	h.Publishers[0].Status[4] = statusRefused
	if v := Check(h); !v.OK() {
		t.Fatalf("unanswered and refused events are not owed: %s", v.Table())
	}
	// A refused event that reached another node is a phantom.
	h = testHistory(seqs(1, 10))
	h.Publishers[0].Status[4] = statusRefused
	if v := Check(h); v.Phantom != 1 {
		t.Fatalf("want 1 phantom: %s", v.Table())
	}
}

func TestCheckCrashLoss(t *testing.T) {
	h := testHistory(seqs(1, 8))
	h.Instances[0].Faults = []fault{{At: 200 * ms, What: "kill"}}
	if v := Check(h); !v.OK() || v.CrashLost != 2 {
		t.Fatalf("events that never left a SIGKILLed origin are counted apart: %s", v.Table())
	}
	// If another node got them, they were in Redis: a real loss.
	other := &sessHist{ID: 1, Namespace: "/a", Rooms: []string{"r1", "r2"}, Instance: 1, Ready: 50 * ms, End: 900 * ms, Reason: reasonClosed}
	for _, q := range seqs(1, 10) {
		other.Got = append(other.Got, recv{0, q})
	}
	h.Sessions = append(h.Sessions, other)
	if v := Check(h); v.Lost != 2 {
		t.Fatalf("events another session got were not lost in the crash: %s", v.Table())
	}
}

func TestCheckCuts(t *testing.T) {
	h := testHistory(seqs(1, 10))
	h.Sessions[0].Reason = "websocket: failed to read frame header: EOF"
	if v := Check(h); v.Cuts != 1 {
		t.Fatalf("a cut no fault explains: %s", v.Table())
	}
	h.Instances[1].Faults = []fault{{At: 800 * ms, What: "stop"}}
	if v := Check(h); v.Cuts != 0 {
		t.Fatalf("a cut after its node was stopped is explained: %s", v.Table())
	}
	h.Sessions[0].Reason = `failed to get reader: received close frame: status = StatusPolicyViolation and reason = "send queue full"`
	if v := Check(h); v.Cuts != 1 {
		t.Fatalf("a slow-client cut is never explained by a fault: %s", v.Table())
	}
	// A session that ended early is owed nothing after what it last got.
	h = testHistory(seqs(1, 6))
	h.Sessions[0].Reason = reasonBounced
	if v := Check(h); !v.OK() {
		t.Fatalf("a bounced session is owed no tail: %s", v.Table())
	}
}

func TestCheckCountsBluntSteps(t *testing.T) {
	h := testHistory(seqs(1, 10))
	h.Steps = []stepHist{{Start: 200 * ms, End: 300 * ms, Op: "net-cut n1 100ms"}}
	if v := Check(h); v.Blunt != 1 || len(v.BluntSteps) != 1 {
		t.Fatalf("a step with no effect: %s", v.Table())
	}
	h.Instances[1].States = []stateAt{{At: 250 * ms, State: "reconnecting"}}
	if v := Check(h); v.Blunt != 0 {
		t.Fatalf("a step during which a bus reconnected bit: %s", v.Table())
	}
}

func TestCheckExactFailsOnlyOnGaps(t *testing.T) {
	h := testHistory(seqs(1, 8))
	h.Instances[0].Drops = []report{{Kind: "drop", Origin: "n0", Reason: "closed", Count: 2}}
	v := Check(h)
	v.Exact = true
	if !v.OK() {
		t.Fatalf("an exact scenario passes losses the origin counted as drops: %s", v.Table())
	}
	h = testHistory(seqs(1, 8))
	h.Instances[1].Gaps = []report{{Kind: "gap", Origin: "n0", Missing: 2}}
	v = Check(h)
	v.Exact = true
	if v.OK() || v.Accounted != 2 {
		t.Fatalf("an exact scenario fails on losses only gaps account for: %s", v.Table())
	}
}

func TestCheckOfficialSessionNotRecovered(t *testing.T) {
	notRecovered := func(steps ...stepHist) *Verdict {
		h := testHistory(seqs(1, 10))
		s := h.Sessions[0]
		s.Official, s.End, s.Reason = true, 500*ms, "not recovered: transport close"
		h.Steps = steps
		return Check(h)
	}
	if v := notRecovered(stepHist{Start: 490 * ms, End: 2000 * ms, Op: OpClientBounce + " n1 1s"}); v.Cuts != 1 || v.NotRecovered != 1 {
		t.Errorf("a bounce alone must recover the session: %s", v.Table())
	}
	if v := notRecovered(stepHist{Start: 490 * ms, End: 2000 * ms, Op: OpClientBounce + " n1 1s"},
		stepHist{Start: 400 * ms, End: 3000 * ms, Op: OpRedisKill + " 2s"}); v.Cuts != 0 {
		t.Errorf("a reconnect while Redis was down may start over: %s", v.Table())
	}
}

func TestCheckRecoveredSessionOwesTheGap(t *testing.T) {
	h := testHistory(seqs(1, 10, 6, 7))
	h.Sessions[0].Official, h.Sessions[0].Recovered = true, 1
	if v := Check(h); v.OK() || v.Lost != 2 || v.Recovered != 1 {
		t.Errorf("a recovered session missing events: %s", v.Table())
	}
}

func TestCheckMovedSessionCountsWhereItWas(t *testing.T) {
	// An official session on instance 0 (the origin's own node) gets seqs 1-5
	// there, is recovered on instance 1 and gets 6-10: the events it got on
	// instance 0 did not reach another node.
	h := testHistory(seqs(1, 10))
	s := h.Sessions[0]
	s.Official, s.Instance = true, 1
	s.Moves = []instMove{{At: 0, Index: 0, Instance: 0}, {At: 105 * ms, Index: 5, Instance: 1}}
	h.Instances[0].Faults = []fault{{At: 110 * ms, What: "kill"}}
	// Another session on instance 1 that missed 2-3: they never left the
	// killed origin, whatever the moved session got while on instance 0.
	o := &sessHist{ID: 1, Client: 1, Namespace: "/a", Rooms: []string{"r1", "r2"}, Instance: 1, Ready: 50 * ms, End: 900 * ms, Reason: reasonClosed}
	for _, q := range seqs(1, 10, 2, 3) {
		o.Got = append(o.Got, recv{Pub: 0, Seq: q})
	}
	h.Sessions = append(h.Sessions, o)
	v := Check(h)
	if !v.OK() || v.CrashLost != 2 {
		t.Fatalf("want 2 lost in the crash, nothing else: %s", v.Table())
	}
}

func TestCheckFindsLateRequests(t *testing.T) {
	h := testHistory(seqs(1, 10))
	h.Instances[0].Late = []report{{Kind: "late", Op: "broadcast with acks", TimeoutMs: 3000, TookMs: 14000}}
	v := Check(h)
	if v.OK() || v.Late != 1 || !strings.Contains(v.Failures(), "past their timeout") ||
		!strings.Contains(strings.Join(v.Evidence, "\n"), "broadcast with acks returned after 14000 ms") {
		t.Fatalf("want 1 late request: %s", v.Table())
	}
	// A node frozen by SIGSTOP while its request waited is not late.
	h = testHistory(seqs(1, 10))
	h.Instances[0].Late = []report{{Kind: "late", Op: "broadcast", TimeoutMs: 5000, TookMs: 30000, At: 40000 * ms}}
	h.Instances[0].Faults = []fault{{At: 12000 * ms, What: "stop"}}
	if v := Check(h); !v.OK() || v.Late != 0 {
		t.Fatalf("a request of a stopped node counted late: %s", v.Table())
	}
}

// A broadcast with acknowledgements that a whole node never answered may not
// have reached that node's sockets (a node serves no request past its
// deadline): its publish is unknown, not accepted. Sockets that did not
// answer on a node that counted them got it: accepted.
func TestAckOutcome(t *testing.T) {
	socketsMissing := &adapter.MissingRepliesError{Expected: 3, Received: 1, Missing: []string{"s1", "s2"}, Err: context.DeadlineExceeded}
	if err := ackOutcome(socketsMissing); err != nil {
		t.Errorf("sockets missing: %v, want accepted", err)
	}
	nodeMissing := &adapter.MissingRepliesError{Expected: 1, Received: 1, Missing: []string{"node:n2"}, Err: context.DeadlineExceeded}
	if err := ackOutcome(nodeMissing); err == nil || !strings.HasPrefix(err.Error(), unknownPrefix) {
		t.Errorf("a node missing: %v, want an answer starting with %q", err, unknownPrefix)
	}
	refused := errors.New("bus: outbox full")
	if err := ackOutcome(refused); !errors.Is(err, refused) {
		t.Errorf("refused: %v", err)
	}
}
