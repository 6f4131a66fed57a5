package redisbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// group is the outcome of one pipeline: the replication id of the primary it
// ran on (when asked) and the WAIT outcome (when asked).
type pipeOutcome struct {
	replid string
	err    error // WAIT shortfall (ErrNotReplicated) or WAIT failure
}

// run sends cmds and returns their results in order, with, per command, the
// outcome of its pipeline. With ident, INFO replication follows the commands
// on the same connection (the replication id tells which primary took them);
// with wait, WAIT WaitReplicas WaitTimeout follows too. On a Cluster, WAIT
// and INFO count for the primary they run on, and a pipeline with a key-less
// command must stay in one slot: one pipeline per slot, run in parallel
// (partitions keep their order: one slot each).
func (s *streams) run(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, wait, ident bool) ([]rueidis.RedisResult, []pipeOutcome) {
	out := make([]pipeOutcome, len(cmds))
	if !wait && !ident {
		return c.DoMulti(ctx, cmds...), out
	}
	if !isCluster(c) {
		res, o := s.doGroup(ctx, c, cmds, wait, ident)
		for i := range out {
			out[i] = o
		}
		return res, out
	}
	bySlot := map[uint16][]int{}
	var order []uint16
	for i, cmd := range cmds {
		sl := cmd.Slot()
		if _, ok := bySlot[sl]; !ok {
			order = append(order, sl)
		}
		bySlot[sl] = append(bySlot[sl], i)
	}
	res := make([]rueidis.RedisResult, len(cmds))
	var wg sync.WaitGroup
	for _, sl := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx := bySlot[sl]
			group := make(rueidis.Commands, len(idx))
			for j, k := range idx {
				group[j] = cmds[k]
			}
			r, o := s.doGroup(ctx, c, group, wait, ident)
			for j, k := range idx {
				res[k], out[k] = r[j], o
			}
		}()
	}
	wg.Wait()
	return res, out
}

// doGroup sends cmds, then INFO replication (ident) and WAIT (wait), on one
// connection (WAIT is a blocking command, so rueidis runs the whole pipeline
// on a dedicated connection).
func (s *streams) doGroup(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, wait, ident bool) ([]rueidis.RedisResult, pipeOutcome) {
	n := len(cmds)
	all := cmds[:n:n] // appends below copy, never write into cmds
	if ident {
		all = append(all, c.B().Info().Section("replication").Build())
	}
	want := s.opts.WaitReplicas
	if wait {
		all = append(all, c.B().Wait().Numreplicas(int64(want)).Timeout(s.opts.WaitTimeout.Milliseconds()).Build())
	}
	res := c.DoMulti(ctx, all...)
	var o pipeOutcome
	if ident {
		if info, err := res[n].ToString(); err == nil {
			o.replid = replicationID(info)
		}
	}
	if wait {
		got, err := res[len(res)-1].AsInt64()
		switch {
		case err != nil:
			o.err = s.wrap("wait", err)
		case got < int64(want):
			o.err = fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, want, s.opts.WaitTimeout)
		}
	}
	return res[:n], o
}

// replicationID returns master_replid from INFO replication ("" when absent).
func replicationID(info string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(line, "master_replid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// publishPipeline runs the XADD (and XTRIM) commands of a batch. With
// WaitReplicas it also learns which primary took them: writes that replicas
// have not confirmed (NoWait, or WAIT fell short) are remembered per
// partition with that primary's replication id, so AwaitReplicas can tell
// when they went to a primary that is no longer the one it asks. It returns
// the commands' results and the WAIT outcome.
func (s *streams) publishPipeline(ctx context.Context, c rueidis.Client, frames []bus.Frame, cmds rueidis.Commands, wait bool) ([]rueidis.RedisResult, error) {
	ident := s.opts.WaitReplicas > 0
	res, out := s.run(ctx, c, cmds, wait, ident)
	var errs []error
	s.mu.Lock()
	for i, f := range frames {
		o := out[i]
		if o.err != nil && (i == 0 || out[i-1].err != o.err) {
			errs = append(errs, o.err)
		}
		if !ident || res[i].Error() != nil {
			continue
		}
		p := f.Partition
		if wait && o.err == nil {
			// Confirmed: the bus keeps nothing unconfirmed on p (it writes
			// without waiting while it does).
			s.pendRepl[p], s.pendMixed[p] = "", false
			continue
		}
		switch {
		case s.pendRepl[p] == "":
			s.pendRepl[p] = o.replid
		case s.pendRepl[p] != o.replid:
			s.pendMixed[p] = true
		}
	}
	s.mu.Unlock()
	return res, errors.Join(errs...)
}

// AwaitReplicas waits until what this transport wrote to partitions is
// acknowledged by WaitReplicas replicas (bus.ReplicaWaiter). WAIT counts the
// writes of the connection it runs on, so it first writes a small marker key
// per partition ("{<prefix>:<p>}:replicated", in the partition's slot): a
// replica that has it has every earlier write of that primary. It returns an
// error wrapping ErrNotReplicated when the replicas are still short after
// WaitTimeout, and ErrPrimaryChanged when the unconfirmed writes went to
// another primary than the one asked now (a failover may have lost them: the
// bus writes them again). Without WaitReplicas it returns nil.
func (s *streams) AwaitReplicas(ctx context.Context, partitions []int) error {
	if s.opts.WaitReplicas <= 0 || len(partitions) == 0 {
		return nil
	}
	c, err := s.client(ctx)
	if err != nil {
		return err
	}
	cmds := make(rueidis.Commands, 0, len(partitions))
	for _, p := range partitions {
		if p < 0 || p >= len(s.keys) {
			return fmt.Errorf("%w: %d of %d", ErrBadPartition, p, len(s.keys))
		}
		cmds = append(cmds, c.B().Set().Key(s.waitKeys[p]).Value("1").Build())
	}
	res, out := s.run(ctx, c, cmds, true, true)
	if err := s.checkAll("set", res); err != nil {
		return err
	}
	var changed []string
	var errs []error
	s.mu.Lock()
	for i, p := range partitions {
		o := out[i]
		if s.pendRepl[p] != "" && (s.pendMixed[p] || s.pendRepl[p] != o.replid) {
			changed = append(changed, fmt.Sprintf("partition %d: written on %s, primary now %s", p, s.pendRepl[p], o.replid))
			s.pendRepl[p], s.pendMixed[p] = "", false
			continue
		}
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		s.pendRepl[p], s.pendMixed[p] = "", false
	}
	s.mu.Unlock()
	if len(changed) > 0 {
		return fmt.Errorf("%w: %s", ErrPrimaryChanged, strings.Join(changed, "; "))
	}
	// One error per pipeline is enough.
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}
