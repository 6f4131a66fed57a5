package bus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
)

// errHubDown is returned by every call of a MemoryHub transport while the hub is
// down (MemoryHub.setDown).
var errHubDown = errors.New("bus: memory hub is down")

// errInjected is returned by a publish that MemoryHub.failNextWrites made fail
// after its frames were stored.
var errInjected = errors.New("bus: memory hub: injected failure after write")

// MemoryHub defaults.
const (
	// DefaultMemoryPartitions is the partition count of NewMemoryHub.
	DefaultMemoryPartitions = 4
	// DefaultMemoryMaxLen is the number of frames a MemoryHub keeps per partition.
	DefaultMemoryMaxLen = 100_000
	// memoryDirectQueue bounds the direct frames waiting for one subscription.
	memoryDirectQueue = 4096
	// memoryReadBatch bounds the frames a subscription takes per partition and round.
	memoryReadBatch = 256
)

// MemoryHubConfig configures NewMemoryHubConfig. Zero fields take defaults.
type MemoryHubConfig struct {
	// Partitions of the reliable plane that every node reads (the shared
	// partitions). Default DefaultMemoryPartitions.
	Partitions int
	// Inboxes is the number of inbox partitions after the shared ones (see
	// Inboxer): the transports' Partitions() is Partitions+Inboxes, and a bus
	// over one reads the shared partitions and its own inbox only. Default 0:
	// no inboxes, every node reads every partition.
	Inboxes int
	// MaxLen is the number of frames kept per partition; older frames are trimmed
	// like a Redis stream with MAXLEN (a subscriber behind the trim point resumes at
	// the oldest kept frame and its bus reports the gap). Default DefaultMemoryMaxLen.
	MaxLen int
}

// MemoryHub is an in-process broker: every Transport taken from it is one node of
// the same cluster. It is meant for tests and single-binary use.
//
// The reliable plane keeps an ordered log per partition, so Subscribe on a
// transport resumes where its previous Subscribe stopped, like a Redis stream read
// with XREAD from the last id. The direct plane (Send) is best effort: a frame
// reaches only the subscriptions active when it is sent, and a subscription that
// has 4096 direct frames waiting loses newer ones.
//
// Its fault controls (setDown, lose, failNextWrites, breakSubscriptions) let
// this package's tests reproduce broker failures without a broker; tests of
// other packages wrap the Transport instead (see cluster's brokerSwitch).
type MemoryHub struct {
	mu             sync.Mutex
	partitions     int // shared and inbox partitions
	inboxes        int
	maxLen         int
	down           bool
	failAfterWrite int
	logs           []memoryLog
	subs           map[*memorySub]struct{}
	// changed is closed and replaced whenever a waiting subscription has
	// something to look at: new frames, a fault, a closed transport.
	changed       chan struct{}
	directDropped uint64
}

// memoryLog is one partition: entries[i] has offset first+i.
type memoryLog struct {
	first   uint64
	entries [][]byte
}

func (l *memoryLog) end() uint64 { return l.first + uint64(len(l.entries)) }

// NewMemoryHub returns a hub with DefaultMemoryPartitions partitions.
func NewMemoryHub() *MemoryHub { return NewMemoryHubConfig(MemoryHubConfig{}) }

// NewMemoryHubConfig returns a hub configured by cfg.
func NewMemoryHubConfig(cfg MemoryHubConfig) *MemoryHub {
	if cfg.Partitions <= 0 {
		cfg.Partitions = DefaultMemoryPartitions
	}
	if cfg.MaxLen <= 0 {
		cfg.MaxLen = DefaultMemoryMaxLen
	}
	cfg.Inboxes = max(cfg.Inboxes, 0)
	return &MemoryHub{
		partitions: cfg.Partitions + cfg.Inboxes,
		inboxes:    cfg.Inboxes,
		maxLen:     cfg.MaxLen,
		logs:       make([]memoryLog, cfg.Partitions+cfg.Inboxes),
		subs:       make(map[*memorySub]struct{}),
		changed:    make(chan struct{}),
	}
}

// Transport returns a new node's connection to the hub. Its subscription starts
// at the current end of every partition: frames published from now on are
// delivered by its Subscribe calls, including those published before the first
// Subscribe.
func (h *MemoryHub) Transport() Transport {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := &memoryTransport{hub: h, cursor: make([]uint64, h.partitions)}
	for p := range h.logs {
		t.cursor[p] = h.logs[p].end()
	}
	return t
}

// setDown makes every call of every transport fail with errHubDown while down is
// true, and ends every active Subscribe with errHubDown. The logs are kept (a
// network outage, or a broker restart with persistence).
func (h *MemoryHub) setDown(down bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.down = down
	h.broadcastLocked()
}

// lose forgets every frame of the reliable plane, like a Redis restart without
// persistence. Subscriptions continue with frames published afterwards; the buses
// detect the lost sequences as gaps.
func (h *MemoryHub) lose() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p := range h.logs {
		l := &h.logs[p]
		l.first = l.end()
		l.entries = nil
	}
	h.broadcastLocked()
}

// failNextWrites makes the next n Publish calls store their frames and then return
// an error, as when a connection breaks before the broker's reply arrives: the
// publisher cannot know the outcome and publishes again.
func (h *MemoryHub) failNextWrites(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failAfterWrite = n
}

// breakSubscriptions makes every active Subscribe call silently dead: it delivers
// nothing more and does not return until its ctx is done, like a subscription on a
// half-open TCP connection or on a Redis that switched roles. New Subscribe calls
// work normally.
func (h *MemoryHub) breakSubscriptions() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.broken = true
	}
	h.broadcastLocked()
}

// droppedDirect reports how many direct frames were dropped because a
// subscription's queue was full.
func (h *MemoryHub) droppedDirect() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.directDropped
}

// kept reports the number of frames the hub keeps in partition p.
func (h *MemoryHub) kept(p int) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p < 0 || p >= len(h.logs) {
		return 0
	}
	return len(h.logs[p].entries)
}

func (h *MemoryHub) broadcastLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// memoryTransport is one node's connection to a MemoryHub.
type memoryTransport struct {
	hub *MemoryHub
	// cursor, reads and closed are guarded by hub.mu.
	cursor []uint64
	// reads are the partitions Subscribe reads (ReadPartitions); nil: all.
	reads  []int
	closed bool
}

var (
	_ Transport      = (*memoryTransport)(nil)
	_ SurvivorFinder = (*memoryTransport)(nil)
	_ Inboxer        = (*memoryTransport)(nil)
)

// Inboxes implements Inboxer: MemoryHubConfig.Inboxes.
func (t *memoryTransport) Inboxes() int { return t.hub.inboxes }

// ReadPartitions implements Inboxer: Subscribe reads only parts from now on
// (out-of-range partitions are ignored).
func (t *memoryTransport) ReadPartitions(parts []int) {
	h := t.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	t.reads = make([]int, 0, len(parts))
	for _, p := range parts {
		if p >= 0 && p < h.partitions {
			t.reads = append(t.reads, p)
		}
	}
}

// readsLocked returns the partitions Subscribe reads.
func (t *memoryTransport) readsLocked() []int {
	if t.reads != nil {
		return t.reads
	}
	all := make([]int, t.hub.partitions)
	for p := range all {
		all[p] = p
	}
	t.reads = all
	return all
}

// memorySub is an active Subscribe call; its fields are guarded by hub.mu.
type memorySub struct {
	t      *memoryTransport
	nodeID string
	direct [][]byte
	broken bool
}

func (t *memoryTransport) Partitions() int { return t.hub.partitions }

// checkLocked reports why the transport cannot be used now.
func (t *memoryTransport) checkLocked() error {
	if t.closed {
		return fmt.Errorf("bus: memory transport: %w", ErrClosed)
	}
	if t.hub.down {
		return errHubDown
	}
	return nil
}

func (t *memoryTransport) Publish(ctx context.Context, frames []Frame) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h := t.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := t.checkLocked(); err != nil {
		return err
	}
	for _, f := range frames {
		if f.Partition < 0 || f.Partition >= h.partitions {
			return fmt.Errorf("bus: memory transport: partition %d out of range [0, %d)", f.Partition, h.partitions)
		}
	}
	for _, f := range frames {
		l := &h.logs[f.Partition]
		l.entries = append(l.entries, append([]byte(nil), f.Data...))
		// Trim in chunks (like MAXLEN ~) so that trimming stays amortized O(1).
		if over := len(l.entries) - h.maxLen; over > h.maxLen/4 {
			l.entries = append([][]byte(nil), l.entries[over:]...)
			l.first += uint64(over)
		}
	}
	h.broadcastLocked()
	if h.failAfterWrite > 0 {
		h.failAfterWrite--
		return errInjected
	}
	return nil
}

// FindSurvivor implements SurvivorFinder: it reads partition's log backwards
// from its end (passing over the holes a loss left).
func (t *memoryTransport) FindSurvivor(ctx context.Context, partition, limit int, match func(data []byte) int) (int, error) {
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	h := t.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := t.checkLocked(); err != nil {
		return -1, err
	}
	if partition < 0 || partition >= h.partitions {
		return -1, fmt.Errorf("bus: memory transport: partition %d out of range [0, %d)", partition, h.partitions)
	}
	entries := h.logs[partition].entries
	for i := len(entries) - 1; i >= 0 && limit > 0; i-- {
		if entries[i] == nil {
			continue
		}
		limit--
		switch j := match(entries[i]); {
		case j >= 0:
			return j, nil
		case j == -2:
			return -1, nil
		}
	}
	return -1, nil
}

func (t *memoryTransport) Send(ctx context.Context, to string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	h := t.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := t.checkLocked(); err != nil {
		return err
	}
	for s := range h.subs {
		if s.broken || (to != "" && s.nodeID != to) {
			continue
		}
		if len(s.direct) >= memoryDirectQueue {
			h.directDropped++
			continue
		}
		s.direct = append(s.direct, append([]byte(nil), data...))
	}
	h.broadcastLocked()
	return nil
}

func (t *memoryTransport) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t.hub.mu.Lock()
	defer t.hub.mu.Unlock()
	return t.checkLocked()
}

func (t *memoryTransport) Close() error {
	t.hub.mu.Lock()
	defer t.hub.mu.Unlock()
	if !t.closed {
		t.closed = true
		t.hub.broadcastLocked()
	}
	return nil
}

// memoryID is the Frame.ID of the frame at offset of a partition: "0-<offset+1>",
// which increases like a Redis stream id.
func memoryID(offset uint64) string { return "0-" + strconv.FormatUint(offset+1, 10) }

// memoryRead is a frame taken from a log with the offset to commit once delivered.
type memoryRead struct {
	partition int
	offset    uint64
	data      []byte
}

// Subscribe delivers frames until ctx is done, the hub goes down or the transport
// is closed. One Subscribe call per transport at a time.
func (t *memoryTransport) Subscribe(ctx context.Context, nodeID string, deliver func(Frame)) error {
	h := t.hub
	sub := &memorySub{t: t, nodeID: nodeID}
	h.mu.Lock()
	if err := t.checkLocked(); err != nil {
		h.mu.Unlock()
		return err
	}
	h.subs[sub] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.subs, sub)
		h.mu.Unlock()
	}()

	var reads []memoryRead
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h.mu.Lock()
		if err := t.checkLocked(); err != nil {
			h.mu.Unlock()
			return err
		}
		if sub.broken {
			h.mu.Unlock()
			<-ctx.Done()
			return ctx.Err()
		}
		reads = reads[:0]
		for _, p := range t.readsLocked() {
			l := &h.logs[p]
			if t.cursor[p] < l.first {
				t.cursor[p] = l.first // trimmed or lost: resume at the oldest kept
			}
			start := t.cursor[p] - l.first
			for i := start; i < uint64(len(l.entries)) && i-start < memoryReadBatch; i++ {
				reads = append(reads, memoryRead{partition: p, offset: l.first + i, data: l.entries[i]})
			}
		}
		direct := sub.direct
		sub.direct = nil
		changed := h.changed
		h.mu.Unlock()

		for _, d := range direct {
			deliver(Frame{Partition: -1, Data: d})
		}
		if len(reads) == 0 {
			if len(direct) == 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-changed:
				}
			}
			continue
		}
		delivered := 0
		for _, r := range reads {
			if ctx.Err() != nil {
				break
			}
			if r.data == nil { // a frame the hub lost (tests): passed over
				delivered++
				continue
			}
			// Each subscriber gets its own copy, as it would from a network.
			deliver(Frame{Partition: r.partition, Data: append([]byte(nil), r.data...), ID: memoryID(r.offset)})
			delivered++
		}
		h.mu.Lock()
		for _, r := range reads[:delivered] {
			if t.cursor[r.partition] <= r.offset {
				t.cursor[r.partition] = r.offset + 1
			}
		}
		h.mu.Unlock()
	}
}
