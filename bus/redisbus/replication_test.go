package redisbus

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/internal/redistest"
)

// startReplica makes replica a replica of primary and waits until it is in sync.
func startReplica(t *testing.T, primary, replica *redistest.Server) {
	t.Helper()
	ctx := context.Background()
	if _, err := primary.Do(ctx, "CONFIG", "SET", "repl-diskless-sync-delay", "0"); err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Do(ctx, "REPLICAOF", "127.0.0.1", strconv.Itoa(primary.Port())); err != nil {
		t.Fatalf("REPLICAOF: %v", err)
	}
	eventually(t, "replica in sync", func(ctx context.Context) error {
		info, err := primary.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if info["connected_slaves"] != "1" {
			return errors.New("connected_slaves=" + info["connected_slaves"])
		}
		return nil
	})
}

// dataEntries counts the data envelopes of origin in the streams of prefix.
func dataEntries(t *testing.T, srv *redistest.Server, prefix string, parts int, origin string) int {
	t.Helper()
	n := 0
	for p := range parts {
		v, err := srv.Do(context.Background(), "XRANGE", StreamKey(prefix, p), "-", "+")
		if err != nil {
			t.Fatal(err)
		}
		entries, _ := v.([]any)
		for _, e := range entries {
			pair, _ := e.([]any)
			if len(pair) != 2 {
				continue
			}
			fvs, _ := pair[1].([]any)
			for i := 0; i+1 < len(fvs); i += 2 {
				data, _ := fvs[i+1].(string)
				if isDataOf(data, origin) {
					n++
				}
			}
		}
	}
	return n
}

// isDataOf reports whether frame is a data envelope published by origin,
// read as docs/PROTOCOL.md ("Envelope") lays it out: version 1, kind 1 (data),
// the origin's length, the origin.
func isDataOf(frame, origin string) bool {
	return len(frame) > 3 && frame[0] == 1 && frame[1] == 1 &&
		int(frame[2]) == len(origin) && strings.HasPrefix(frame[3:], origin)
}

// TestUnderReplicated: with WaitReplicas=1 and the only replica stopped
// (SIGSTOP) while the primary is healthy, the bus stays Connected (probes do
// not wait for replicas), requests work, every message is written exactly once
// (never written again because WAIT fell short), none is dropped for its age,
// and the outbox keeps the messages until the replica is back, then empties.
func TestUnderReplicated(t *testing.T) {
	t.Parallel()
	primary, replica := redistest.Standalone(t), redistest.Standalone(t)
	startReplica(t, primary, replica)
	o := faultOpts(Streams)
	o.Prefix = "underrepl"
	o.WaitReplicas = 1
	o.WaitTimeout = 100 * time.Millisecond
	a, b := openBus(t, primary.URL(), o, "a"), openBus(t, primary.URL(), o, "b")
	in := newInbox()
	b.Receive(in.handle)
	var direct inbox
	direct.notify = make(chan struct{})
	a.Receive(direct.handle)
	busWarmUp(t, a, in)

	if err := syscall.Kill(replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(replica.PID(), syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)

	const n = 50
	ctx := context.Background()
	for i := range n {
		if err := a.Publish(ctx, "k", []byte("e"+strconv.Itoa(i))); err != nil {
			t.Fatalf("Publish %d: %v", i, err)
		}
	}
	if !in.await(waitLong, countEvents(n)) {
		t.Fatalf("received %d events, want %d (status %+v)", len(in.snapshot()), n, a.Status())
	}
	// Several probe rounds and waits for replicas while the replica is stopped.
	deadline := time.Now().Add(waitLong)
	for a.Stats().ProbesSent < 5 || a.Stats().ReplicaWaits < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", a.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := a.Status()
	if st.State != bus.Connected {
		t.Errorf("state while the replica is stopped: %v (%s), want connected", st.State, st.LastError)
	}
	if !st.UnderReplicated || st.OutboxLen == 0 {
		t.Errorf("status while the replica is stopped: under-replicated %v, outbox %d; want true and the messages kept",
			st.UnderReplicated, st.OutboxLen)
	}
	// Requests (the direct plane) work.
	if err := b.Send(ctx, "a", []byte("request")); err != nil {
		t.Errorf("Send while the replica is stopped: %v", err)
	}
	if !direct.await(waitLong, func(ms []bus.Message) bool { return len(ms) > 0 }) {
		t.Error("request not received while the replica is stopped")
	}

	resume()
	deadline = time.Now().Add(waitLong)
	for st = a.Status(); st.OutboxLen > 0 || st.UnderReplicated; st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("after the replica returned: outbox %d, under-replicated %v", st.OutboxLen, st.UnderReplicated)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s := a.Stats()
	if got := dataEntries(t, primary, o.Prefix, o.Partitions, "a"); uint64(got) != s.Accepted {
		t.Errorf("stream holds %d data entries of a, want %d (each accepted message written once)", got, s.Accepted)
	}
	if s.DroppedMaxAge+s.DroppedOverflow+s.Replayed != 0 || s.Published != s.Accepted {
		t.Errorf("stats %+v: want every accepted message published, none dropped or written again", s)
	}
	if s.UnderReplicated != 1 {
		t.Errorf("under-replication episodes %d, want 1", s.UnderReplicated)
	}
	checkEvents(t, in.snapshot(), "a", n)
}

// TestUnderReplicatedKeepsPublishing: with WaitReplicas=1, a WaitTimeout
// above the bus's interval between waits for replicas (the default 1 s) and
// the only replica stopped, messages published after several such waits still
// reach the other node while the replica is down, instead of waiting in the
// outbox until it returns (a request among them would expire there).
func TestUnderReplicatedKeepsPublishing(t *testing.T) {
	t.Parallel()
	primary, replica := redistest.Standalone(t), redistest.Standalone(t)
	startReplica(t, primary, replica)
	o := faultOpts(Streams)
	o.Prefix = "underrepl-pub"
	o.WaitReplicas = 1
	o.WaitTimeout = time.Second
	a, b := openBus(t, primary.URL(), o, "a"), openBus(t, primary.URL(), o, "b")
	in := newInbox()
	b.Receive(in.handle)
	a.Receive(func(bus.Message) {})
	busWarmUp(t, a, in)

	if err := syscall.Kill(replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			if err := syscall.Kill(replica.PID(), syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(resume)

	ctx := context.Background()
	sent := 0
	publish := func() {
		t.Helper()
		if err := a.Publish(ctx, "k", []byte("e"+strconv.Itoa(sent))); err != nil {
			t.Fatalf("Publish %d: %v", sent, err)
		}
		sent++
	}
	// Under-replicated, and through two waits for replicas (each as long as
	// WaitTimeout), with messages published all along.
	deadline := time.Now().Add(waitLong)
	for !a.Status().UnderReplicated || a.Stats().ReplicaWaits < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("not under-replicated with waits for replicas: status %+v, stats %+v", a.Status(), a.Stats())
		}
		publish()
		time.Sleep(50 * time.Millisecond)
	}
	// Each message now reaches b while the replica is still stopped.
	for range 5 {
		publish()
		if !in.await(waitLong, countEvents(sent)) {
			t.Fatalf("with the replica stopped, b received %d of %d events: the outbox held them (status %+v, stats %+v)",
				len(in.snapshot())-1, sent, a.Status(), a.Stats())
		}
	}
	if st := a.Status(); !st.UnderReplicated || st.OutboxLen == 0 {
		t.Errorf("while the replica is stopped: under-replicated %v, outbox %d; want true and the messages kept until confirmed",
			st.UnderReplicated, st.OutboxLen)
	}

	resume()
	deadline = time.Now().Add(waitLong)
	for st := a.Status(); st.OutboxLen > 0 || st.UnderReplicated; st = a.Status() {
		if time.Now().After(deadline) {
			t.Fatalf("after the replica returned: outbox %d, under-replicated %v", st.OutboxLen, st.UnderReplicated)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := a.Stats(); s.Published != s.Accepted || s.Replayed != 0 {
		t.Errorf("stats %+v: want every accepted message published once", s)
	}
	checkEvents(t, in.snapshot(), "a", sent)
}

// restartedWithoutUnconfirmed returns a streams transport with WaitReplicas
// 1 (prefix) that wrote a batch the replica confirmed, then one it did not
// (the replica stopped), after which the primary restarted without
// persistence (losing the unconfirmed writes) and the replica caught up with
// it again.
func restartedWithoutUnconfirmed(t *testing.T, prefix string) (bus.Transport, bus.ReplicaWaiter) {
	t.Helper()
	primary, replica := redistest.Standalone(t), redistest.Standalone(t)
	startReplica(t, primary, replica)
	o := faultOpts(Streams)
	o.Prefix = prefix
	o.Partitions = 2
	o.WaitReplicas = 1
	o.WaitTimeout = 100 * time.Millisecond
	tr := newTransport(t, primary.URL(), o)
	rw := tr.(bus.ReplicaWaiter)
	ctx := context.Background()
	eventually(t, "a batch the replica confirms", func(ctx context.Context) error {
		return tr.Publish(ctx, numbered(0, 2, 2))
	})

	if err := syscall.Kill(replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	t.Cleanup(func() {
		if stopped {
			_ = syscall.Kill(replica.PID(), syscall.SIGCONT)
		}
	})
	err := tr.Publish(ctx, numbered(2, 4, 2))
	if !errors.Is(err, bus.ErrNotReplicated) || !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("Publish with the replica stopped: %v, want ErrNotReplicated", err)
	}
	if err := rw.AwaitReplicas(ctx, []int{0, 1}); !errors.Is(err, bus.ErrNotReplicated) {
		t.Fatalf("AwaitReplicas with the replica stopped: %v, want ErrNotReplicated", err)
	}

	// The primary restarts without persistence: the unconfirmed writes are gone.
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Start(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = false
	if err := syscall.Kill(replica.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	eventually(t, "replica in sync with the restarted primary", func(ctx context.Context) error {
		info, err := primary.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if !strings.Contains(info["slave0"], "state=online") {
			return errors.New("slave0=" + info["slave0"])
		}
		return nil
	})
	return tr, rw
}

// TestAwaitReplicasPrimaryChanged: writes that the replica had not confirmed
// when the primary restarted without them are not confirmed by a later wait
// on the new primary: AwaitReplicas reports ErrPrimaryChanged (the bus writes
// them again), and confirms writes made since.
func TestAwaitReplicasPrimaryChanged(t *testing.T) {
	t.Parallel()
	tr, rw := restartedWithoutUnconfirmed(t, "primarychanged")
	ctx := context.Background()
	var werr error
	eventually(t, "AwaitReplicas answering", func(ctx context.Context) error {
		werr = rw.AwaitReplicas(ctx, []int{0, 1})
		if errors.Is(werr, ErrUnavailable) {
			return werr
		}
		return nil
	})
	if !errors.Is(werr, ErrPrimaryChanged) || errors.Is(werr, bus.ErrNotReplicated) {
		t.Fatalf("AwaitReplicas after the primary lost the writes: %v, want ErrPrimaryChanged", werr)
	}
	// Written again on the new primary (as the bus does) and confirmed.
	eventually(t, "Publish on the new primary", func(ctx context.Context) error {
		return tr.Publish(ctx, numbered(2, 4, 2))
	})
	if err := rw.AwaitReplicas(ctx, []int{0, 1}); err != nil {
		t.Errorf("AwaitReplicas after writing again: %v", err)
	}
}

// TestAwaitReplicasAfterPublishMetPrimaryChange: as above, but a publish
// meets the restarted primary before any wait does, and forgets the
// unconfirmed writes: the next AwaitReplicas reports ErrPrimaryChanged all
// the same (bus.ReplicaWaiter), then confirms writes made since.
func TestAwaitReplicasAfterPublishMetPrimaryChange(t *testing.T) {
	t.Parallel()
	tr, rw := restartedWithoutUnconfirmed(t, "publishmet")
	ctx := context.Background()
	// A publish meets the new primary first (its guard finds the last
	// unconfirmed write missing) and forgets the unconfirmed writes; the
	// wait that follows still reports them lost, instead of confirming
	// nothing left to compare: the bus's sender may ask before the publisher
	// told the bus.
	var perr error
	eventually(t, "a publish meeting the restarted primary", func(ctx context.Context) error {
		perr = tr.Publish(ctx, numbered(4, 5, 2))
		if errors.Is(perr, ErrUnavailable) {
			return perr
		}
		return nil
	})
	if !errors.Is(perr, ErrPrimaryChanged) {
		t.Fatalf("Publish after the primary lost the writes: %v, want ErrPrimaryChanged", perr)
	}
	if err := rw.AwaitReplicas(ctx, []int{0, 1}); !errors.Is(err, ErrPrimaryChanged) {
		t.Fatalf("AwaitReplicas after a publish met the primary change: %v, want ErrPrimaryChanged", err)
	}
	// Written again on the new primary (as the bus does) and confirmed.
	eventually(t, "Publish on the new primary", func(ctx context.Context) error {
		return tr.Publish(ctx, numbered(2, 5, 2))
	})
	if err := rw.AwaitReplicas(ctx, []int{0, 1}); err != nil {
		t.Errorf("AwaitReplicas after writing again: %v", err)
	}
}
