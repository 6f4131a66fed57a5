package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

const (
	// maxReadAttempts is how many reads in a row must fail at one position,
	// with Redis answering in between (and over SkipUnreadableAfter), before
	// the entry there is skipped.
	maxReadAttempts = 3
	// trimCheckEvery bounds how often a reader that keeps reading asks Redis
	// whether entries after its position were trimmed.
	trimCheckEvery = time.Second
	// pingAfterFailure bounds the check that tells a read Redis refused to
	// complete (the server answers) from a connection failure.
	pingAfterFailure = time.Second
	// readLinger is the least time between the starts of two reads of one
	// reader that got entries without filling its COUNT: entries arriving
	// more often than that are taken in batches (fewer XREADs, fewer
	// wake-ups, and far fewer bytes: every XREAD names every partition and
	// its position) at the price of at most this much latency. A read that
	// waited for its entries longer is followed by the next at once, so
	// sparse traffic gains no latency.
	readLinger = time.Millisecond
	// readAheadMin is the least COUNT filled for the reader to read ahead:
	// reads of fewer entries are the reader at the stream's tail or ramping
	// up its COUNT, where a read ahead saves nothing and only keeps entries
	// read and not yet delivered for longer.
	readAheadMin = 64
	// entryOverhead is added to the payload size of each entry when
	// budgeting a read (id, field name, framing).
	entryOverhead = 64
)

// nextEntryScript returns the id and the value bytes of the first entry after
// ARGV[1], without the entry itself: how the reader skips an entry that cannot
// be read.
const nextEntryScript = `local r = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', 1)
if #r == 0 then return false end
local n = 0
for i = 2, #r[1][2], 2 do n = n + #r[1][2][i] end
return {r[1][1], n}`

// streamInfoScript returns, without the entries XINFO STREAM would send, the
// number of entries the stream ever received (-1 before Redis 7), its length,
// its last id and the id of its first entry ("" when empty); false for a
// stream that does not exist.
const streamInfoScript = `local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return false end
local out = {-1, 0, '0-0', ''}
for i = 1, #info, 2 do
  local k = info[i]
  if k == 'entries-added' then out[1] = info[i+1]
  elseif k == 'length' then out[2] = info[i+1]
  elseif k == 'last-generated-id' then out[3] = info[i+1]
  elseif k == 'first-entry' and type(info[i+1]) == 'table' then out[4] = info[i+1][1] end
end
return out`

// streamInfo is the command of streamInfoScript for key.
func streamInfo(c rueidis.Client, key string) rueidis.Completed {
	return c.B().Eval().Script(streamInfoScript).Numkeys(1).Key(key).Build()
}

type streamState struct {
	added, length int64
	lastID, first string
}

// parseStreamInfo reads the reply of streamInfo: a stream that does not exist
// has received nothing and starts at 0-0.
func parseStreamInfo(r rueidis.RedisResult) (streamState, error) {
	arr, err := r.ToArray()
	if rueidis.IsRedisNil(err) {
		return streamState{lastID: "0-0"}, nil
	}
	if err != nil {
		return streamState{}, err
	}
	if len(arr) != 4 {
		return streamState{}, fmt.Errorf("redisbus: stream info reply of %d elements", len(arr))
	}
	added, err1 := arr[0].AsInt64()
	length, err2 := arr[1].AsInt64()
	id := str(arr[2])
	if err := errors.Join(err1, err2); err != nil || id == "" {
		return streamState{}, fmt.Errorf("redisbus: stream info reply: %w", errors.Join(err, errors.New("no last id")))
	}
	return streamState{added: added, length: length, lastID: id, first: str(arr[3])}, nil
}

// reader is the state of one readLoop: its partitions and its adaptive COUNT.
type reader struct {
	s     *streams
	c     rueidis.Client
	parts []int
	keys  []string
	ids   []string
	count int64
	// size is the largest entry seen lately (decaying), for the byte budget.
	size      int64
	lastCheck time.Time
	checkNext bool
}

// readLoop reads partitions parts until ctx ends or a read fails. Each read
// is bounded by ReadCount entries per partition and, adapting COUNT to the
// entries seen, by ReadBytes. Before a read it may ask Redis (XINFO STREAM, in
// the same pipeline) whether entries after its position were trimmed: on
// resume, and at most every trimCheckEvery while it keeps reading. A read that
// fills its COUNT (of at least readAheadMin) on a partition is followed at once by the next, sent before
// its entries are delivered and handled after: a backlog is read while it is
// delivered, in order, and a failure resumes from the last entry delivered. A position
// whose reads kept failing with Redis answering is read alone, one entry at a
// time, and the entry is skipped after maxReadAttempts.
func (s *streams) readLoop(ctx context.Context, c rueidis.Client, parts []int, deliver func(bus.Frame)) error {
	rd := &reader{s: s, c: c, parts: parts, keys: make([]string, len(parts)), ids: make([]string, len(parts)),
		count: s.opts.ReadCount, checkNext: true}
	if s.opts.ReadBytes > 0 {
		rd.count = 1
	}
	for i, p := range parts {
		rd.keys[i] = s.keys[p]
	}
	if err := rd.recover(ctx, deliver); err != nil {
		return err
	}
	linger := time.NewTimer(readLinger)
	defer linger.Stop()
	// ahead is the next read, sent while the entries of the last one are
	// delivered.
	var ahead *pendingRead
	defer func() {
		if ahead != nil {
			ahead.stop()
		}
	}()
	var started time.Time
	lingering := false
	for {
		pr := ahead
		ahead = nil
		if pr == nil {
			if lingering {
				if d := readLinger - time.Since(started); d > 0 {
					linger.Reset(d)
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-linger.C:
					}
				}
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			ids := make([]string, len(parts))
			s.mu.Lock()
			for i, p := range parts {
				ids[i] = s.lastIDs[p]
			}
			s.mu.Unlock()
			pr = rd.send(ctx, ids, rd.checkNext || time.Since(rd.lastCheck) >= trimCheckEvery)
		}
		pr.wait()
		// Everything before this read was delivered: the positions it read
		// from are the reader's.
		copy(rd.ids, pr.ids)
		started = pr.started
		res := pr.res

		if pr.check {
			rd.lastCheck, rd.checkNext = time.Now(), false
			if rd.checkReset(res[:len(parts)]) {
				rd.checkNext = true
				continue // this read went on from a position past the server's stream
			}
			rd.checkTrim(res[:len(parts)])
		}
		if rewound, err := rd.checkPositions(ctx, pr.posIdx, res[pr.posAt:len(res)-1]); err != nil || rewound {
			if err != nil {
				return err
			}
			rd.checkNext = true
			continue // this read went on from a position the server does not hold
		}
		m, err := res[len(res)-1].AsXReadSlices()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !pr.inTime {
				return fmt.Errorf("redisbus: xread: %w: no answer within %v", ErrUnavailable, s.opts.BlockTimeout+readMargin)
			}
			rd.noteFailure(ctx, parts, rd.ids)
			return s.wrap("xread", err)
		}
		var largest int64
		got := 0
		full := false
		for _, p := range parts {
			es := m[s.keys[p]]
			got += len(es)
			full = full || (int64(len(es)) >= rd.count && rd.count >= readAheadMin)
			for _, e := range es {
				largest = max(largest, int64(len(frameData(e.FieldValues)))+entryOverhead)
			}
		}
		lingering = got > 0 && int64(got) < rd.count
		rd.adapt(largest, got)
		if full {
			// A partition filled its COUNT (of at least readAheadMin): more
			// is likely waiting. The next
			// read goes out now, from the last entry of this one, and is
			// answered while this one is delivered; it is handled (and its
			// checks read) only after, so everything before it was delivered.
			ahead = rd.send(ctx, rd.aheadIDs(pr.ids, m), time.Since(rd.lastCheck) >= trimCheckEvery)
		}
		for _, p := range parts {
			for _, e := range m[s.keys[p]] {
				// An entry without the field (written by something else) is
				// delivered empty: the bus counts and logs what it cannot decode.
				data := frameData(e.FieldValues)
				deliver(bus.Frame{Partition: p, ID: e.ID, Data: data})
				s.mu.Lock()
				s.delivered(p, e.ID, data)
				s.failN[p] = 0
				s.mu.Unlock()
			}
		}
	}
}

// checkPositions reads the replies of positionChecks (res, one per index of
// idx) and rewinds the partitions whose position the server does not hold.
// It reports whether any was rewound.
func (rd *reader) checkPositions(ctx context.Context, idx []int, res []rueidis.RedisResult) (bool, error) {
	rewound := false
	for j, i := range idx {
		if !diverged(res[j], rd.ids[i], rd.s.lastSum(rd.parts[i], rd.ids[i])) {
			continue
		}
		if err := rd.rewind(ctx, rd.parts[i], rd.ids[i]); err != nil {
			return false, err
		}
		rewound = true
	}
	return rewound, nil
}

// adapt sets the COUNT of the next read from the largest entry of the last
// one: within half of ReadBytes for every partition of the read (a reader holds
// two reads at once: the one it delivers and the next, read ahead), at most
// doubling, between 1 and ReadCount.
func (rd *reader) adapt(largest int64, got int) {
	o := &rd.s.opts
	if o.ReadBytes <= 0 || got == 0 {
		return
	}
	rd.size = max(largest, rd.size/2)
	fit := max(1, o.ReadBytes/(2*rd.size*int64(len(rd.parts))))
	rd.count = min(o.ReadCount, fit, 2*rd.count)
}

// checkReset compares, per partition, the stream's last id (read in the same
// pipeline just before the read) with the reader's position. A last id below
// the position means the server's stream is not the one the reader read: Redis
// restarted without its data (or the stream was deleted) and numbers new
// entries from its own clock, below ids taken while its clock was behind, or a
// failover promoted a replica without the reader's last entries. Reading on
// from the position would wait, silently, until the server's clock passes it.
// The reader goes back to the last entry it has in common with the server
// (Sentinel, Cluster: a failover) or to the stream's start; it counts and logs
// the reset, and the bus reports what the lost stream held as a gap of each
// origin's seqs. It reports whether any partition was moved.
func (rd *reader) checkReset(infos []rueidis.RedisResult) bool {
	s := rd.s
	moved := false
	for i, r := range infos {
		info, err := parseStreamInfo(r)
		if err != nil {
			continue // Redis failed: the read reports it
		}
		p := rd.parts[i]
		if !idBefore(info.lastID, rd.ids[i]) {
			continue
		}
		s.mu.Lock()
		if s.lastIDs[p] != rd.ids[i] {
			s.mu.Unlock()
			continue
		}
		to := "0-0"
		if common, ok := s.commonEntryLocked(p, info.lastID); ok {
			to = common
		}
		s.lastIDs[p] = to
		s.readN[p] = -1 // the trim check cannot count on this history
		if to == "0-0" && info.added >= 0 {
			s.readN[p] = 0 // a new stream: its counts start with it
		}
		s.mu.Unlock()
		moved = true
		s.st.resets.Add(1)
		s.st.warn(&s.st.resetLog, "redisbus: the stream's last id is below this node's read position (Redis restarted without its data, the stream was deleted, or a failover lost entries); reading again from the last entry in common, or from the stream's start; the bus reports what was lost as a gap",
			"partition", p, "position", rd.ids[i], "stream_last_id", info.lastID, "from", to, "stream_entries", info.length)
	}
	return moved
}

// commonEntryLocked returns the newest entry the reader delivered on partition
// p whose id is at most last (under s.mu). Only the id is compared: the
// position check that follows (Sentinel, Cluster) goes further back when its
// frame differs. Standalone readers keep no ring: none.
func (s *streams) commonEntryLocked(p int, last string) (string, bool) {
	if p >= len(s.recent) {
		return "", false
	}
	best := ""
	for _, e := range s.recent[p] {
		if e.sum != 0 && !idBefore(last, e.id) && (best == "" || idBefore(best, e.id)) {
			best = e.id
		}
	}
	return best, best != ""
}

// idBefore reports whether stream id a is below stream id b; an id that does
// not parse is below none and above none.
func idBefore(a, b string) bool {
	am, as, ok1 := parseID(a)
	bm, bs, ok2 := parseID(b)
	if !ok1 || !ok2 {
		return false
	}
	return am < bm || (am == bm && as < bs)
}

// parseID splits a stream id "<ms>-<seq>".
func parseID(id string) (ms, seq uint64, ok bool) {
	m, q, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	v, err1 := strconv.ParseUint(m, 10, 64)
	n, err2 := strconv.ParseUint(q, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return v, n, true
}

// checkTrim compares, per partition, the entries the stream had received up
// to the reader's position with the entries deleted from it so far (received
// minus length: trimming removes the oldest), read in the same pipeline just
// before the read. More deleted than read means entries were trimmed before
// this reader read them: it counts and logs how many; the bus reports the
// missing seqs as a gap.
func (rd *reader) checkTrim(infos []rueidis.RedisResult) {
	s := rd.s
	for i, r := range infos {
		info, err := parseStreamInfo(r)
		if err != nil || info.added < 0 {
			continue // Redis failed (the read reports it), or before Redis 7
		}
		p := rd.parts[i]
		s.st.observe(p, info)
		deleted := info.added - info.length
		s.mu.Lock()
		read := s.readN[p]
		lost := deleted - read
		if read >= 0 && lost > 0 && s.lastIDs[p] == rd.ids[i] {
			s.readN[p] = deleted
		} else {
			lost = 0
		}
		s.mu.Unlock()
		if lost <= 0 {
			continue
		}
		s.st.behindTrim.Add(1)
		s.st.trimmedUnread.Add(uint64(lost))
		s.st.warn(&s.st.behindLog, "redisbus: stream entries trimmed before this node read them (reader behind the retention time or the length cap); the bus reports the missing seqs as a gap",
			"partition", p, "entries", lost, "position", rd.ids[i],
			"retention", s.opts.StreamRetention, "max_len", s.opts.StreamMaxLen)
	}
}

// noteFailure records a failed read at positions ids when the server of
// those streams still answers (XLEN of the first, a keyed command that a
// Redis Cluster routes to the same primary): the read itself is what fails
// (an entry larger than the client output buffer limit makes Redis drop the
// connection every time).
func (rd *reader) noteFailure(ctx context.Context, parts []int, ids []string) {
	pctx, cancel := context.WithTimeout(ctx, pingAfterFailure)
	err := rd.c.Do(pctx, rd.c.B().Xlen().Key(rd.s.keys[parts[0]]).Build()).Error()
	cancel()
	if err != nil {
		return // Redis is down or unreachable: not this position's fault
	}
	rd.s.st.readFailures.Add(1)
	s := rd.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, p := range parts {
		if s.failID[p] == ids[i] {
			s.failN[p]++
		} else {
			s.failID[p], s.failN[p], s.failAt[p] = ids[i], 1, time.Now()
		}
	}
}

// recover reads, one entry at a time and one partition at a time, each
// partition whose last reads failed at its current position, and skips the
// entry there once it failed maxReadAttempts times.
func (rd *reader) recover(ctx context.Context, deliver func(bus.Frame)) error {
	s := rd.s
	for _, p := range rd.parts {
		s.mu.Lock()
		id, n, since := s.lastIDs[p], s.failN[p], s.failAt[p]
		if s.failID[p] != id {
			n, s.failN[p] = 0, 0
		}
		s.mu.Unlock()
		if n == 0 {
			continue
		}
		if n >= maxReadAttempts && time.Since(since) >= s.opts.SkipUnreadableAfter {
			if err := rd.skip(ctx, p, id); err != nil {
				return err
			}
			continue
		}
		res := rd.c.Do(ctx, rd.c.B().Xread().Count(1).Streams().Key(s.keys[p]).Id(id).Build())
		m, err := res.AsXReadSlices()
		if err != nil && !rueidis.IsRedisNil(err) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			rd.noteFailure(ctx, []int{p}, []string{id})
			return s.wrap("xread", err)
		}
		for _, e := range m[s.keys[p]] {
			data := frameData(e.FieldValues)
			deliver(bus.Frame{Partition: p, ID: e.ID, Data: data})
			s.mu.Lock()
			s.delivered(p, e.ID, data)
			s.mu.Unlock()
		}
		s.mu.Lock()
		s.failN[p] = 0
		s.mu.Unlock()
	}
	return nil
}

// skip moves partition p past the entry after id without reading it.
func (rd *reader) skip(ctx context.Context, p int, id string) error {
	s := rd.s
	res := rd.c.Do(ctx, rd.c.B().Eval().Script(nextEntryScript).Numkeys(1).Key(s.keys[p]).Arg(id).Build())
	arr, err := res.ToArray()
	if rueidis.IsRedisNil(err) {
		// Nothing after id any more (trimmed): nothing to skip.
		s.mu.Lock()
		s.failN[p] = 0
		s.mu.Unlock()
		return nil
	}
	if err != nil || len(arr) != 2 {
		return s.wrap("eval", errors.Join(err, fmt.Errorf("%w: next entry reply %v", ErrUnavailable, arr)))
	}
	next := str(arr[0])
	size, err := arr[1].AsInt64()
	if next == "" || err != nil {
		return s.wrap("eval", fmt.Errorf("%w: next entry reply %v", ErrUnavailable, arr))
	}
	s.mu.Lock()
	if s.lastIDs[p] == id {
		s.delivered(p, next, nil)
	}
	s.failN[p] = 0
	s.mu.Unlock()
	s.st.skipped.Add(1)
	s.st.warn(&s.st.skipLog, "redisbus: skipped a stream entry that could not be read (every read failed while Redis kept answering; is it larger than client-output-buffer-limit normal?); the bus reports its seq as a gap",
		"partition", p, "entry", next, "bytes", size, "attempts", maxReadAttempts)
	return nil
}

// delivered moves partition p past entry id, whose frame is data (nil:
// skipped unread), under s.mu.
func (s *streams) delivered(p int, id string, data []byte) {
	s.lastIDs[p] = id
	if s.readN[p] >= 0 {
		s.readN[p]++
	}
	if s.recent != nil {
		s.remember(p, seenEntry{id: id, sum: entrySum(data)})
	}
}

// seenEntry is an entry a reader delivered: its id and a checksum of its
// frame (0: unknown). Two primaries can give one id to different entries
// (both take the time of one clock), so an entry is known by both.
type seenEntry struct {
	id  string
	sum uint64
}

// entrySum is the FNV-1a checksum of a frame, never 0 (0 means unknown).
func entrySum(data []byte) uint64 {
	if data == nil {
		return 0
	}
	const offset64, prime64 = 14695981039346656037, 1099511628211
	h := uint64(offset64)
	for _, b := range data {
		h ^= uint64(b)
		h *= prime64
	}
	return h | 1
}

// remember adds e to partition p's ring of delivered entries (under s.mu).
func (s *streams) remember(p int, e seenEntry) {
	if len(s.recent[p]) < recentIDs {
		s.recent[p] = append(s.recent[p], e)
		return
	}
	s.recent[p][s.recentPos[p]] = e
	s.recentPos[p] = (s.recentPos[p] + 1) % recentIDs
}

// recentIDs is how many ids of delivered entries a reader keeps per
// partition to find, after a failover, the last entry it has in common with
// the server.
const recentIDs = 1024

// positionChecks returns, per partition of the read (nil where it needs
// none), the command that tells whether the server holds the entry at the
// reader's position: XREVRANGE <key> <id> - COUNT 1. After a failover the
// reader may be on a primary whose history differs from the one it read:
// the promoted replica lacks what the old primary took last, and an old
// primary that served again before Sentinel demoted it has entries that
// the new one lacks. Reading on from an id the server does not hold would
// skip the server's own entries below that id.
// It returns the commands and, for each, the index of its partition in the
// read.
func (rd *reader) positionChecks(ids []string) (cmds []rueidis.Completed, idx []int) {
	if rd.s.recent == nil {
		return nil, nil
	}
	for i, id := range ids {
		if id != "0-0" && id != "" {
			cmds = append(cmds, rd.c.B().Xrevrange().Key(rd.keys[i]).End(id).Start("-").Count(1).Build())
			idx = append(idx, i)
		}
	}
	return cmds, idx
}

// diverged reports whether a position check's reply shows that the server
// lacks the entry delivered last (id, with checksum sum; 0: unknown) while it
// holds older ones (none at all: trimmed or never there, nothing to read
// again below id). An entry with that id but another frame counts as
// lacking it: two primaries whose clock is behind their last id both number
// new entries after it alike.
func diverged(r rueidis.RedisResult, id string, sum uint64) bool {
	entries, err := r.AsXRange()
	if err != nil || len(entries) == 0 {
		return false
	}
	e := entries[0]
	return e.ID != id || (sum != 0 && entrySum([]byte(e.FieldValues[frameField])) != sum)
}

// lastSum returns the checksum of the entry partition p delivered last, if it
// is id (0 otherwise: unknown).
func (s *streams) lastSum(p int, id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	ring := s.recent[p]
	if len(ring) == 0 {
		return 0
	}
	last := ring[len(ring)-1]
	if len(ring) == recentIDs {
		last = ring[(s.recentPos[p]+recentIDs-1)%recentIDs]
	}
	if last.id != id {
		return 0
	}
	return last.sum
}

// rewind moves partition p, whose position id the server does not hold,
// back to the newest entry of the server that the reader delivered (the
// last entry in common), so that the server's entries after it are read;
// the bus drops what it had already. It reports an error only when Redis
// could not be asked.
func (rd *reader) rewind(ctx context.Context, p int, id string) error {
	s := rd.s
	entries, err := rd.c.Do(ctx, rd.c.B().Xrevrange().Key(s.keys[p]).End(id).Start("-").Count(recentIDs).Build()).AsXRange()
	if err != nil {
		return s.wrap("xrevrange", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastIDs[p] != id || len(entries) == 0 {
		return nil
	}
	known := make(map[string]uint64, len(s.recent[p]))
	for _, r := range s.recent[p] {
		known[r.id] = r.sum
	}
	to, common := "", false
	for _, e := range entries {
		sum, ok := known[e.ID]
		if ok && (sum == 0 || sum == entrySum([]byte(e.FieldValues[frameField]))) {
			to, common = e.ID, true
			break
		}
	}
	if !common {
		// Nothing in common among the server's last entries below id: read
		// them all again.
		to = prevID(entries[len(entries)-1].ID)
	}
	s.lastIDs[p] = to
	s.readN[p] = -1 // the trim check cannot count on this history
	s.st.rewinds.Add(1)
	s.st.warn(&s.st.rewindLog, "redisbus: the server does not hold the last stream entry this node read (a failover to a primary with another history); reading again from the last entry in common",
		"partition", p, "position", id, "from", to, "in_common", common)
	return nil
}

// prevID returns the stream id just before id ("0-0" for the smallest).
func prevID(id string) string {
	ms, seq, _ := strings.Cut(id, "-")
	m, err1 := strconv.ParseUint(ms, 10, 64)
	n, err2 := strconv.ParseUint(seq, 10, 64)
	switch {
	case err1 != nil || err2 != nil:
		return "0-0"
	case n > 0:
		return ms + "-" + strconv.FormatUint(n-1, 10)
	case m > 0:
		return strconv.FormatUint(m-1, 10) + "-" + strconv.FormatUint(^uint64(0), 10)
	}
	return "0-0"
}

// str is the string of m, or "" when it is not one (nil, another type).
func str(m rueidis.RedisMessage) string {
	v, err := m.ToString()
	if err != nil {
		return ""
	}
	return v
}
