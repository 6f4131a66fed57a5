package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrHistoryTrimmed is returned by ReadHistory when the broker no longer keeps
// messages after the requested position: they were trimmed away.
var ErrHistoryTrimmed = errors.New("bus: history trimmed")

// ErrNoHistory is returned by ReadHistory and the key-value calls of a bus
// whose transport keeps no history (pub/sub, MemoryHub).
var ErrNoHistory = errors.New("bus: the transport keeps no history")

// HistoryReader is implemented by a Transport whose reliable plane keeps what
// it carried (Redis streams): a node can read, after the fact, what every node
// published on a partition. Connection state recovery across nodes uses it.
type HistoryReader interface {
	// ReadHistory calls fn in order for the frames of partition p after
	// position after (a Frame.ID; "" for the oldest kept) up to the newest, until
	// fn returns false. It returns an error wrapping ErrHistoryTrimmed when
	// frames after `after` were trimmed away.
	ReadHistory(ctx context.Context, p int, after string, fn func(Frame) bool) error
}

// KeyValue is implemented by a Transport whose broker can keep small values
// for a while (Redis): session state that any node can take over.
type KeyValue interface {
	// PutValue stores value under key for ttl.
	PutValue(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// TakeValue returns the value of key and removes it, atomically (only one
	// caller gets it); nil without error when there is none.
	TakeValue(ctx context.Context, key string) ([]byte, error)
	// ExtendValues sets the time to live of existing keys; absent keys are
	// skipped.
	ExtendValues(ctx context.Context, keys []string, ttl time.Duration) error
	// DeleteValue removes key.
	DeleteValue(ctx context.Context, key string) error
}

// Instance returns the random number of this process start: the instance of
// every message this bus publishes.
func (r *Reliable) Instance() uint64 { return r.instance }

// PublishSeq is Publish that also returns the sequence number the message got
// in its partition (within this bus's Instance). On error the message was not
// accepted and seq is 0.
func (r *Reliable) PublishSeq(ctx context.Context, key string, payload []byte) (seq uint64, err error) {
	return r.publish(ctx, key, payload)
}

// HistoryEntry is a message read back by ReadHistory.
type HistoryEntry struct {
	// ID is the position in the partition (a Redis stream entry id).
	ID string
	// Origin is the node that published the message, Instance that node's
	// run (random per process start), Seq its sequence number in the
	// partition within that run.
	Origin   string
	Instance uint64
	Seq      uint64
	// Time is when it was published, by the publisher's clock.
	Time time.Time
	// Payload is what was published.
	Payload []byte
}

// ReadHistory calls fn in order for the data messages published with key's
// partition after position after, up to the newest, until fn returns false. It
// returns ErrNoHistory when the transport keeps none, and an error wrapping
// ErrHistoryTrimmed when messages after `after` are gone. Frames that do not
// decode are skipped (the receiver counts them), and so are copies: a message
// whose (origin, instance) seq the read already passed (written again after a
// failed publish, or republished after a broken connection), and a
// republished message whose original is at or before after (the reader had
// it): for the first republished message of a run met before any other of
// that run, the history just before after is read back to find it
// (lookbackSkew before the message's publish time).
func (r *Reliable) ReadHistory(ctx context.Context, key, after string, fn func(HistoryEntry) bool) error {
	return r.ReadHistoryOn(ctx, partitionOf(key, r.shared), after, fn)
}

// ReadHistoryOn is ReadHistory of partition p (PartitionOf of a key, or
// InboxOf of a node).
func (r *Reliable) ReadHistoryOn(ctx context.Context, p int, after string, fn func(HistoryEntry) bool) error {
	h, ok := r.t.(HistoryReader)
	if !ok {
		return ErrNoHistory
	}
	if p < 0 || p >= r.partitions {
		return fmt.Errorf("bus: partition %d of %d", p, r.partitions)
	}
	passed := make(map[historyRun]uint64)
	decided := make(map[string]bool) // republished entries whose original was looked for
	cursor := after
	for {
		var pending *envelope
		var pendingID string
		stopped := false
		err := h.ReadHistory(ctx, p, cursor, func(f Frame) bool {
			e, err := decodeEnvelope(f.Data, nil)
			if err != nil || e.Kind != kindData {
				cursor = f.ID
				return true
			}
			k := historyRun{e.Origin, e.Instance}
			last, seen := passed[k]
			if seen && e.Seq <= last {
				cursor = f.ID
				return true
			}
			if e.Republished && !seen && !decided[f.ID] {
				pending, pendingID = &e, f.ID
				return false // look back for its original first; the read resumes here
			}
			passed[k] = e.Seq
			cursor = f.ID
			if !fn(HistoryEntry{ID: f.ID, Origin: e.Origin, Instance: e.Instance, Seq: e.Seq, Time: e.publishTime(), Payload: e.Payload}) {
				stopped = true
				return false
			}
			return true
		})
		if err != nil || stopped || pending == nil {
			return err
		}
		decided[pendingID] = true
		k := historyRun{pending.Origin, pending.Instance}
		if held := heldThrough(ctx, h, p, after, pending); held >= pending.Seq {
			passed[k] = held // the reader had these: their copies are skipped
		}
	}
}

// historyRun is one sequence space of a partition: a run of an origin.
type historyRun struct {
	origin   string
	instance uint64
}

// lookbackSkew is how far before a republished message's publish time (the
// publisher's clock) its original is looked for (the broker's clock numbers
// the positions).
const lookbackSkew = 10 * time.Second

// heldThrough returns the highest seq of e's run in the history from
// lookbackSkew before e's publish time through position after (0 when none,
// when after is the start, or when the history could not be read: the copy is
// then delivered, a possible duplicate rather than a loss).
func heldThrough(ctx context.Context, h HistoryReader, p int, after string, e *envelope) uint64 {
	if after == "" || after == "0-0" {
		return 0
	}
	fromMs := max(e.Time/int64(time.Millisecond)-int64(lookbackSkew/time.Millisecond), 0)
	from := strconv.FormatInt(fromMs, 10) + "-0"
	if ComparePositions(from, after) >= 0 {
		return 0
	}
	var held uint64
	scan := func(f Frame) bool {
		if ComparePositions(f.ID, after) > 0 {
			return false
		}
		o, err := decodeEnvelope(f.Data, nil)
		if err == nil && o.Kind == kindData && o.Origin == e.Origin && o.Instance == e.Instance {
			held = max(held, o.Seq)
		}
		return true
	}
	err := h.ReadHistory(ctx, p, from, scan)
	if errors.Is(err, ErrHistoryTrimmed) {
		// The stream starts after from (it is younger than the skew, or
		// began again after a restart): it holds little; read it all.
		held = 0
		err = h.ReadHistory(ctx, p, "", scan)
	}
	if err != nil {
		return 0
	}
	return held
}

// KeepsHistory reports whether the transport keeps history (ReadHistory works).
func (r *Reliable) KeepsHistory() bool {
	_, ok := r.t.(HistoryReader)
	return ok
}

// KeyValue returns the transport's key-value store, or ErrNoHistory.
func (r *Reliable) KeyValue() (KeyValue, error) {
	kv, ok := r.t.(KeyValue)
	if !ok {
		return nil, fmt.Errorf("%w: no key-value store", ErrNoHistory)
	}
	return kv, nil
}

// Positioner is implemented by a Transport that knows, per partition, the
// position up to which it has delivered frames and seen deliver return,
// starting from where its reading started (Redis streams: the stream's end at
// StartMarker.MarkStart, "0-0" for a stream that did not exist).
type Positioner interface {
	Position(p int) string
}

// Position returns the transport position (Frame.ID) up to which this node has
// read and handled key's partition: every message of another node up to it was
// delivered to the Handler, and the Handler returned; before the first frame,
// where its reading started. Empty on transports without positions (pub/sub),
// and before the start is known.
func (r *Reliable) Position(key string) string {
	return r.PositionOn(partitionOf(key, r.shared))
}

// PositionOn is Position of partition p.
func (r *Reliable) PositionOn(p int) string {
	if ps, ok := r.t.(Positioner); ok {
		if id := ps.Position(p); id != "" {
			return id
		}
	}
	return r.pos.get(p)
}

// LastSeq returns the sequence number of the last message this bus accepted on
// key's partition (0 before the first).
func (r *Reliable) LastSeq(key string) uint64 {
	return r.LastSeqOn(partitionOf(key, r.shared))
}

// LastSeqOn is LastSeq of partition p.
func (r *Reliable) LastSeqOn(p int) uint64 {
	r.ob.mu.Lock()
	defer r.ob.mu.Unlock()
	if p < 0 || p >= len(r.ob.seqs) {
		return 0
	}
	return r.ob.seqs[p]
}

// positions are the last frame ids read per partition.
type positions struct {
	mu  sync.RWMutex
	ids []string
}

func (p *positions) set(partition int, id string) {
	p.mu.Lock()
	if partition >= len(p.ids) {
		p.ids = append(p.ids, make([]string, partition+1-len(p.ids))...)
	}
	p.ids[partition] = id
	p.mu.Unlock()
}

func (p *positions) get(partition int) string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if partition >= len(p.ids) {
		return ""
	}
	return p.ids[partition]
}

// ComparePositions orders two transport positions (Frame.ID) of one partition:
// Redis stream ids "<ms>-<seq>", and MemoryHub's, which have the same form. It
// returns -1, 0 or +1; an unparsable part counts as 0.
func ComparePositions(a, b string) int {
	am, as := splitPosition(a)
	bm, bs := splitPosition(b)
	if c := cmp.Compare(am, bm); c != 0 {
		return c
	}
	return cmp.Compare(as, bs)
}

func splitPosition(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}
