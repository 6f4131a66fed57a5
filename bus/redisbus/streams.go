package redisbus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// frameField is the stream entry field holding a frame's bytes.
const frameField = "d"

// streams is the Streams transport. Each partition is one stream; the reader
// remembers the id of the last entry it delivered per partition, across
// Subscribe calls, so a rebuilt subscription resumes where the last one stopped.
type streams struct {
	*base
	keys   []string
	maxLen string // "" when trimming is off

	mu      sync.Mutex
	lastIDs []string // nil until the first Subscribe records the start
	keyPart map[string]int
}

var _ bus.StartMarker = (*streams)(nil)

func newStreams(b *base) *streams {
	s := &streams{base: b, keyPart: make(map[string]int, b.opts.Partitions)}
	for p := range b.opts.Partitions {
		k := StreamKey(b.opts.Prefix, p)
		s.keys = append(s.keys, k)
		s.keyPart[k] = p
	}
	if b.opts.StreamMaxLen > 0 {
		s.maxLen = strconv.FormatInt(b.opts.StreamMaxLen, 10)
	}
	return s
}

// Publish appends every frame to its partition's stream in one pipeline
// (XADD <key> MAXLEN ~ N * d <bytes>), followed by WAIT when WaitReplicas is set.
func (s *streams) Publish(ctx context.Context, frames []bus.Frame) error {
	if len(frames) == 0 {
		return nil
	}
	for _, f := range frames {
		if f.Partition < 0 || f.Partition >= len(s.keys) {
			return fmt.Errorf("%w: %d of %d", ErrBadPartition, f.Partition, len(s.keys))
		}
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, 0, len(frames)+1)
	for _, f := range frames {
		cmds = append(cmds, s.xadd(c, f))
	}
	if s.opts.WaitReplicas <= 0 {
		return s.checkAll("xadd", c.DoMulti(ctx, cmds...))
	}
	if !isCluster(c) {
		return s.doWithWait(ctx, c, cmds)
	}
	// On a Cluster, WAIT counts the replicas of the primary it runs on, and a
	// pipeline with a key-less command must stay in one slot: one pipeline per
	// slot, run in parallel (partitions keep their order: one slot each).
	bySlot := map[uint16]rueidis.Commands{}
	var order []uint16
	for _, cmd := range cmds {
		sl := cmd.Slot()
		if _, ok := bySlot[sl]; !ok {
			order = append(order, sl)
		}
		bySlot[sl] = append(bySlot[sl], cmd)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, sl := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.doWithWait(ctx, c, bySlot[sl])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *streams) xadd(c rueidis.Client, f bus.Frame) rueidis.Completed {
	k := c.B().Xadd().Key(s.keys[f.Partition])
	data := rueidis.BinaryString(f.Data)
	if s.maxLen != "" {
		return k.Maxlen().Almost().Threshold(s.maxLen).Id("*").FieldValue().FieldValue(frameField, data).Build()
	}
	return k.Id("*").FieldValue().FieldValue(frameField, data).Build()
}

// doWithWait sends cmds and WAIT on one connection (WAIT is a blocking command,
// so rueidis runs the whole pipeline on a dedicated connection).
func (s *streams) doWithWait(ctx context.Context, c rueidis.Client, cmds rueidis.Commands) error {
	want := s.opts.WaitReplicas
	cmds = append(cmds, c.B().Wait().Numreplicas(int64(want)).Timeout(s.opts.WaitTimeout.Milliseconds()).Build())
	res := c.DoMulti(ctx, cmds...)
	if err := s.checkAll("xadd", res[:len(res)-1]); err != nil {
		return err
	}
	got, err := res[len(res)-1].AsInt64()
	if err != nil {
		return s.wrap("wait", err)
	}
	if got < int64(want) {
		return fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, want, s.opts.WaitTimeout)
	}
	return nil
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
	g.run(func(ctx context.Context) error {
		return s.receive(ctx, c, cluster, s.directChannels(nodeID), func(m rueidis.PubSubMessage) {
			deliver(bus.Frame{Partition: -1, Data: []byte(m.Message)})
		})
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

// recordStart fixes, on the first MarkStart or Subscribe, the id each partition is read
// from: its newest entry now (what XREAD "$" would mean), or 0-0 for a stream
// that does not exist yet. Later calls resume from what was delivered.
func (s *streams) recordStart(ctx context.Context, c rueidis.Client) error {
	s.mu.Lock()
	started := s.lastIDs != nil
	s.mu.Unlock()
	if started {
		return nil
	}
	cmds := make(rueidis.Commands, len(s.keys))
	for p, k := range s.keys {
		cmds[p] = c.B().Xrevrange().Key(k).End("+").Start("-").Count(1).Build()
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(s.keys))
	for p, r := range res {
		entries, err := r.AsXRange()
		if err != nil {
			return s.wrap("xrevrange", err)
		}
		ids[p] = "0-0"
		if len(entries) > 0 {
			ids[p] = entries[0].ID
		}
	}
	s.mu.Lock()
	if s.lastIDs == nil {
		s.lastIDs = ids
	}
	s.mu.Unlock()
	return nil
}

// readLoop reads partitions parts until ctx ends or a read fails.
func (s *streams) readLoop(ctx context.Context, c rueidis.Client, parts []int, deliver func(bus.Frame)) error {
	block := s.opts.BlockTimeout
	keys := make([]string, len(parts))
	ids := make([]string, len(parts))
	for i, p := range parts {
		keys[i] = s.keys[p]
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		for i, p := range parts {
			ids[i] = s.lastIDs[p]
		}
		s.mu.Unlock()
		cmd := c.B().Xread().Count(s.opts.ReadCount).Block(block.Milliseconds()).
			Streams().Key(keys...).Id(ids...).Build()

		// The read is cancelled (and its connection closed by rueidis) when no
		// answer came within the block time plus a margin: a connection that
		// died without closing must not hold Subscribe forever. A cancel rather
		// than a deadline keeps Subscribe's own ctx able to stop it at once.
		rctx, cancel := context.WithCancel(ctx)
		timer := time.AfterFunc(block+readMargin, cancel)
		res := c.Do(rctx, cmd)
		inTime := timer.Stop()
		cancel()

		m, err := res.AsXReadSlices()
		if rueidis.IsRedisNil(err) {
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !inTime {
				return fmt.Errorf("redisbus: xread: %w: no answer within %v", ErrUnavailable, block+readMargin)
			}
			return s.wrap("xread", err)
		}
		for _, p := range parts {
			for _, e := range m[s.keys[p]] {
				// An entry without the field (written by something else) is
				// delivered empty: the bus counts and logs what it cannot decode.
				deliver(bus.Frame{Partition: p, Data: frameData(e.FieldValues)})
				s.mu.Lock()
				s.lastIDs[p] = e.ID
				s.mu.Unlock()
			}
		}
	}
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
