package bus

import (
	"context"
	"errors"
	"time"
)

// Roster is implemented by a Transport that keeps a membership record in the
// broker (package redisbus: a few keys in the slot of its prefix). Each node
// writes its own entry every interval and reads back only the entries that
// changed since its last read, so a cluster's periodic liveness costs one
// small command per node instead of a message from every node to every node
// (package cluster uses it in place of periodic heartbeats).
//
// An entry is one process (node id and bus instance) with a number the
// caller chooses (Info). It is fresh while its process writes it within the
// stale bound it gave; the first Beat of any node after that bound marks it
// stale, which is a change every reader then reads. A stale entry is removed
// once Forget has passed; a reader whose last read is older than a removal
// gets the whole record. Processes that share a record should share their
// intervals and bounds.
type Roster interface {
	// Beat writes (or, with Leave, marks stale) the caller's entry, and
	// returns the entries that changed after b.Since, or every entry when
	// b.Since is not of the record's current epoch (a record the broker lost
	// and began again).
	Beat(ctx context.Context, b RosterBeat) (RosterView, error)
}

// RosterBeat is one Beat.
type RosterBeat struct {
	// Node and Instance name the caller's entry.
	Node     string
	Instance uint64
	// Info is stored with the entry; readers get it with every change of it.
	Info uint64
	// Stale is how long the entry stays fresh without another Beat.
	Stale time.Duration
	// Forget is how long a stale entry is kept before it is removed (at least
	// Stale; every reader that reads within it learns that it went stale).
	Forget time.Duration
	// Interval is how often the caller beats (at most Stale). When no node
	// wrote the record for more than twice an entry's interval (writes were
	// refused, Redis was down, or its clock stepped), the pause beyond that
	// interval is not counted towards the entry's bound: a live node's entry
	// does not turn stale because no one could write. Such an entry is
	// Unconfirmed until written again. Zero is taken as Stale.
	Interval time.Duration
	// Since is the version of the record the caller read last; zero asks for
	// every entry.
	Since RosterVersion
	// Leave marks the entry stale at once (a process that ends).
	Leave bool
}

// RosterVersion is a position in a record's changes. Epoch names the record
// (it changes when the broker lost the record and a new one began); N grows
// with every change.
type RosterVersion struct {
	Epoch string
	N     uint64
}

// RosterView is what a Beat read.
type RosterView struct {
	// Version is the record's version after this Beat: the caller's next Since.
	Version RosterVersion
	// Full reports that Changed is the whole record (Since was of another
	// epoch, or zero).
	Full bool
	// Changed are the entries that changed after Since, the caller's own
	// included.
	Changed []RosterEntry
}

// RosterEntry is one process in the record.
type RosterEntry struct {
	Node     string
	Instance uint64
	Info     uint64
	// Fresh reports that the process wrote its entry within its stale bound
	// (as of this Beat); a stale one stopped, or left.
	Fresh bool
	// Unconfirmed reports a fresh entry that is fresh only because the
	// record paused (no node could write it, or the broker's clock stepped
	// forward) and that was not written since: no sign that its process
	// lives.
	Unconfirmed bool
	// Left reports a stale entry that its process marked stale (Leave).
	Left bool
}

// ErrNoRoster is returned by Reliable.Roster when the transport keeps no
// membership record.
var ErrNoRoster = errors.New("bus: the transport keeps no membership record")

// Roster returns the transport's membership record, or ErrNoRoster.
func (r *Reliable) Roster() (Roster, error) {
	ro, ok := r.t.(Roster)
	if !ok {
		return nil, ErrNoRoster
	}
	return ro, nil
}
