package bus

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// outEntry is an accepted message waiting for the broker.
type outEntry struct {
	id        uint64 // position in outbox order, from 1
	seq       uint64
	partition int
	data      []byte // the encoded envelope, immutable once pushed
	accepted  time.Time
	// earlier marks an entry of an earlier process of this node (disk outbox):
	// its seq belongs to that process's instance.
	earlier bool
}

// outbox is the bounded FIFO between Publish and the sender goroutine. Publish
// assigns sequence numbers under its lock, so the outbox order is the sequence
// order of every partition. An entry leaves only when the broker acknowledged it
// or a bound dropped it.
type outbox struct {
	mu      sync.Mutex
	ring    []outEntry
	head, n int
	bytes   int64
	nextID  uint64
	seqs    []uint64 // last seq per partition
	// firstAt is, per partition, when this process accepted its message of
	// seq 1 there (Unix nanoseconds; 0: none yet): probes on inbox
	// partitions carry it (appendProbes).
	firstAt []int64
	// resolved is, per partition, the last seq that left the outbox: acknowledged
	// by the broker or dropped. Entries of a partition leave in seq order, so every
	// seq up to it is resolved.
	resolved      []uint64
	closed        bool
	failedThrough uint64 // highest id of a batch whose publish failed
	waiters       []*syncWaiter

	// disk, when set (OutboxConfig.Dir), holds a copy of every entry; left
	// counts the entries that left since the last advance; diskErr is the first
	// failure to record that (it only makes the next start publish again what
	// receivers drop as duplicates).
	disk    *diskLog
	left    int
	diskErr error
	// writtenThrough is the highest id the broker has in its log but has not
	// replicated yet (replication.go): batch skips those entries, max age
	// spares them.
	writtenThrough uint64
	// forgets counts forgetWritten calls.
	forgets uint64

	// keep gets the entries the broker acknowledged (nil: none kept).
	keep *retained

	// c gets the accepted, published and dropped counts under mu, so that a
	// quiet bus always has Accepted == Published + Dropped + outbox length.
	c *counters

	maxMessages int           // -1: none
	maxBytes    int64         // -1: none
	maxAge      time.Duration // -1: none
	dropOldest  bool
}

func newOutbox(c OutboxConfig, partitions int, counts *counters) *outbox {
	return &outbox{
		c:           counts,
		seqs:        make([]uint64, partitions),
		firstAt:     make([]int64, partitions),
		resolved:    make([]uint64, partitions),
		nextID:      1,
		maxMessages: c.MaxMessages,
		maxBytes:    c.MaxBytes,
		maxAge:      c.MaxAge,
		dropOldest:  c.Overflow == DropOldest,
	}
}

// dropAcc accumulates the entries of one drop.
type dropAcc struct {
	count  int
	bytes  int64
	oldest time.Time
	seqs   []SeqRange
}

func (d *dropAcc) add(e *outEntry) {
	if d.count == 0 {
		d.oldest = e.accepted
	}
	d.count++
	d.bytes += int64(len(e.data))
	// Drops take a prefix of the outbox, so the dropped seqs of one partition are
	// contiguous.
	for i := range d.seqs {
		if d.seqs[i].Partition == e.partition {
			d.seqs[i].Last = e.seq
			return
		}
	}
	d.seqs = append(d.seqs, SeqRange{Partition: e.partition, First: e.seq, Last: e.seq})
}

func (o *outbox) front() *outEntry { return &o.ring[o.head] }

func (o *outbox) at(i int) *outEntry { return &o.ring[(o.head+i)%len(o.ring)] }

func (o *outbox) pushLocked(e outEntry) {
	if o.n == len(o.ring) {
		o.resizeLocked(max(64, 2*len(o.ring)))
	}
	o.ring[(o.head+o.n)%len(o.ring)] = e
	o.n++
	o.bytes += int64(len(e.data))
}

func (o *outbox) popLocked() outEntry {
	e := o.ring[o.head]
	o.ring[o.head] = outEntry{}
	o.head = (o.head + 1) % len(o.ring)
	o.n--
	o.bytes -= int64(len(e.data))
	o.left++
	if !e.earlier {
		o.resolved[e.partition] = e.seq
	}
	// Give memory back after an outage.
	if len(o.ring) > 1024 && o.n < len(o.ring)/4 {
		o.resizeLocked(len(o.ring) / 2)
	}
	return e
}

func (o *outbox) resizeLocked(size int) {
	ring := make([]outEntry, size)
	for i := range o.n {
		ring[i] = *o.at(i)
	}
	o.ring, o.head = ring, 0
}

// advanceDiskLocked tells the disk outbox how many entries left.
func (o *outbox) advanceDiskLocked() {
	if o.disk == nil || o.left == 0 {
		o.left = 0
		return
	}
	if err := o.disk.advance(o.left); err != nil && o.diskErr == nil {
		o.diskErr = err
	}
	o.left = 0
}

// expireLocked drops the entries older than maxAge into acc.
func (o *outbox) expireLocked(now time.Time, acc *dropAcc) {
	if o.maxAge < 0 {
		return
	}
	for o.n > 0 && o.front().id > o.writtenThrough && now.Sub(o.front().accepted) >= o.maxAge {
		e := o.popLocked()
		acc.add(&e)
		o.noteDropLocked(&e)
		o.c.droppedMaxAge.Add(1)
	}
	o.advanceDiskLocked()
	o.settleLocked()
}

// addAll accepts encoded data envelopes, each on its partition with its seq
// field at seqAts[i], assigning their sequence numbers (seqs), all or none: it
// returns ErrOutboxFull (or ErrClosed) without accepting any when they do not
// fit together, and an ErrDisk error. It fills expired and overflow with what
// it dropped to make room. With a disk outbox it also returns the position of
// the last one's record there.
func (o *outbox) addAll(partitions []int, datas [][]byte, seqAts []int, seqs []uint64, now time.Time, expired, overflow *dropAcc) (pos uint64, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, ErrClosed
	}
	o.expireLocked(now, expired)
	size := 0
	for _, d := range datas {
		size += len(d)
	}
	for !o.fitsAllLocked(len(datas), size) {
		if !o.dropOldest || o.n == 0 {
			return 0, ErrOutboxFull
		}
		e := o.popLocked()
		overflow.add(&e)
		o.noteDropLocked(&e)
		o.c.droppedOverflow.Add(1)
	}
	o.advanceDiskLocked()
	o.settleLocked()
	for i, partition := range partitions {
		data := datas[i]
		seq := o.seqs[partition] + 1
		binary.BigEndian.PutUint64(data[seqAts[i]:], seq)
		if o.disk != nil {
			if pos, err = o.disk.append(data); err != nil {
				return 0, fmt.Errorf("%w: %w", ErrDisk, err)
			}
		}
		o.seqs[partition] = seq
		if seq == 1 {
			o.firstAt[partition] = now.UnixNano()
		}
		o.pushLocked(outEntry{id: o.nextID, seq: seq, partition: partition, data: data, accepted: now})
		o.nextID++
		o.c.accepted.Add(1)
		seqs[i] = seq
	}
	return pos, nil
}

// fitsAllLocked reports whether n entries of size bytes in all fit within the
// bounds.
func (o *outbox) fitsAllLocked(n, size int) bool {
	return (o.maxMessages < 0 || o.n+n <= o.maxMessages) &&
		(o.maxBytes < 0 || o.bytes+int64(size) <= o.maxBytes)
}

// load puts entries of an earlier process (the disk outbox) at the end of the
// outbox, with their own origin instance and seq, before anything is published.
func (o *outbox) load(recs []loadedRecord) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, r := range recs {
		o.pushLocked(outEntry{id: o.nextID, seq: r.env.Seq, partition: r.env.Partition, data: r.data,
			accepted: time.Unix(0, r.env.Time), earlier: true})
		o.nextID++
	}
}

// batch expires old entries into expired and appends the frames of the oldest
// entries (at most maxFrames and maxBytes, at least one) to frames. It returns the
// id of the last one, how many of them were in a failed publish before, and when
// the next entry expires (zero time when none).
func (o *outbox) batch(now time.Time, frames []Frame, maxFrames, maxBytes int, expired *dropAcc) (_ []Frame, lastID uint64, replays int, nextExpiry time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked(now, expired)
	size := 0
	start := o.writtenLocked()
	for i := start; i < o.n && i-start < maxFrames; i++ {
		e := o.at(i)
		if i > start && size+len(e.data) > maxBytes {
			break
		}
		size += len(e.data)
		frames = append(frames, Frame{Partition: e.partition, Data: e.data})
		lastID = e.id
		if e.id <= o.failedThrough {
			replays++
		}
	}
	if o.n > 0 && o.maxAge >= 0 {
		nextExpiry = o.front().accepted.Add(o.maxAge)
	}
	return frames, lastID, replays, nextExpiry
}

// commit removes the entries up to lastID that are still there (a drop may have
// taken some meanwhile) and appends the time each one waited to waits.
func (o *outbox) commit(lastID uint64, now time.Time, waits []time.Duration) []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for o.n > 0 && o.front().id <= lastID {
		e := o.popLocked()
		waits = append(waits, now.Sub(e.accepted))
		o.keep.add(e.partition, e.data, e.accepted, now)
		n++
	}
	o.c.published.Add(uint64(n))
	o.advanceDiskLocked()
	o.settleLocked()
	return waits
}

// expire drops old entries into acc and returns when the next one expires.
func (o *outbox) expire(now time.Time, acc *dropAcc) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.expireLocked(now, acc)
	if o.n > 0 && o.maxAge >= 0 {
		return o.front().accepted.Add(o.maxAge)
	}
	return time.Time{}
}

func (o *outbox) markFailed(lastID uint64) {
	o.mu.Lock()
	o.failedThrough = max(o.failedThrough, lastID)
	o.mu.Unlock()
}

// lastResolved appends, per partition, the last seq that left the outbox
// (acknowledged by the broker or dropped by a bound) to dst.
func (o *outbox) lastResolved(dst []uint64) []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append(dst, o.resolved...)
}

// first returns when this process accepted its first message on partition
// (Unix nanoseconds), 0 when none yet.
func (o *outbox) first(partition int) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.firstAt[partition]
}

// close stops accepting.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.mu.Unlock()
}

// drain removes every entry into acc.
func (o *outbox) drain(acc *dropAcc) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.n > 0 {
		e := o.popLocked()
		acc.add(&e)
		o.noteDropLocked(&e)
		o.c.droppedClose.Add(1)
	}
	o.settleLocked()
}

// snapshot reports the length, the bytes and the age of the oldest entry.
func (o *outbox) snapshot(now time.Time) (n int, bytes int64, oldest time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n > 0 {
		oldest = now.Sub(o.front().accepted)
	}
	return o.n, o.bytes, oldest
}
