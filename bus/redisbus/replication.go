package redisbus

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
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
	// addr is, on a Cluster, the node the next writes of the pipeline's
	// streams go to ("" when not known).
	addr string
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
// the node it names must hold it (redirect), and so must any other node the
// next write of the stream goes to (doCluster).
type written struct {
	key  string
	id   string
	data []byte
	// addr is the node that took it, where the next writes of the stream go
	// ("" when not known: after an error, or before the node was located).
	addr string
}

// run sends cmds and returns their results in order, with, per command, the
// outcome of its pipeline. With ident, INFO replication follows the commands
// on the same connection (the replication id tells which primary took them);
// with wait, WAIT WaitReplicas WaitTimeout follows too; with guards, the
// commands go out only on a connection where the guards pass (otherwise the
// error wraps ErrPrimaryChanged); last are the entries this transport wrote
// last to the streams of cmds (Cluster), checked before a redirection is
// followed (redirect), and, with pin (Publish), before the commands go to
// another node than the one that took them (doCluster); out tells, per
// command, where the next writes of its streams go. On a Cluster, WAIT and INFO count for the
// primary they run on, and a pipeline with a key-less command must stay in
// one slot: one pipeline per slot, run in parallel (partitions keep their
// order: one slot each). An error means that the pipelines of some slots may
// not have run.
//
// On a Cluster every pipeline runs on a connection pinned to a node: with
// pin, the node that took the last writes of its streams, otherwise (or when
// that is not known) the node that serves its slot in the client's map. A
// node that no longer serves it (a failover, CLUSTER FAILOVER TAKEOVER while
// it keeps running) answers MOVED without writing, and the error wraps
// ErrPrimaryChanged. The client's own redirection would write the batch to
// the new primary silently, ahead of what the old one acknowledged and the
// new one lacks, and nothing would tell the bus to publish that again; so
// would the client's map once it has learnt the new primary, hence the
// pinning to the node of the last writes, or a check of the node that is not
// known to have them (doCluster). A slot that moved with its data (ASK during
// a migration, MOVED after a resharding) is followed here instead (redirect).
func (s *streams) run(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, guards []guard, last []written, pin, wait, ident bool) ([]rueidis.RedisResult, []pipeOutcome, error) {
	out := make([]pipeOutcome, len(cmds))
	cluster := isCluster(c)
	if !wait && !ident && len(guards) == 0 && !cluster {
		return c.DoMulti(ctx, cmds...), out, nil
	}
	if !cluster {
		res, o, err := s.doGroup(ctx, c, cmds, guards, last, pin, wait, ident)
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
		res, o, err := s.doGroup(ctx, c, cmds, guards, last, pin, wait, ident)
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
			r, o, err := s.doGroup(ctx, c, group, guardsBySlot[sl], last, pin, wait, ident)
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
// dedicated connection, and sends the rest there only if they pass. On a
// Cluster it runs doCluster (pin: the node that took the last writes of the
// streams, see run).
func (s *streams) doGroup(ctx context.Context, c rueidis.Client, cmds rueidis.Commands, guards []guard, last []written, pin, wait, ident bool) ([]rueidis.RedisResult, pipeOutcome, error) {
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
	var addr string
	switch {
	case isCluster(c):
		var err error
		res, tail, redirected, addr, err = s.doCluster(ctx, c, all, n, guards, last, pin, wait, ident)
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
			if err := s.checkGuards(dc.DoMulti(ctx, guardCmds(guards)...), guards); err != nil {
				return err
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
	o.addr = addr
	return res[:n], o, nil
}

// doCluster runs all (n commands of one slot, then INFO and WAIT) on one
// connection of a Cluster, after the guards, and returns the answers, those
// of INFO and WAIT on the node of a followed redirection (redirect), how many
// commands were redirected, and the node the next writes of the streams of
// the commands go to ("" when not known).
//
// The connection is pinned: a redirection is returned by the node, and
// followed here only where nothing acknowledged can be lost (redirect). The
// commands are pinned too: rueidis recycles a command once answered, and a
// redirected one is sent again.
//
// With pin (writes of Publish), the pipeline goes to the node that took the
// last write of its streams (last), not to the node the client's slot map
// names now: after a failover (CLUSTER FAILOVER TAKEOVER while the old
// primary keeps running) the old primary answers MOVED without writing, and
// the error wraps ErrPrimaryChanged, even when the client has already learnt
// the new primary from other traffic (a node writing to another node's inbox
// reads nothing on that shard, so nothing of its own breaks). When that node
// is not known (after an error, a stream written once) or no longer in the
// client's map, the pipeline goes to the node of the slot map, which must
// first show (XRANGE <id> <id>) the entry this transport wrote last to each
// of the streams, or the error wraps ErrPrimaryChanged and nothing is
// written: a new primary may lack what the old one acknowledged, and the bus
// must write that again before anything newer (a check answered with a
// redirection leaves it to redirect, which follows one only to a node that
// holds the entry). The same round trip locates
// the node (CLUSTER MYID, CLUSTER SLOTS), so the check costs one round trip
// per stream and change of primary, not one per write.
func (s *streams) doCluster(ctx context.Context, c rueidis.Client, all rueidis.Commands, n int, guards []guard, last []written, pin, wait, ident bool) (res, tail []rueidis.RedisResult, redirected int, addr string, err error) {
	for i := range n {
		all[i] = all[i].Pin()
	}
	var own []written
	var node rueidis.Client
	if pin {
		own = lastOf(all[:n], last)
		if addr = pinnedAddr(own); addr != "" {
			if node = c.Nodes()[addr]; node == nil {
				addr = "" // gone from the cluster: located again below
			}
		}
	}
	locate := len(own) > 0 && node == nil
	checks := guardCmds(guards)
	if locate {
		for _, w := range own {
			checks = append(checks, c.B().Xrange().Key(w.key).Start(w.id).End(w.id).Build())
		}
		checks = append(checks, c.B().ClusterMyid().Build(), c.B().ClusterSlots().Build())
	}
	slot := all[0].Slot()
	movedAway := false
	run := func(dc rueidis.DedicatedClient) error {
		if len(checks) > 0 {
			got := dc.DoMulti(ctx, checks...)
			if err := s.checkGuards(got[:len(guards)], guards); err != nil {
				return err
			}
			if locate {
				got = got[len(guards):]
				for i, w := range own {
					if redirection(got[i].Error()) != "" {
						// The stream is on another node (a migration, a
						// resharding, a stale map): so are the writes,
						// which redirect follows only to a node that
						// holds w.
						movedAway = true
						continue
					}
					if err := s.checkHeld(got[i], w, "is not on the primary serving now"); err != nil {
						return err
					}
				}
				addr = slotPrimary(got[len(own)], got[len(own)+1], slot)
			}
		}
		res = dc.DoMulti(ctx, all...)
		if len(guards) > 0 {
			return nil // a redirection is refused (doGroup)
		}
		var to string
		var err error
		tail, redirected, to, err = s.redirect(ctx, c, dc, all, res, n, last, wait, ident)
		if err == nil && movedAway && redirected == 0 {
			// The slot came to this node between the check and the
			// writes, which it took unchecked.
			return fmt.Errorf("%w: slot %d changed primary while written", ErrPrimaryChanged, slot)
		}
		if to != "" {
			addr = to
		}
		return err
	}
	if node != nil {
		err = node.Dedicated(run)
	} else {
		err = c.Dedicated(run)
	}
	if err != nil {
		return nil, nil, 0, "", err
	}
	return res, tail, redirected, addr, nil
}

// lastOf returns the entries of last written to the streams that the
// commands of cmds write (XADD, XTRIM: the key is their first argument).
func lastOf(cmds rueidis.Commands, last []written) []written {
	var own []written
	for _, cmd := range cmds {
		args := cmd.Commands()
		if len(args) < 2 {
			continue
		}
		for _, w := range last {
			if w.key == args[1] && !slices.ContainsFunc(own, func(x written) bool { return x.key == w.key }) {
				own = append(own, w)
			}
		}
	}
	return own
}

// pinnedAddr returns the node that took the last writes of every stream of
// own, "" when it is not known for one of them, they went to different
// nodes, or own is empty.
func pinnedAddr(own []written) string {
	if len(own) == 0 {
		return ""
	}
	addr := own[0].addr
	for _, w := range own[1:] {
		if w.addr != addr {
			return ""
		}
	}
	return addr
}

// slotPrimary returns the address of the node that answered myid (CLUSTER
// MYID) and slots (CLUSTER SLOTS) when, by its own map, it serves slot; ""
// otherwise, or when the map gives no address (the client then locates it
// again at the next write). The address is built as rueidis builds the keys
// of Nodes from the same reply.
func slotPrimary(myid, slots rueidis.RedisResult, slot uint16) string {
	id, err := myid.ToString()
	if err != nil || id == "" {
		return ""
	}
	ranges, err := slots.ToArray()
	if err != nil {
		return ""
	}
	for _, r := range ranges {
		v, err := r.ToArray()
		if err != nil || len(v) < 3 {
			continue
		}
		from, err1 := v[0].AsInt64()
		to, err2 := v[1].AsInt64()
		if err1 != nil || err2 != nil || int64(slot) < from || int64(slot) > to {
			continue
		}
		primary, err := v[2].ToArray()
		if err != nil || len(primary) < 3 {
			return ""
		}
		host, err1 := primary[0].ToString()
		port, err2 := primary[1].AsInt64()
		pid, err3 := primary[2].ToString()
		if err1 != nil || err2 != nil || err3 != nil || pid != id || host == "" || host == "?" {
			return ""
		}
		return net.JoinHostPort(host, strconv.FormatInt(port, 10))
	}
	return ""
}

// guardCmds returns the checks of guards.
func guardCmds(guards []guard) rueidis.Commands {
	cmds := make(rueidis.Commands, len(guards), len(guards)+4)
	for i, g := range guards {
		cmds[i] = g.cmd
	}
	return cmds
}

// checkGuards checks the answers got to the checks of guards: each must show
// the entry of its guard, or the error wraps ErrPrimaryChanged.
func (s *streams) checkGuards(got []rueidis.RedisResult, guards []guard) error {
	for i, g := range guards {
		entries, err := got[i].AsXRange()
		if merr := movedErr(err); merr != nil {
			return merr
		}
		if err != nil {
			return s.wrap("xrange", err)
		}
		if len(entries) == 0 || entries[0].FieldValues[frameField] != string(g.data) {
			return fmt.Errorf("%w: partition %d: entry %s, written without replicas, is not on the primary serving now", ErrPrimaryChanged, g.p, g.id)
		}
	}
	return nil
}

// checkHeld checks the answer r to XRANGE <id> <id> of w's stream: it must
// show w, or the error wraps ErrPrimaryChanged (where telling which node
// lacks it).
func (s *streams) checkHeld(r rueidis.RedisResult, w written, where string) error {
	entries, err := r.AsXRange()
	if merr := movedErr(err); merr != nil {
		return merr
	}
	if err != nil {
		return s.wrap("xrange", err)
	}
	if len(entries) == 0 || entries[0].FieldValues[frameField] != string(w.data) {
		return fmt.Errorf("%w: %s: entry %s, written last by this node, %s", ErrPrimaryChanged, w.key, w.id, where)
	}
	return nil
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
// nothing was redirected), how many of the n commands it redirected and,
// after a MOVED, the node that serves the slot now (the next writes go
// there; after an ASK they still go to the source). A second redirection,
// or a node the client does not know, is an error wrapping
// ErrPrimaryChanged.
func (s *streams) redirect(ctx context.Context, c rueidis.Client, dc rueidis.DedicatedClient, all rueidis.Commands, res []rueidis.RedisResult, n int, last []written, wait, ident bool) ([]rueidis.RedisResult, int, string, error) {
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
			return nil, 0, "", movedErr(first) // two targets: not a migration
		}
		redo = append(redo, i)
	}
	if first == nil {
		return nil, 0, "", nil
	}
	if kind == "moved" && !movedWithData(ctx, c, dc, all[redo[0]].Slot()) {
		return nil, 0, "", movedErr(first)
	}
	node, ok := c.Nodes()[addr]
	if !ok {
		return nil, 0, "", movedErr(first)
	}
	if err := s.holdsLast(ctx, c, node, all, redo, last, kind == "ask"); err != nil {
		return nil, 0, "", err
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
			return nil, 0, "", err
		}
		res[i] = got[j]
		j++
	}
	if kind == "ask" {
		s.st.askFollowed.Add(uint64(len(redo)))
		return got[j:], len(redo), "", nil
	}
	s.st.movedFollowed.Add(uint64(len(redo)))
	return got[j:], len(redo), addr, nil
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
		if err := s.checkHeld(got[j], w, "is not on the node the slot was redirected to"); err != nil {
			return err
		}
		j++
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
	res, out, err := s.run(ctx, c, cmds, guards, last, cluster, wait, ident)
	if err != nil {
		s.mu.Lock()
		if errors.Is(err, ErrPrimaryChanged) {
			// The bus writes every unconfirmed frame again, first. Until
			// AwaitReplicas said so, it does not confirm them: the sender
			// may ask before the caller of this publish (the prober) told
			// the bus.
			for p := range s.pend {
				if s.pend[p].replid != "" {
					if s.forgot == nil {
						s.forgot = make(map[int]bool)
					}
					s.forgot[p] = true
				}
			}
			clear(s.pend)
			clear(s.last)
		} else {
			// The node may be gone, or another may serve the slot when it
			// answers again: the next write checks the node it goes to.
			for _, f := range frames {
				s.last[f.Partition].addr = ""
			}
		}
		s.mu.Unlock()
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
			seen = append(seen, f.Partition)
			if id, err := res[i].ToString(); err == nil {
				s.last[f.Partition] = written{key: s.keys[f.Partition], id: id, data: bytes.Clone(f.Data), addr: out[i].addr}
			} else {
				// Refused, or the connection failed: the next write
				// checks the node it goes to (see the error case above).
				s.last[f.Partition].addr = ""
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
	res, out, err := s.run(ctx, c, cmds, nil, nil, false, true, true)
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
		if s.forgot[p] {
			delete(s.forgot, p)
			changed = append(changed, fmt.Sprintf("partition %d: unconfirmed writes forgotten at a primary change", p))
			*pd = pending{}
			continue
		}
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
