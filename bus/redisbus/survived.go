package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

var _ bus.SurvivorFinder = (*streams)(nil)

// survivorChunk is how many entries one XREVRANGE of FindSurvivor reads.
const survivorChunk = 1000

// FindSurvivor implements bus.SurvivorFinder: after a break, the bus asks
// which of the messages it wrote last Redis still holds (Redis loses
// acknowledged writes only as a suffix of a stream: an AOF, an RDB snapshot
// and a replica are each a prefix of the writes, per shard, and a partition
// is one key, so one shard). It reads the partition's stream backwards with
// XREVRANGE, in chunks, comparing the frames (not the ids: after a restart
// that lost entries, another node's XADD can get the very id of a lost one).
//
// The scan starts at the time part of the last id an XADD of this transport
// got on the partition before the break, not at the stream's end: what other
// nodes wrote after the restart (their outboxes) lies above it and is not
// read. A Redis whose clock went back numbers new entries below; they are
// read and do not match, which only costs time. A command Redis refuses for
// good (ACL) counts as nothing found; a failure to reach Redis is an error.
func (s *streams) FindSurvivor(ctx context.Context, partition, limit int, match func(data []byte) int) (int, error) {
	if partition < 0 || partition >= len(s.keys) {
		return -1, fmt.Errorf("%w: %d of %d", ErrBadPartition, partition, len(s.keys))
	}
	c, err := s.client(ctx)
	if err != nil {
		return -1, err
	}
	end := "+"
	if ms := s.serverMs[partition].Load(); ms > 0 {
		end = strconv.FormatInt(ms, 10) // <ms>: every id of that millisecond
	}
	for limit > 0 {
		n := min(survivorChunk, limit)
		entries, err := c.Do(ctx, c.B().Xrevrange().Key(s.keys[partition]).End(end).Start("-").Count(int64(n)).Build()).AsXRange()
		if err != nil {
			var re *rueidis.RedisError
			if errors.As(err, &re) && !re.IsLoading() && !re.IsTryAgain() && !re.IsClusterDown() && !strings.HasPrefix(re.Error(), "BUSY") {
				// Refused for good (an ACL without XREVRANGE): not known,
				// so the bus publishes the partition's retained messages
				// again, as before it could ask.
				return -1, nil
			}
			return -1, s.wrap("xrevrange", err)
		}
		for _, e := range entries {
			data, ok := e.FieldValues[frameField]
			if !ok {
				continue
			}
			switch i := match([]byte(data)); {
			case i >= 0:
				return i, nil
			case i == -2:
				return -1, nil
			}
		}
		if len(entries) < n {
			return -1, nil // the start of the stream
		}
		limit -= len(entries)
		end = "(" + entries[len(entries)-1].ID
	}
	return -1, nil
}
