package redisbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// pipeOutcome is the outcome of one pipeline: the replication id of the
// primary it ran on (when asked) and the WAIT outcome (when asked).
type pipeOutcome struct {
	replid string
	err    error // WAIT shortfall (ErrNotReplicated) or WAIT failure
}

// guard is the check that must pass on a connection before a batch is
// written there: the last entry this transport wrote to partition p without
// replicas confirming it (id, data) is in the stream on that server.
type guard struct {
	p    int
	id   string
	data []byte
	cmd  rueidis.Completed // XRANGE <key> <id> <id>
}

// written is the last entry this transport wrote to a stream (key) on a
// Cluster, confirmed by replicas or not: before a redirection is followed,
// the node it names must hold it (redirect).
type written struct {
	key  string
	id   string
	data []byte
}

// run sends cmds and returns their results in order, with, per command, the
// outcome of its pipeline. With ident, INFO replication follows the commands
// on the same connection (the replication id tells which primary took them);
// with wait, WAIT WaitReplicas WaitTimeout follows too; with guards, the
// commands go out only on a connection where the guards pass (otherwise the
// error wraps ErrPrimaryChanged); last are the entries this transport wrote
// last to the streams of cmds (Cluster), checked before a redirection is
// followed (redirect). On a Cluster, WAIT and INFO count for the
// primary they run on, and a pipeline with a key-less command must stay in
// one slot: one pipeline per slot, run in parallel (partitions keep their
// order: one slot each). An error means that the pipelines of some slots may
// not have run.
//
// On a Cluster every pipeline runs on a connection pinned to the node that
// serves its slot in the client's map: a node that no longer serves it (a
// failover, CLUSTER FAILOVER TAKEOVER while it keeps running) answers MOVED
// without writing, and the error wraps ErrPrimaryChanged. The client's own
// redirection would write the batch to the new primary silently, ahead of
// what the old one acknowledged and the new one lacks, and nothing would tell
// the bus to publish that again. A slot that moved with its data (ASK during
// a migration, MOVED after a resharding) is followed here instead (redirect).
func (s *streams) run(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, guards []guard, last []written, wait, ident bool) ([]rueidis.RedisResult, []pipeOutcome, error) {
	out := make([]pipeOutcome, len(cmds))
	cluster := isCluster(c)
	if !wait && !ident && len(guards) == 0 && !cluster {
		return c.DoMulti(ctx, cmds...), out, nil
	}
	if !cluster {
		res, o, err := s.doGroup(ctx, c, cmds, guards, last, wait, ident)
		for i := range out {
			out[i] = o
		}
		return res, out, err
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
	guardsBySlot := map[uint16][]guard{}
	for _, g := range guards {
		guardsBySlot[g.cmd.Slot()] = append(guardsBySlot[g.cmd.Slot()], g)
	}
	if len(order) == 1 { // one slot: no goroutine
		res, o, err := s.doGroup(ctx, c, cmds, guards, last, wait, ident)
		for i := range out {
			out[i] = o
		}
		return res, out, err
	}
	res := make([]rueidis.RedisResult, len(cmds))
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for gi, sl := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idx := bySlot[sl]
			group := make(rueidis.Commands, len(idx))
			for j, k := range idx {
				group[j] = cmds[k]
			}
			r, o, err := s.doGroup(ctx, c, group, guardsBySlot[sl], last, wait, ident)
			if err != nil {
				errs[gi] = err
				return
			}
			for j, k := range idx {
				res[k], out[k] = r[j], o
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return res, out, nil
}

// doGroup sends cmds, then INFO replication (ident) and WAIT (wait), on one
// connection (WAIT is a blocking command, so rueidis runs the whole pipeline
// on a dedicated connection). With guards it first checks them on a
// dedicated connection, and sends the rest there only if they pass.
func (s *streams) doGroup(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, guards []guard, last []written, wait, ident bool) ([]rueidis.RedisResult, pipeOutcome, error) {
	n := len(cmds)
	all := cmds[:n:n] // appends below copy, never write into cmds
	if ident {
		all = append(all, c.B().Info().Section("replication").Build())
	}
	if wait {
		all = append(all, c.B().Wait().Numreplicas(int64(s.opts.WaitReplicas)).Timeout(s.opts.WaitTimeout.Milliseconds()).Build())
	}
	var res, tail []rueidis.RedisResult
	redirected := 0
	switch {
	case len(guards) == 0 && isCluster(c):
		// Pinned to the node of the slot: a redirection is returned, and
		// followed here only where nothing acknowledged can be lost
		// (redirect). The commands are pinned: rueidis recycles a command
		// once answered, and a redirected one is sent again.
		for i := range n {
			all[i] = all[i].Pin()
		}
		err := c.Dedicated(func(dc rueidis.DedicatedClient) error {
			res = dc.DoMulti(ctx, all...)
			var err error
			tail, redirected, err = s.redirect(ctx, c, dc, all, res, n, last, wait, ident)
			return err
		})
		if err != nil {
			return nil, pipeOutcome{}, err
		}
	case len(guards) == 0:
		res = c.DoMulti(ctx, all...)
	default:
		// One connection, so one server, for the check and the writes: a
		// server that holds the unconfirmed entries now keeps them until it
		// stops being a primary, and then refuses the writes (READONLY) or
		// drops the connection.
		err := c.Dedicated(func(dc rueidis.DedicatedClient) error {
			checks := make(rueidis.Commands, len(guards))
			for i, g := range guards {
				checks[i] = g.cmd
			}
			for i, r := range dc.DoMulti(ctx, checks...) {
				entries, err := r.AsXRange()
				if merr := movedErr(err); merr != nil {
					return merr
				}
				if err != nil {
					return s.wrap("xrange", err)
				}
				if g := guards[i]; len(entries) == 0 || entries[0].FieldValues[frameField] != string(g.data) {
					return fmt.Errorf("%w: partition %d: entry %s, written without replicas, is not on the primary serving now", ErrPrimaryChanged, g.p, g.id)
				}
			}
			res = dc.DoMulti(ctx, all...)
			return nil
		})
		if err != nil {
			return nil, pipeOutcome{}, err
		}
	}
	for _, r := range res[:n] {
		if err := movedErr(r.Error()); err != nil {
			return nil, pipeOutcome{}, err
		}
	}
	o := s.outcome(res[n:], wait, ident)
	switch {
	case redirected == n:
		// Every command went to the node the slot was redirected to: the
		// first node wrote none, its INFO and WAIT tell nothing of them.
		o = s.outcome(tail, wait, ident)
	case redirected > 0:
		// Some commands went to the node the slot was redirected to: its
		// WAIT counts them, and the writes are on two primaries.
		to := s.outcome(tail, wait, ident)
		if o.err == nil {
			o.err = to.err
		}
		o.replid += "+" + to.replid // matches no primary: AwaitReplicas reports the change
	}
	return res[:n], o, nil
}

// outcome reads the answers to INFO replication (ident) and WAIT (wait) that
// follow the commands of a pipeline.
func (s *streams) outcome(res []rueidis.RedisResult, wait, ident bool) pipeOutcome {
	var o pipeOutcome
	if ident {
		if info, err := res[0].ToString(); err == nil {
			o.replid = replicationID(info)
		}
	}
	if wait {
		want := s.opts.WaitReplicas
		got, err := res[len(res)-1].AsInt64()
		switch {
		case err != nil:
			o.err = s.wrap("wait", err)
		case got < int64(want):
			o.err = fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, want, s.opts.WaitTimeout)
		}
	}
	return o
}

// redirect follows the Cluster redirections among res, the answers of the
// node pinned for the slot to the first n commands of all (then INFO
// replication with ident, WAIT with wait), where no acknowledged write can be
// lost by doing so:
//
//   - ASK: the slot is being migrated and the key is already on the target
//     (a stream key lives whole on one node). The command was not written,
//     nor any later command of that key in the pipeline (they were all
//     refused), so sending them, each after ASKING, in order, to the target
//     keeps a stream's entries in order; what the source wrote before is in
//     the key it migrated.
//   - MOVED while the pinned node is still a primary (ROLE) and holds no
//     key of the slot (CLUSTER COUNTKEYSINSLOT): the slot was resharded
//     (CLUSTER SETSLOT NODE, after MIGRATE moved its keys with their
//     entries), not failed over, if the new owner holds what this
//     transport wrote last (below). A failover or a takeover turns the old
//     primary into a replica, which may lack what it had acknowledged: then
//     the error wraps ErrPrimaryChanged, and the bus writes again what it
//     may have lost.
//
// Either way the node named by the redirection must hold the entry this
// transport wrote last to each stream of the redirected commands (holdsLast):
// a primary holding no key of the slot does not prove that they moved.
//
// The redirected commands, then INFO and WAIT again, go in one pipeline to
// the node named by the redirection, on a connection of its own; redirect
// writes their answers into res and returns those of INFO and WAIT (nil when
// nothing was redirected) and how many of the n commands it redirected. A
// second redirection, or a node the client does not know, is an error
// wrapping ErrPrimaryChanged.
func (s *streams) redirect(ctx context.Context, c rueidis.Client, dc rueidis.DedicatedClient, all rueidis.Commands, res []rueidis.RedisResult, n int, last []written, wait, ident bool) ([]rueidis.RedisResult, int, error) {
	var redo []int
	var addr, kind string
	var first error
	for i, r := range res[:n] {
		k := redirection(r.Error())
		if k == "" {
			continue
		}
		a := redirectAddr(r.Error())
		if first == nil {
			first, addr, kind = r.Error(), a, k
		}
		if k != kind || a != addr {
			return nil, 0, movedErr(first) // two targets: not a migration
		}
		redo = append(redo, i)
	}
	if first == nil {
		return nil, 0, nil
	}
	if kind == "moved" && !movedWithData(ctx, c, dc, all[redo[0]].Slot()) {
		return nil, 0, movedErr(first)
	}
	node, ok := c.Nodes()[addr]
	if !ok {
		return nil, 0, movedErr(first)
	}
	if err := s.holdsLast(ctx, c, node, all, redo, last, kind == "ask"); err != nil {
		return nil, 0, err
	}
	cmds := make(rueidis.Commands, 0, 2*len(redo)+len(all)-n)
	for _, i := range redo {
		if kind == "ask" {
			cmds = append(cmds, c.B().Asking().Build())
		}
		cmds = append(cmds, all[i])
	}
	if ident {
		cmds = append(cmds, c.B().Info().Section("replication").Build())
	}
	if wait {
		cmds = append(cmds, c.B().Wait().Numreplicas(int64(s.opts.WaitReplicas)).Timeout(s.opts.WaitTimeout.Milliseconds()).Build())
	}
	got := node.DoMulti(ctx, cmds...)
	j := 0
	for _, i := range redo {
		if kind == "ask" {
			j++ // OK of ASKING
		}
		if err := movedErr(got[j].Error()); err != nil {
			return nil, 0, err
		}
		res[i] = got[j]
		j++
	}
	if kind == "ask" {
		s.st.askFollowed.Add(uint64(len(redo)))
	} else {
		s.st.movedFollowed.Add(uint64(len(redo)))
	}
	return got[j:], len(redo), nil
}

// holdsLast checks that node, named by a redirection of the commands of all
// at redo, holds the last entry this transport wrote (last) to each stream
// those commands write (after ASKING when ask). A node that still serves as
// a primary without a key of the slot does not prove that its keys moved: a
// primary that lost the slot to a higher config epoch deletes them, and an
// operator may give a slot away (CLUSTER SETSLOT NODE) halfway through a
// migration. Then the error wraps ErrPrimaryChanged, and the bus writes
// again what the new owner may lack, ahead of the batch.
func (s *streams) holdsLast(ctx context.Context, c rueidis.Client, node rueidis.Client, all rueidis.Commands, redo []int, last []written, ask bool) error {
	var check []written
	for _, i := range redo {
		args := all[i].Commands()
		if len(args) < 2 {
			continue
		}
		for _, w := range last {
			if w.key == args[1] && !slices.ContainsFunc(check, func(x written) bool { return x.key == w.key }) {
				check = append(check, w)
			}
		}
	}
	if len(check) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, 0, 2*len(check))
	for _, w := range check {
		if ask {
			cmds = append(cmds, c.B().Asking().Build())
		}
		cmds = append(cmds, c.B().Xrange().Key(w.key).Start(w.id).End(w.id).Build())
	}
	got := node.DoMulti(ctx, cmds...)
	j := 0
	for _, w := range check {
		if ask {
			j++ // OK of ASKING
		}
		entries, err := got[j].AsXRange()
		j++
		if merr := movedErr(err); merr != nil {
			return merr
		}
		if err != nil {
			return s.wrap("xrange", err)
		}
		if len(entries) == 0 || entries[0].FieldValues[frameField] != string(w.data) {
			return fmt.Errorf("%w: %s: entry %s, written last by this node, is not on the node the slot was redirected to", ErrPrimaryChanged, w.key, w.id)
		}
	}
	return nil
}

// movedWithData reports whether the node of dc, which answered MOVED for
// slot, is still a primary (ROLE) and holds no key of the slot (CLUSTER
// COUNTKEYSINSLOT): the slot was resharded with its data, not failed over.
func movedWithData(ctx context.Context, c rueidis.Client, dc rueidis.DedicatedClient, slot uint16) bool {
	res := dc.DoMulti(ctx, c.B().Role().Build(), c.B().ClusterCountkeysinslot().Slot(int64(slot)).Build())
	role, err := res[0].ToArray()
	if err != nil || len(role) == 0 {
		return false
	}
	r, err := role[0].ToString()
	if err != nil || r != "master" {
		return false
	}
	n, err := res[1].AsInt64()
	return err == nil && n == 0
}

// redirection returns "moved" or "ask" for a Cluster redirection, "" for
// anything else.
func redirection(err error) string {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return ""
	}
	if _, ok := re.IsMoved(); ok {
		return "moved"
	}
	if _, ok := re.IsAsk(); ok {
		return "ask"
	}
	return ""
}

func redirectAddr(err error) string {
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return ""
	}
	if a, ok := re.IsMoved(); ok {
		return a
	}
	a, _ := re.IsAsk()
	return a
}

// movedErr returns an error wrapping ErrPrimaryChanged when err is a Cluster
// redirection (MOVED, ASK): the node asked no longer serves the slot.
func movedErr(err error) error {
	if err == nil {
		return nil
	}
	var re *rueidis.RedisError
	if !errors.As(err, &re) {
		return nil
	}
	if addr, ok := re.IsMoved(); ok {
		return fmt.Errorf("%w: the slot moved to %s", ErrPrimaryChanged, addr)
	}
	if addr, ok := re.IsAsk(); ok {
		return fmt.Errorf("%w: the slot is moving to %s", ErrPrimaryChanged, addr)
	}
	return nil
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

// pending is what a transport with WaitReplicas knows of the writes of one
// partition that replicas have not confirmed (the bus keeps them in its
// outbox until they are).
type pending struct {
	// replid is the replication id of the primary that took them ("" when
	// none); mixed is set when they went to more than one primary.
	replid string
	mixed  bool
	// lastID and lastData are the stream id and the bytes of the last one.
	lastID   string
	lastData []byte
}

// publishPipeline runs the XADD (and XTRIM) commands of a batch. With
// WaitReplicas it also learns which primary took them: writes that replicas
// have not confirmed (NoWait, or WAIT fell short) are remembered per
// partition with that primary's replication id, so AwaitReplicas can tell
// when they went to a primary that is no longer the one it asks. While a
// partition has such writes, the batch's frames of that partition go out only
// to a server that holds the last of them (a guard); on any other the batch is
// not written and the error wraps ErrPrimaryChanged: after a failover, a
// receiver must not read newer frames of this node on the new primary before
// the ones the old primary took and lost. It returns the commands' results
// and the WAIT outcome, or err when the batch may not have been written.
func (s *streams) publishPipeline(ctx context.Context, c rueidis.Client, frames []bus.Frame, cmds rueidis.Commands, wait bool) (res []rueidis.RedisResult, werr, err error) {
	ident := s.opts.WaitReplicas > 0
	cluster := isCluster(c)
	var guards []guard
	var last []written
	if ident || cluster {
		s.mu.Lock()
		for _, f := range frames {
			if w := s.last[f.Partition]; cluster && w.id != "" && !slices.ContainsFunc(last, func(x written) bool { return x.key == w.key }) {
				last = append(last, w)
			}
			if !ident {
				continue
			}
			pd := &s.pend[f.Partition]
			if f.Probe || pd.lastID == "" || slices.ContainsFunc(guards, func(g guard) bool { return g.p == f.Partition }) {
				continue
			}
			guards = append(guards, guard{p: f.Partition, id: pd.lastID, data: pd.lastData,
				cmd: c.B().Xrange().Key(s.keys[f.Partition]).Start(pd.lastID).End(pd.lastID).Build()})
		}
		s.mu.Unlock()
	}
	res, out, err := s.run(ctx, c, cmds, guards, last, wait, ident)
	if err != nil {
		if errors.Is(err, ErrPrimaryChanged) {
			// The bus writes every unconfirmed frame again, first.
			s.mu.Lock()
			clear(s.pend)
			clear(s.last)
			s.mu.Unlock()
		}
		return nil, nil, err
	}
	var errs []error
	s.mu.Lock()
	if cluster {
		// The last frame of each partition, probes too: the newer the entry
		// checked, the less likely it was trimmed since.
		var seen []int
		for i := len(frames) - 1; i >= 0; i-- {
			f := frames[i]
			if slices.Contains(seen, f.Partition) {
				continue
			}
			if id, err := res[i].ToString(); err == nil {
				seen = append(seen, f.Partition)
				s.last[f.Partition] = written{key: s.keys[f.Partition], id: id, data: bytes.Clone(f.Data)}
			}
		}
	}
	for i, f := range frames {
		o := out[i]
		if o.err != nil && (i == 0 || out[i-1].err != o.err) {
			errs = append(errs, o.err)
		}
		if !ident || f.Probe || res[i].Error() != nil {
			continue
		}
		pd := &s.pend[f.Partition]
		if wait && o.err == nil {
			// Confirmed, with everything written before on that primary.
			*pd = pending{}
			continue
		}
		switch {
		case pd.replid == "":
			pd.replid = o.replid
		case pd.replid != o.replid:
			pd.mixed = true
		}
		if id, err := res[i].ToString(); err == nil {
			pd.lastID, pd.lastData = id, f.Data
		}
	}
	s.mu.Unlock()
	return res, errors.Join(errs...), nil
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
	res, out, err := s.run(ctx, c, cmds, nil, nil, true, true)
	if err != nil {
		return err
	}
	if err := s.checkAll("set", res); err != nil {
		return err
	}
	var changed []string
	var errs []error
	s.mu.Lock()
	for i, p := range partitions {
		o, pd := out[i], &s.pend[p]
		if pd.replid != "" && (pd.mixed || pd.replid != o.replid) {
			changed = append(changed, fmt.Sprintf("partition %d: written on %s, primary now %s", p, pd.replid, o.replid))
			*pd = pending{}
			continue
		}
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		*pd = pending{}
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
