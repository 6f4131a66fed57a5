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
type streams struct {
	*base
	keys      []string
	waitKeys  []string // the per-partition keys AwaitReplicas writes to
	retention int64    // StreamRetention in ms; 0 when off
	maxLen    string   // "" when the cap is off
	// trimEvery is how many entries a partition takes between two XTRIM
	// MAXLEN (a thousandth of the cap, at least 1); untrimmed counts them.
	trimEvery int64
	untrimmed []atomic.Int64
	serverMs  []atomic.Int64
	st        *streamStats

	mu      sync.Mutex
	lastIDs []string // nil until the first Subscribe records the start
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
	// (replication.go).
	pend []pending
	// last is, per partition, the last entry this transport wrote on a
	// Cluster (replication.go: holdsLast).
	last []written
}

var (
	_ bus.StartMarker   = (*streams)(nil)
	_ bus.ReplicaWaiter = (*streams)(nil)
)

func newStreams(b *base) *streams {
	n := b.opts.Partitions
	s := &streams{base: b, keyPart: make(map[string]int, n), serverMs: make([]atomic.Int64, n),
		failID: make([]string, n), failN: make([]int, n), failAt: make([]time.Time, n), st: b.stats,
		pend: make([]pending, n), last: make([]written, n)}
	if b.conn.topology != Standalone {
		s.recent, s.recentPos = make([][]seenEntry, n), make([]int, n)
	}
	for p := range n {
		k := StreamKey(b.opts.Prefix, p)
		s.keys = append(s.keys, k)
		s.waitKeys = append(s.waitKeys, "{"+b.opts.Prefix+":"+strconv.Itoa(p)+"}:replicated")
		s.keyPart[k] = p
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

// Subscribe reads every partition with XREAD BLOCK from the last id delivered,
// and listens to the direct plane, until ctx ends or a read fails.
func (s *streams) Subscribe(ctx context.Context, nodeID string, deliver func(bus.Frame)) error {
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	if err := s.recordStart(ctx, c); err != nil {
		return err
	}
	deliver = serial(deliver)
	cluster := isCluster(c)
	g := s.subscribeGroup(ctx)
	s.subscribeDirect(g, c, nodeID, nil, func(m rueidis.PubSubMessage) {
		deliver(bus.Frame{Partition: -1, Data: []byte(m.Message)})
	})
	if cluster {
		// XREAD over keys of different slots is refused on a Cluster: one
		// blocking reader per partition.
		for p := range s.keys {
			g.run(func(ctx context.Context) error { return s.readLoop(ctx, c, []int{p}, deliver) })
		}
	} else {
		all := make([]int, len(s.keys))
		for p := range all {
			all[p] = p
		}
		g.run(func(ctx context.Context) error { return s.readLoop(ctx, c, all, deliver) })
	}
	return g.wait()
}

// MarkStart fixes the position the first Subscribe reads from
// (bus.StartMarker): the bus calls it at New, so that it receives what other
// nodes publish from then on, also before its Receive. A Subscribe before any
// successful MarkStart fixes the start itself.
func (s *streams) MarkStart(ctx context.Context) error {
	s.mu.Lock()
	started := s.lastIDs != nil
	s.mu.Unlock()
	if started {
		return nil
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	return s.recordStart(ctx, c)
}

// recordStart fixes, on the first MarkStart or Subscribe, the id each
// partition is read from: its last id now (what XREAD "$" would mean), or 0-0
// for a stream that does not exist yet, with the number of entries the stream
// had received up to it (for the trim check of readLoop). Later calls resume
// from what was delivered.
func (s *streams) recordStart(ctx context.Context, c rueidis.Client) error {
	s.mu.Lock()
	started := s.lastIDs != nil
	s.mu.Unlock()
	if started {
		return nil
	}
	cmds := make(rueidis.Commands, len(s.keys))
	for p, k := range s.keys {
		cmds[p] = streamInfo(c, k)
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(s.keys))
	read := make([]int64, len(s.keys))
	for p, r := range res {
		info, err := parseStreamInfo(r)
		var re *rueidis.RedisError
		if errors.As(err, &re) {
			// Scripts refused (ACL): start at the last entry, without the trim
			// check.
			return s.recordStartPlain(ctx, c)
		}
		if err != nil {
			return s.wrap("eval", err)
		}
		ids[p], read[p] = info.lastID, info.added
	}
	s.setStart(ids, read)
	return nil
}

// setStart records the first positions, unless recorded already. They count
// as delivered for finding the entry in common after a failover.
func (s *streams) setStart(ids []string, read []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastIDs != nil {
		return
	}
	s.lastIDs, s.readN = ids, read
	for p, id := range ids {
		if s.recent != nil && id != "0-0" {
			s.remember(p, seenEntry{id: id}) // its frame is unknown
		}
	}
}

// recordStartPlain is recordStart without scripts: XREVRANGE, and no trim
// check.
func (s *streams) recordStartPlain(ctx context.Context, c rueidis.Client) error {
	cmds := make(rueidis.Commands, len(s.keys))
	for p, k := range s.keys {
		cmds[p] = c.B().Xrevrange().Key(k).End("+").Start("-").Count(1).Build()
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(s.keys))
	read := make([]int64, len(s.keys))
	for p, r := range res {
		entries, err := r.AsXRange()
		if err != nil {
			return s.wrap("xrevrange", err)
		}
		ids[p], read[p] = "0-0", -1
		if len(entries) > 0 {
			ids[p] = entries[0].ID
		}
	}
	s.setStart(ids, read)
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
