package redisbus

import (
	"context"
	"time"

	"github.com/redis/rueidis"
)

// pendingRead is one read of a reader, sent and perhaps not yet answered: the
// reader sends the next read while it delivers the entries of the last one
// (read-ahead), so a backlog is read and delivered at once instead of in turns.
type pendingRead struct {
	// ids are the positions it reads from, one per partition of the reader.
	ids []string
	// check: the pipeline starts with one streamInfo per partition.
	check bool
	// posIdx and posAt locate the position checks in the replies.
	posIdx []int
	posAt  int
	// started is when it was sent.
	started time.Time
	cancel  context.CancelFunc
	done    chan struct{}
	// res and inTime (no answer missed the block time plus readMargin) are
	// set once done is closed.
	res    []rueidis.RedisResult
	inTime bool
}

// send starts, in its own goroutine, the read of the reader's partitions from
// ids with COUNT rd.count: when check, the streamInfo of every partition first;
// the position checks (Sentinel, Cluster); the XREAD. Outside a Cluster they
// go in one pipeline, so the checks ran on the server that answers the read;
// on a Cluster the XREAD goes after them on its own (doRead), to the node the
// client maps the slot to then: the same server as the checks unless the slot
// changed hands (failover, migration) between the two. The caller must wait
// for done (wait).
func (rd *reader) send(ctx context.Context, ids []string, check bool) *pendingRead {
	pr := &pendingRead{ids: ids, check: check, started: time.Now(), done: make(chan struct{})}
	c, block := rd.c, rd.s.opts.BlockTimeout
	cmds := make(rueidis.Commands, 0, 2*len(ids)+1)
	if check {
		for _, k := range rd.keys {
			cmds = append(cmds, streamInfo(c, k))
		}
	}
	var posChecks rueidis.Commands
	posChecks, pr.posIdx = rd.positionChecks(ids)
	pr.posAt = len(cmds)
	cmds = append(cmds, posChecks...)
	cmds = append(cmds, c.B().Xread().Count(rd.count).Block(block.Milliseconds()).
		Streams().Key(rd.keys...).Id(ids...).Build())

	// The read is cancelled (and its connection closed by rueidis) when no
	// answer came within the block time plus a margin: a connection that died
	// without closing must not hold Subscribe forever. A cancel rather than a
	// deadline keeps Subscribe's own ctx able to stop it at once.
	rctx, cancel := context.WithCancel(ctx)
	pr.cancel = cancel
	go func() {
		defer close(pr.done)
		timer := time.AfterFunc(block+readMargin, cancel)
		pr.res = doRead(rctx, c, cmds)
		pr.inTime = timer.Stop()
		cancel()
	}()
	return pr
}

// wait returns once the read is answered (or cancelled with its ctx).
func (pr *pendingRead) wait() { <-pr.done }

// stop cancels the read and waits for its goroutine.
func (pr *pendingRead) stop() {
	pr.cancel()
	<-pr.done
}

// aheadIDs returns the positions after the entries of a read from ids that
// returned m: the last entry of each partition, or its position when it
// returned none.
func (rd *reader) aheadIDs(ids []string, m map[string][]rueidis.XRangeSlice) []string {
	next := make([]string, len(ids))
	for i, k := range rd.keys {
		next[i] = ids[i]
		if es := m[k]; len(es) > 0 {
			next[i] = es[len(es)-1].ID
		}
	}
	return next
}

// doRead sends a reader's pipeline, whose last command is the blocking XREAD.
// On a Cluster the XREAD always goes on its own with Do, after the rest (if
// any): rueidis (v1.0.79) follows an ASK answered to DoMulti with a blocking
// command, even a pipeline of that command alone, by sending it again with
// ASKING before each command, marks that first ASKING as blocking, then fails
// to tell it from the others and panics while sorting the replies (a slot
// migration would crash the process). Do follows ASK without that fault.
func doRead(ctx context.Context, c rueidis.Client, cmds rueidis.Commands) []rueidis.RedisResult {
	if !isCluster(c) {
		return c.DoMulti(ctx, cmds...)
	}
	last := len(cmds) - 1
	res := make([]rueidis.RedisResult, 0, len(cmds))
	if last > 0 {
		res = append(res, c.DoMulti(ctx, cmds[:last]...)...)
	}
	return append(res, c.Do(ctx, cmds[last]))
}
