package nemesis

import (
	"sync"
	"time"
)

// Status of one publish in a publisher's history.
const (
	statusPending uint8 = iota // sent, no answer yet
	statusOK                   // the node acked: delivered locally and accepted by the bus
	statusRefused              // the node acked with an error (outbox full, closed)
	statusUnknown              // no answer: ack timeout, connection lost, node gone
)

// History is everything a run recorded: what every publisher sent and how it was
// answered, what every client session received, every node instance's life and
// reports, and every nemesis step. Times are offsets from the run's start, all
// measured in the harness process.
type History struct {
	Seed       int64       `json:"seed"`
	Scenario   string      `json:"scenario"`
	Publishers []*pubHist  `json:"publishers"`
	Sessions   []*sessHist `json:"sessions"`
	Instances  []*instHist `json:"instances"`
	Steps      []stepHist  `json:"steps"`
}

// pubHist is one publisher: a namespace, a home node, numbered events sent to
// alternating rooms. Its events are grouped in sessions: one per connection to a
// node instance (the events' origin).
type pubHist struct {
	ID        int      `json:"id"`
	Namespace string   `json:"namespace"`
	Rooms     []string `json:"rooms"` // event seq goes to Rooms[seq % len(Rooms)]

	mu       sync.Mutex
	Status   []uint8   `json:"status"`   // Status[seq-1] (base64 in JSON): 0 pending, 1 ok, 2 refused, 3 unknown
	Sent     []int64   `json:"sent"`     // Sent[seq-1]: ns since start
	Sessions []pubSess `json:"sessions"` // in order; each covers seqs First..Last
}

type pubSess struct {
	Instance int    `json:"instance"`
	NodeID   string `json:"node_id"`
	First    uint64 `json:"first"`
	Last     uint64 `json:"last"`
}

func (p *pubHist) room(seq uint64) string { return p.Rooms[seq%uint64(len(p.Rooms))] }

// sessHist is one client connection to one node instance: when it became ready
// (rooms joined), when and why it ended, and the events it received in order.
type sessHist struct {
	ID        int      `json:"id"`
	Client    int      `json:"client"`
	Namespace string   `json:"namespace"`
	Rooms     []string `json:"rooms"`
	Instance  int      `json:"instance"`
	Ready     int64    `json:"ready"`
	mu        sync.Mutex
	End       int64  `json:"end"`    // 0 while open
	Reason    string `json:"reason"` // why it ended; "closed" when the harness closed it
	Got       []recv `json:"got"`
	Bad       int    `json:"bad"` // events that did not decode
	// Official marks a session of the official socket.io-client, which spans
	// the reconnects the server recovered (Recovered counts them).
	Official  bool `json:"official,omitempty"`
	Recovered int  `json:"recovered,omitempty"`
	// Moves says which node instance the session was on from when (an
	// official session moves when it is recovered on another node);
	// Instance is the last one.
	Moves []instMove `json:"moves,omitempty"`
}

// instMove: from time At, and from event Got[Index] on, the session is on
// Instance.
type instMove struct {
	At       int64 `json:"at"`
	Index    int   `json:"index"`
	Instance int   `json:"instance"`
}

// instanceAtIndex returns the instance that delivered Got[i].
func instanceAtIndex(moves []instMove, last, i int) int {
	for j := len(moves) - 1; j >= 0; j-- {
		if moves[j].Index <= i {
			return moves[j].Instance
		}
	}
	return last
}

// instanceAtTime returns the instance the session was on at t.
func instanceAtTime(moves []instMove, last int, t int64) int {
	for j := len(moves) - 1; j >= 0; j-- {
		if moves[j].At <= t {
			return moves[j].Instance
		}
	}
	if len(moves) > 0 {
		return moves[0].Instance
	}
	return last
}

type recv struct {
	Pub int    `json:"p"`
	Seq uint64 `json:"s"`
}

// instHist is one node process.
type instHist struct {
	Instance int    `json:"instance"`
	Slot     int    `json:"slot"`
	NodeID   string `json:"node_id"`
	PID      int    `json:"pid"`
	Start    int64  `json:"start"`
	mu       sync.Mutex
	Faults   []fault     `json:"faults"` // kill, term, stop: what may explain client cuts
	Gaps     []report    `json:"gaps"`
	Drops    []report    `json:"drops"`
	Late     []report    `json:"late,omitempty"` // requests that returned past their timeout
	States   []stateAt   `json:"states"`
	Exit     int64       `json:"exit"` // 0 while running
	ExitErr  string      `json:"exit_err,omitempty"`
	Final    *nodeStatus `json:"final,omitempty"` // the last /status read
	Samples  []sample    `json:"samples,omitempty"`
}

// stateAt is a bus state change a node reported.
type stateAt struct {
	At    int64  `json:"at"`
	State string `json:"state"`
	Err   string `json:"err,omitempty"`
}

// sample is a node's resource use at a time.
type sample struct {
	At         int64  `json:"at"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

type fault struct {
	At   int64  `json:"at"`
	What string `json:"what"`
}

func (in *instHist) addFault(at int64, what string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.Faults = append(in.Faults, fault{at, what})
}

// faultedBefore reports whether the instance was killed, drained or paused
// before t (plus a grace for the cut to be noticed).
func (in *instHist) faultedBefore(t int64) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, f := range in.Faults {
		if f.At <= t {
			return true
		}
	}
	return false
}

func (in *instHist) killed() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	for _, f := range in.Faults {
		if f.What == "kill" {
			return true
		}
	}
	return false
}

// stepHist is one nemesis step.
type stepHist struct {
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	Op    string `json:"op"`
	Err   string `json:"err,omitempty"`
}

// clock gives offsets from the start of a run.
type clock struct{ start time.Time }

func (c clock) now() int64 { return int64(time.Since(c.start)) }
