package redisbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// frameField is the stream entry field holding a frame's bytes.
const frameField = "d"

// streams is the Streams transport. Each partition is one stream; the reader
// remembers the id of the last entry it delivered per partition, across
// Subscribe calls, so a rebuilt subscription resumes where the last one stopped.
//
// History is trimmed by time: every XADD carries MINID ~ (the server's time, as
// seen in the id of the previous XADD on that partition, or this node's time
// when that is earlier, minus StreamRetention), so what the outboxes of the nodes may still need stays
// readable whatever the rate. StreamMaxLen is a memory cap on top, enforced by
// XTRIM MAXLEN ~ every thousandth of the cap (Redis takes one trim strategy
// per XADD).
//
// With Options.Inboxes, the inbox partitions follow the shared ones, each a
// stream of its own (InboxKey), and ReadPartitions narrows what this node reads
// to some of the partitions (the shared ones and its own inbox); it writes to
// and reads the history of any.
type streams struct {
	*base
	keys      []string // per partition: its stream
	waitKeys  []string // the per-partition keys AwaitReplicas writes to
	retention int64    // StreamRetention in ms; 0 when off
	maxLen    string   // "" when the cap is off
	// trimEvery is how many entries a partition takes between two XTRIM
	// MAXLEN (a thousandth of the cap, at least 1); untrimmed counts them.
	trimEvery int64
	untrimmed []atomic.Int64
	serverMs  []atomic.Int64
	st        *streamStats

	mu sync.Mutex
	// read are the partitions Subscribe and MarkStart read (ReadPartitions);
	// nil: every partition.
	read []int
	// lastIDs is, per partition, the id of the last entry delivered, or the
	// position reading started from; "" until MarkStart or Subscribe records
	// the start of a partition it reads.
	lastIDs []string
	keyPart map[string]int
	// Per partition: the position of reads that failed with Redis still
	// answering, and how often in a row (see readLoop).
	failID []string
	failN  []int
	failAt []time.Time // when reads at failID started failing
	// readN is, per partition, how many entries the stream had received up to
	// the last one delivered (-1: unknown): more deleted entries than that
	// means entries were trimmed before they were read.
	readN []int64
	// recent is, per partition, a ring of the ids of the last entries
	// delivered (recentIDs of them), kept where a failover can give the
	// reader another history (Sentinel, Cluster): see checkPositions.
	recent    [][]seenEntry
	recentPos []int
	// pend is, per partition, what replicas have not confirmed yet
	// (replication.go); forgot marks the partitions whose unconfirmed writes
	// a primary change made it forget, until AwaitReplicas reported it.
	pend   []pending
	forgot map[int]bool
	// last is, per partition, the last entry this transport wrote on a
	// Cluster (replication.go: holdsLast).
	last []written
}

var (
	_ bus.StartMarker   = (*streams)(nil)
	_ bus.ReplicaWaiter = (*streams)(nil)
	_ bus.Inboxer       = (*streams)(nil)
)

func newStreams(b *base) *streams {
	n := b.opts.Partitions + b.opts.Inboxes
	s := &streams{base: b, keyPart: make(map[string]int, n), serverMs: make([]atomic.Int64, n),
		failID: make([]string, n), failN: make([]int, n), failAt: make([]time.Time, n), st: b.stats,
		pend: make([]pending, n), last: make([]written, n), lastIDs: make([]string, n), readN: make([]int64, n)}
	if b.conn.topology != Standalone {
		s.recent, s.recentPos = make([][]seenEntry, n), make([]int, n)
	}
	for p := range n {
		// A partition's keys share its hash tag: on a Cluster, one slot.
		tag := "{" + b.opts.Prefix + ":" + strconv.Itoa(p) + "}"
		if p >= b.opts.Partitions {
			tag = "{" + b.opts.Prefix + ":in:" + strconv.Itoa(p-b.opts.Partitions) + "}"
		}
		k := tag + ":stream"
		s.keys = append(s.keys, k)
		s.waitKeys = append(s.waitKeys, tag+":replicated")
		s.keyPart[k] = p
		s.readN[p] = -1
	}
	if b.opts.StreamMaxLen > 0 {
		s.maxLen = strconv.FormatInt(b.opts.StreamMaxLen, 10)
		s.trimEvery = max(1, b.opts.StreamMaxLen/1000)
		s.untrimmed = make([]atomic.Int64, n)
	}
	if b.opts.StreamRetention > 0 {
		s.retention = max(1, b.opts.StreamRetention.Milliseconds())
	}
	return s
}

// Publish appends every frame to its partition's stream in one pipeline
// (XADD <key> MINID ~ <server time - retention> * d <bytes>), then trims each
// partition that took a thousandth of the cap since its last trim to its cap
// (XTRIM <key> MAXLEN ~ N), followed by WAIT when
// WaitReplicas is set and a frame does not have NoWait. A WAIT that falls short
// returns an error wrapping ErrNotReplicated (and bus.ErrNotReplicated): every
// frame was written.
func (s *streams) Publish(ctx context.Context, frames []bus.Frame) error {
	if len(frames) == 0 {
		return nil
	}
	wait := false
	for _, f := range frames {
		if f.Partition < 0 || f.Partition >= len(s.keys) {
			return fmt.Errorf("%w: %d of %d", ErrBadPartition, f.Partition, len(s.keys))
		}
		wait = wait || !f.NoWait
	}
	wait = wait && s.opts.WaitReplicas > 0
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, 0, len(frames)+1)
	var touched []int
	for _, f := range frames {
		cmds = append(cmds, s.xadd(c, f))
		// The cap is checked once per trimEvery entries of a partition, not
		// after every batch: an XTRIM per batch was most of Redis' commands
		// at moderate rates, and the cap overshoots by at most a thousandth.
		if s.maxLen != "" && s.untrimmed[f.Partition].Add(1) >= s.trimEvery && !slices.Contains(touched, f.Partition) {
			touched = append(touched, f.Partition)
		}
	}
	for _, p := range touched {
		s.untrimmed[p].Store(0)
		cmds = append(cmds, c.B().Xtrim().Key(s.keys[p]).Maxlen().Almost().Threshold(s.maxLen).Build())
	}
	res, werr, err := s.publishPipeline(ctx, c, frames, cmds, wait)
	if err != nil {
		return err
	}
	if err := s.checkAll("xadd", res); err != nil {
		return err
	}
	for i, f := range frames {
		s.noteServerTime(f.Partition, res[i])
	}
	for i, p := range touched[:len(res)-len(frames)] {
		if n, err := res[len(frames)+i].AsInt64(); err == nil && n > 0 {
			s.st.capTrimmed.Add(uint64(n))
			s.st.warn(&s.st.capLog, "redisbus: stream trimmed by its length cap (StreamMaxLen) before the retention time: readers behind lose entries",
				"partition", p, "trimmed", n, "max_len", s.opts.StreamMaxLen, "retention", s.opts.StreamRetention)
		}
	}
	return werr
}

// noteServerTime records the time part of the id an XADD returned: the
// server's clock, which the next XADD's MINID is computed from.
func (s *streams) noteServerTime(p int, r rueidis.RedisResult) {
	id, err := r.ToString()
	if err != nil {
		return
	}
	if ms, ok := idMillis(id); ok {
		s.serverMs[p].Store(ms)
	}
}

// idMillis returns the milliseconds part of a stream id "<ms>-<seq>".
func idMillis(id string) (int64, bool) {
	ms, seq, ok := strings.Cut(id, "-")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(ms, 10, 64)
	if err != nil || v < 0 {
		return 0, false
	}
	if _, err := strconv.ParseUint(seq, 10, 64); err != nil {
		return 0, false
	}
	return v, true
}

func (s *streams) xadd(c rueidis.Client, f bus.Frame) rueidis.Completed {
	k := c.B().Xadd().Key(s.keys[f.Partition])
	data := rueidis.BinaryString(f.Data)
	// The server's time as of the last XADD, but never past this node's
	// clock: a Redis restarted without its data (or with its clock behind)
	// numbers new entries below the ids seen last, and a threshold taken from
	// those would trim the entries this XADD adds.
	now := min(s.serverMs[f.Partition].Load(), time.Now().UnixMilli())
	if s.retention > 0 && now > s.retention {
		minID := strconv.FormatInt(now-s.retention, 10) + "-0"
		return k.Minid().Almost().Threshold(minID).Id("*").FieldValue().FieldValue(frameField, data).Build()
	}
	return k.Id("*").FieldValue().FieldValue(frameField, data).Build()
}

func (s *streams) checkAll(op string, res []rueidis.RedisResult) error {
	for _, r := range res {
		if err := r.Error(); err != nil {
			return s.wrap(op, err)
		}
	}
	return nil
}

// Inboxes is the number of inbox partitions, the last ones of Partitions()
// (Options.Inboxes; 0: none).
func (s *streams) Inboxes() int { return s.opts.Inboxes }

// ReadPartitions restricts what Subscribe and MarkStart read to the
// partitions parts (the bus passes the shared partitions and this node's
// inbox, sorted and distinct); partitions out of range are left out. nil
// restores reading every partition; an empty list reads none (Subscribe then
// listens to the direct plane only). Publish, ReadHistory, FindSurvivor and
// AwaitReplicas still take any partition. It takes effect at the next
// Subscribe: the bus calls it before MarkStart. A partition it adds after
// the start is read from its last entry at that next Subscribe or MarkStart;
// one it removes keeps its position, resumed if it is read again.
func (s *streams) ReadPartitions(parts []int) {
	var read []int
	if parts != nil {
		read = make([]int, 0, len(parts))
		for _, p := range parts {
			if p >= 0 && p < len(s.keys) {
				read = append(read, p)
			}
		}
		slices.Sort(read)
		read = slices.Compact(read)
	}
	s.mu.Lock()
	s.read = read
	s.mu.Unlock()
}

// readParts returns the partitions Subscribe and MarkStart read.
func (s *streams) readParts() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.read != nil {
		return slices.Clone(s.read)
	}
	all := make([]int, len(s.keys))
	for p := range all {
		all[p] = p
	}
	return all
}

// Subscribe reads the partitions it reads (every partition, or those of
// ReadPartitions) with XREAD BLOCK from the last id delivered, and listens to
// the direct plane, until ctx ends or a read fails.
func (s *streams) Subscribe(ctx context.Context, nodeID string, deliver func(bus.Frame)) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	parts := s.readParts()
	if err := s.recordStart(ctx, c, parts); err != nil {
		return err
	}
	deliver = serial(deliver)
	cluster := isCluster(c)
	g := s.subscribeGroup(ctx)
	s.subscribeDirect(g, c, nodeID, nil, func(m rueidis.PubSubMessage) {
		deliver(bus.Frame{Partition: -1, Data: []byte(m.Message)})
	})
	switch {
	case len(parts) == 0:
		// Nothing to read on the reliable plane: the direct plane only.
	case cluster:
		// XREAD over keys of different slots is refused on a Cluster: one
		// blocking reader per partition.
		for _, p := range parts {
			g.run(func(ctx context.Context) error { return s.readLoop(ctx, c, []int{p}, deliver) })
		}
	default:
		g.run(func(ctx context.Context) error { return s.readLoop(ctx, c, parts, deliver) })
	}
	return g.wait()
}

// MarkStart fixes the position the first Subscribe reads from
// (bus.StartMarker): the bus calls it at New, so that it receives what other
// nodes publish from then on, also before its Receive. A Subscribe before any
// successful MarkStart fixes the start itself. Only the partitions read
// (ReadPartitions) are asked about.
func (s *streams) MarkStart(ctx context.Context) error {
	parts := s.readParts()
	if len(s.unstarted(parts)) == 0 {
		return nil
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	return s.recordStart(ctx, c, parts)
}

// unstarted returns the partitions of parts whose start is not recorded yet.
func (s *streams) unstarted(parts []int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, p := range parts {
		if s.lastIDs[p] == "" {
			out = append(out, p)
		}
	}
	return out
}

// recordStart fixes, the first time MarkStart or Subscribe reads a partition
// of parts, the id it is read from: its last id now (what XREAD "$" would
// mean), or 0-0 for a stream that does not exist yet, with the number of
// entries the stream had received up to it (for the trim check of readLoop).
// Later calls resume from what was delivered. Only the partitions of parts
// without a start are asked about, in one pipeline.
func (s *streams) recordStart(ctx context.Context, c rueidis.Client, parts []int) error {
	todo := s.unstarted(parts)
	if len(todo) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(todo))
	for i, p := range todo {
		cmds[i] = streamInfo(c, s.keys[p])
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(todo))
	read := make([]int64, len(todo))
	for i, r := range res {
		info, err := parseStreamInfo(r)
		var re *rueidis.RedisError
		if errors.As(err, &re) {
			// Scripts refused (ACL): start at the last entry, without the trim
			// check.
			return s.recordStartPlain(ctx, c, todo)
		}
		if err != nil {
			return s.wrap("eval", err)
		}
		ids[i], read[i] = info.lastID, info.added
	}
	s.setStart(todo, ids, read)
	return nil
}

// setStart records the first positions ids of partitions parts, of those
// not recorded already. They count as delivered for finding the entry in
// common after a failover.
func (s *streams) setStart(parts []int, ids []string, read []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range parts {
		if s.lastIDs[p] != "" {
			continue
		}
		s.lastIDs[p], s.readN[p] = ids[i], read[i]
		if s.recent != nil && ids[i] != "0-0" {
			s.remember(p, seenEntry{id: ids[i]}) // its frame is unknown
		}
	}
}

// recordStartPlain is recordStart of partitions parts without scripts:
// XREVRANGE, and no trim check.
func (s *streams) recordStartPlain(ctx context.Context, c rueidis.Client, parts []int) error {
	cmds := make(rueidis.Commands, len(parts))
	for i, p := range parts {
		cmds[i] = c.B().Xrevrange().Key(s.keys[p]).End("+").Start("-").Count(1).Build()
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(parts))
	read := make([]int64, len(parts))
	for i, r := range res {
		entries, err := r.AsXRange()
		if err != nil {
			return s.wrap("xrevrange", err)
		}
		ids[i], read[i] = "0-0", -1
		if len(entries) > 0 {
			ids[i] = entries[0].ID
		}
	}
	s.setStart(parts, ids, read)
	return nil
}

// frameData returns the frame bytes of a stream entry (nil without the field).
func frameData(fvs []rueidis.XRangeFieldValue) []byte {
	for _, fv := range fvs {
		if fv.Field == frameField {
			return []byte(fv.Value)
		}
	}
	return nil
}
