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
//
// The scan must read the primary that takes the next writes: a demoted
// primary (Sentinel moved the role while this node was cut off from it)
// still answers reads with what the new primary lacks. Outside Cluster the
// first read therefore goes with ROLE on one connection, and a server that is
// not a primary is an error, so the bus tries again once its client follows
// the new one. On a Cluster, a replica answers a read with MOVED, which the
// client follows to the slot's primary.
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
	checkRole := !isCluster(c)
	for limit > 0 {
		n := min(survivorChunk, limit)
		read := c.B().Xrevrange().Key(s.keys[partition]).End(end).Start("-").Count(int64(n)).Build()
		var res rueidis.RedisResult
		if checkRole {
			rs := c.DoMulti(ctx, c.B().Role().Build(), read)
			if err := primaryRole(rs[0]); err != nil {
				if refusedForGood(err) {
					return -1, nil // not known: everything goes out again
				}
				return -1, s.wrap("role", err)
			}
			res, checkRole = rs[1], false
		} else {
			res = c.Do(ctx, read)
		}
		entries, err := res.AsXRange()
		if err != nil {
			if refusedForGood(err) {
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

// errNotPrimary is returned by FindSurvivor when the server it read is not a
// primary.
var errNotPrimary = errors.New("redisbus: the server read is not a primary (a demoted primary still answering reads)")

// primaryRole returns nil when a ROLE answer says master, errNotPrimary when
// it says otherwise, and the answer's own error.
func primaryRole(r rueidis.RedisResult) error {
	a, err := r.ToArray()
	if err != nil {
		return err
	}
	if len(a) == 0 {
		return fmt.Errorf("redisbus: empty ROLE answer")
	}
	role, err := a[0].ToString()
	if err != nil {
		return err
	}
	if role != "master" {
		return fmt.Errorf("%w: role %s", errNotPrimary, role)
	}
	return nil
}

// refusedForGood reports whether err is Redis refusing a command in a way
// that asking again will not change (an ACL without the command), unlike
// LOADING, TRYAGAIN, CLUSTERDOWN or BUSY.
func refusedForGood(err error) bool {
	var re *rueidis.RedisError
	return errors.As(err, &re) && !re.IsLoading() && !re.IsTryAgain() && !re.IsClusterDown() && !strings.HasPrefix(re.Error(), "BUSY")
}
