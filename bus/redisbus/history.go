package redisbus

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

var (
	_ bus.HistoryReader = (*streams)(nil)
	_ bus.Positioner    = (*streams)(nil)
	_ bus.KeyValue      = (*base)(nil)
)

// historyPage is the XRANGE COUNT of ReadHistory.
const historyPage = 256

// ReadHistory reads partition p after position after with XRANGE, a page at a
// time (bus.HistoryReader). When after is set and the stream no longer holds it
// (trimmed), it returns an error wrapping bus.ErrHistoryTrimmed before calling
// fn.
func (s *streams) ReadHistory(ctx context.Context, p int, after string, fn func(bus.Frame) bool) error {
	if p < 0 || p >= len(s.keys) {
		return fmt.Errorf("%w: %d of %d", ErrBadPartition, p, len(s.keys))
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	key := s.keys[p]
	if after != "" {
		if err := s.checkKept(ctx, c, key, after); err != nil {
			return err
		}
	}
	start := "-"
	if after != "" {
		start = "(" + after
	}
	for {
		entries, err := retried(ctx, c, func() rueidis.Completed {
			return c.B().Xrange().Key(key).Start(start).End("+").Count(historyPage).Build()
		}).AsXRangeSlices()
		if err != nil {
			if rueidis.IsRedisNil(err) {
				return nil
			}
			return s.wrap("xrange", err)
		}
		for _, e := range entries {
			if !fn(bus.Frame{Partition: p, ID: e.ID, Data: frameData(e.FieldValues)}) {
				return nil
			}
		}
		if len(entries) < historyPage {
			return nil
		}
		start = "(" + entries[len(entries)-1].ID
	}
}

// Position is the id of the last entry of partition p delivered (and whose
// delivery returned), or where reading started (bus.Positioner); "" for a
// partition not read yet.
func (s *streams) Position(p int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p < 0 || p >= len(s.lastIDs) {
		return ""
	}
	return s.lastIDs[p]
}

// checkKept fails with bus.ErrHistoryTrimmed when the stream no longer holds
// the entry after: its oldest entry is newer (trimming removes the oldest, so
// what followed after may be gone too; the check is on the safe side).
// retried runs a command, and runs it again when it failed without an answer
// from Redis: the connections of the client that broke while idle (Redis
// restarted) fail their next commands until the client has noticed. Only for
// commands that may run twice: reads, SET, DEL; and GETDEL, whose second run
// after a first that ran but lost its answer finds nothing, as a failure
// would. It asks up to readTries times, a little later each time, then returns
// the last failure.
func retried(ctx context.Context, c rueidis.Client, cmd func() rueidis.Completed) rueidis.RedisResult {
	pause := 5 * time.Millisecond
	for try := 1; ; try++ {
		r := c.Do(ctx, cmd())
		err := r.Error()
		if err == nil || try == readTries || ctx.Err() != nil || rueidis.IsRedisNil(err) {
			return r
		}
		if _, redisErr := rueidis.IsRedisErr(err); redisErr {
			return r
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return r
		case <-t.C:
		}
		pause *= 4
	}
}

// readTries bounds how often retried asks (waiting 5, 20, 80, 320 ms in between).
const readTries = 5

func (s *streams) checkKept(ctx context.Context, c rueidis.Client, key, after string) error {
	info, err := retried(ctx, c, func() rueidis.Completed { return c.B().XinfoStream().Key(key).Build() }).AsMap()
	if err != nil {
		if strings.Contains(err.Error(), "no such key") {
			if after == "0-0" {
				return nil // it never existed: nothing to miss
			}
			return fmt.Errorf("%w: the stream is gone", bus.ErrHistoryTrimmed)
		}
		return s.wrap("xinfo stream", err)
	}
	oldest := ""
	if m, ok := info["first-entry"]; ok {
		if e, err := m.AsXRangeSlice(); err == nil {
			oldest = e.ID
		}
	}
	if after == "0-0" {
		// From the very start: complete unless something was ever deleted.
		addedM, lengthM := info["entries-added"], info["length"]
		added, err1 := addedM.AsInt64()
		length, err2 := lengthM.AsInt64()
		if err1 == nil && err2 == nil && added > length {
			return fmt.Errorf("%w: %d entries trimmed since the stream began", bus.ErrHistoryTrimmed, added-length)
		}
		return nil
	}
	if oldest == "" { // empty: every entry was trimmed
		if m, ok := info["last-generated-id"]; ok {
			if last, err := m.ToString(); err == nil && bus.ComparePositions(last, after) > 0 {
				return fmt.Errorf("%w: every entry after %s was trimmed", bus.ErrHistoryTrimmed, after)
			}
		}
		return nil
	}
	if bus.ComparePositions(oldest, after) > 0 {
		return fmt.Errorf("%w: the oldest entry kept is %s, after %s", bus.ErrHistoryTrimmed, oldest, after)
	}
	return nil
}

// kvKey is the Redis key of a bus.KeyValue key: "<prefix>:kv:<key>".
func (b *base) kvKey(key string) string { return b.opts.Prefix + ":kv:" + key }

// PutValue stores value under key for ttl (SET PX), bus.KeyValue.
func (b *base) PutValue(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	return b.wrap("set", retried(ctx, c, func() rueidis.Completed {
		return c.B().Set().Key(b.kvKey(key)).Value(rueidis.BinaryString(value)).PxMilliseconds(max(1, ttl.Milliseconds())).Build()
	}).Error())
}

// TakeValue returns and deletes key (GETDEL), bus.KeyValue.
func (b *base) TakeValue(ctx context.Context, key string) ([]byte, error) {
	c, err := b.client(ctx)
	if err != nil {
		return nil, err
	}
	v, err := retried(ctx, c, func() rueidis.Completed { return c.B().Getdel().Key(b.kvKey(key)).Build() }).AsBytes()
	if rueidis.IsRedisNil(err) {
		return nil, nil
	}
	if err != nil {
		return nil, b.wrap("getdel", err)
	}
	return v, nil
}

// ExtendValues sets the time to live of keys (PEXPIRE XX, pipelined),
// bus.KeyValue.
func (b *base) ExtendValues(ctx context.Context, keys []string, ttl time.Duration) error {
	if len(keys) == 0 {
		return nil
	}
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = c.B().Pexpire().Key(b.kvKey(k)).Milliseconds(max(1, ttl.Milliseconds())).Build()
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return b.wrap("pexpire", err)
		}
	}
	return nil
}

// DeleteValue removes key (DEL), bus.KeyValue.
func (b *base) DeleteValue(ctx context.Context, key string) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	return b.wrap("del", retried(ctx, c, func() rueidis.Completed { return c.B().Del().Key(b.kvKey(key)).Build() }).Error())
}
