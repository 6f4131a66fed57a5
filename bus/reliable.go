package bus

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ErrSelf is returned by Send addressed to the sending node itself.
var ErrSelf = errors.New("bus: send to own node")

// ErrNoInboxes is returned by PublishTo on a bus whose transport has no inbox
// partitions (see Inboxer and Routing).
var ErrNoInboxes = errors.New("bus: the transport has no inboxes")

// Reliable is the reliable Bus over any Transport: a bounded outbox drained in
// order by one sender goroutine, reconnects with backoff, per-origin sequencing
// with de-duplication and gap detection, and liveness probes. Create it with New.
type Reliable struct {
	cfg      Config
	t        Transport
	nodeID   string
	instance uint64
	// startNanos is when New ran (Unix nanoseconds): frames of this node's id
	// and another instance written earlier are an earlier run's history.
	startNanos int64
	partitions int
	// shared is the number of partitions every node reads, over which keys
	// are hashed: partitions without inboxes, partitions-inboxes with.
	shared  int
	inboxes int
	// inbox is this node's inbox partition (-1 without inboxes); reads are
	// the partitions it reads, sorted (every partition without inboxes);
	// trips those of its round-trip probes (its inbox with inboxes, see
	// probeLoop; reads without).
	inbox int
	reads []int
	trips []int
	// publishing is held by the sender from a batch's publish until the
	// outbox knows its outcome, and by the prober from reading what its probes
	// announce until they are written: a probe then follows on each partition
	// exactly the frames it announces, never a batch written but not yet
	// acknowledged (a receiver that starts between the two would take that
	// batch for lost). A channel of one, so that a wait can end with ctx.
	publishing chan struct{}
	// prefix is version, kind data, origin length, origin and instance: the start of
	// every data envelope this node writes.
	prefix []byte
	log    *slog.Logger
	bo     backoff
	ob     *outbox
	sm     *stateMachine
	c      counters
	m      *metrics

	wake     chan struct{} // cap 1: the outbox has work, or the bus drains
	draining atomic.Bool
	// replicas is t when it can wait for replicas on its own (nil otherwise);
	// underReplicated is set while written entries wait for them.
	replicas        ReplicaWaiter
	underReplicated atomic.Bool

	// disk is the disk outbox (OutboxConfig.Dir), nil without one;
	// ownInstances are the instances of earlier processes of this node whose
	// messages it publishes again from there: its own, not another process's.
	disk         *diskLog
	ownInstances map[uint64]bool
	diskLog      rateLimit

	recv   receiver
	pos    positions
	probes prober
	// breaks counts broken connections (connectionBroke): after one, the
	// prober announces again every inbox partition this node wrote to.
	breaks atomic.Uint64
	// recovered fires when a ping finds the broker back after a failed one.
	recovered signal
	pingDown  bool // the last ping failed; owned by the prober
	drops     dropEpisodes
	// kept holds what the broker acknowledged last, published again after
	// the connection breaks (Config.Retain).
	kept         *retained
	republishLog rateLimit
	retainLog    rateLimit
	// rewait holds the partitions of republished frames, written without
	// waiting for replicas, until the sender takes them (takeRewait).
	rewaitMu sync.Mutex
	rewait   map[int]struct{}

	notify       notifier
	notifierDone chan struct{}

	stopBackground context.CancelFunc // receiver and prober
	stopSender     context.CancelFunc
	background     sync.WaitGroup
	senderDone     chan struct{}
	notifierExited chan struct{}

	closeOnce sync.Once
	closing   atomic.Bool
	closed    chan struct{}
}

var _ Bus = (*Reliable)(nil)

// New returns a reliable bus over t configured by cfg (nil: every default).
// On success the bus owns t (Close closes it); on error t is left to the
// caller.
//
// New does not wait for the broker: a bus created while the broker is down
// accepts Publish into its outbox and connects when the broker appears. The bus
// starts in state Reconnecting and becomes Connected at its first successful ping
// or publish (with probes disabled it starts Connected and only errors change
// that).
//
// The bus calls t's methods from several goroutines at once: Publish from the
// sender and the prober, Ping, Send from callers, and one Subscribe at a time.
func New(t Transport, cfg *Config) (*Reliable, error) {
	if cfg == nil {
		cfg = new(Config)
	}
	return newReliable(t, *cfg, nil)
}

// newReliable is New with a replaceable backoff jitter (tests make it
// deterministic).
func newReliable(t Transport, cfg Config, jitter func(int64) int64) (*Reliable, error) {
	if t == nil {
		return nil, fmt.Errorf("%w: nil transport", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	partitions := t.Partitions()
	if partitions < 1 || partitions > maxPartition+1 {
		return nil, fmt.Errorf("%w: transport has %d partitions, want 1..%d", ErrInvalidConfig, partitions, maxPartition+1)
	}
	shared, inboxes, inbox := partitions, 0, -1
	ib, _ := t.(Inboxer)
	if ib != nil && ib.Inboxes() > 0 {
		inboxes = ib.Inboxes()
		if inboxes >= partitions {
			return nil, fmt.Errorf("%w: transport has %d inbox partitions among %d partitions, want at least 1 shared", ErrInvalidConfig, inboxes, partitions)
		}
		shared = partitions - inboxes
	}
	var disk *diskLog
	var loaded []loadedRecord
	if cfg.Outbox.Dir != "" {
		var id string
		disk, id, loaded, err = openDisk(cfg.Outbox.Dir, cfg.NodeID, shared, inboxes, cfg.Outbox.Fsync)
		if err != nil {
			return nil, err
		}
		cfg.NodeID = id
	}
	if cfg.NodeID == "" {
		cfg.NodeID = newNodeID()
	}
	if inboxes > 0 {
		inbox = InboxOf(cfg.NodeID, shared, inboxes)
	}
	r := &Reliable{
		cfg:            cfg,
		t:              t,
		nodeID:         cfg.NodeID,
		instance:       rand.Uint64(),
		startNanos:     time.Now().UnixNano(),
		partitions:     partitions,
		shared:         shared,
		inboxes:        inboxes,
		inbox:          inbox,
		log:            cfg.Logger.With("node", cfg.NodeID),
		bo:             newBackoff(cfg.Backoff),
		wake:           make(chan struct{}, 1),
		senderDone:     make(chan struct{}),
		publishing:     make(chan struct{}, 1),
		notifierDone:   make(chan struct{}),
		notifierExited: make(chan struct{}),
		closed:         make(chan struct{}),
	}
	if jitter != nil {
		r.bo.jitter = jitter
	}
	r.ob = newOutbox(cfg.Outbox, partitions, &r.c)
	r.kept = newRetained(cfg.Retain, cfg.Outbox.MaxAge, &r.c)
	r.ob.keep = r.kept
	if disk != nil {
		r.disk, r.ob.disk = disk, disk
		r.ob.load(loaded)
		r.ownInstances = make(map[uint64]bool)
		for _, rec := range loaded {
			r.ownInstances[rec.env.Instance] = true
		}
		if len(loaded) > 0 {
			r.log.Warn("bus: publishing messages an earlier process accepted and had not published",
				"messages", len(loaded), "dir", cfg.Outbox.Dir)
		}
		r.c.diskLoaded.Add(uint64(len(loaded)))
	}
	r.replicas, _ = t.(ReplicaWaiter)
	r.prefix = append(r.prefix, envelopeVersion, byte(kindData), byte(len(r.nodeID)))
	r.prefix = append(r.prefix, r.nodeID...)
	r.prefix = binary.BigEndian.AppendUint64(r.prefix, r.instance)
	r.notify.wake = make(chan struct{}, 1)

	initial := Reconnecting
	if cfg.ProbeInterval < 0 {
		initial = Connected
	}
	var onChange func(stateSnapshot)
	if cfg.OnStateChange != nil {
		onChange = r.notify.push
	}
	r.sm = newStateMachine(initial, cfg.Backoff.MaxAttempts, r.log, onChange)
	r.reads = make([]int, 0, shared+1)
	for p := range shared {
		r.reads = append(r.reads, p)
	}
	if inboxes > 0 {
		r.reads = append(r.reads, inbox)
		r.trips = []int{inbox}
	} else {
		for p := shared; p < partitions; p++ {
			r.reads = append(r.reads, p)
		}
		r.trips = r.reads
	}
	r.recv.init(r)
	r.m = newMetrics(r)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(r.m); err != nil {
			if disk != nil {
				_ = disk.close() // nothing was published; the records stay
			}
			return nil, fmt.Errorf("bus: register metrics: %w", err)
		}
	}

	if inboxes > 0 {
		// Before the receiver's MarkStart: the start is fixed, and the
		// subscription reads, only on the partitions of this node.
		ib.ReadPartitions(slices.Clone(r.reads))
	}

	bg, stopBackground := context.WithCancel(context.Background())
	sendCtx, stopSender := context.WithCancel(context.Background())
	r.stopBackground, r.stopSender = stopBackground, stopSender
	go r.sendLoop(sendCtx)
	r.background.Add(1)
	go r.recvLoop(bg)
	if cfg.ProbeInterval > 0 {
		r.background.Add(1)
		go r.probeLoop(bg)
	}
	if cfg.OnStateChange != nil {
		go func() {
			defer close(r.notifierExited)
			r.notify.run(r.notifierDone, r.callStateHook)
		}()
	} else {
		close(r.notifierExited)
	}
	r.log.Info("bus started", "instance", r.instance, "partitions", partitions,
		"outbox_max_messages", cfg.Outbox.MaxMessages, "outbox_max_bytes", cfg.Outbox.MaxBytes,
		"outbox_max_age", cfg.Outbox.MaxAge, "overflow", cfg.Outbox.Overflow.String())
	return r, nil
}

// newNodeID draws a random node id: 16 hex digits.
func newNodeID() string {
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], rand.Uint64())
	return hex.EncodeToString(id[:])
}

// diskFailed counts and logs (rate-limited) a failure of the disk outbox.
func (r *Reliable) diskFailed(err error) {
	r.c.diskErrors.Add(1)
	if ok, suppressed := r.diskLog.allow(time.Now(), 10*time.Second); ok {
		r.log.Error("bus: disk outbox failed", "error", err, "dir", r.cfg.Outbox.Dir, "suppressed_since_last", suppressed)
	}
}

func (r *Reliable) callStateHook(s stateSnapshot) {
	r.cfg.OnStateChange(r.status(s))
}

// NodeID returns this node's id.
func (r *Reliable) NodeID() string { return r.nodeID }

// Partitions returns the number of partitions of the transport (with inboxes:
// the shared partitions and the inbox partitions).
func (r *Reliable) Partitions() int { return r.partitions }

// PartitionOf returns the partition Publish uses for key: FNV-1a (32 bit) of the
// key modulo the number of shared partitions (every partition without inboxes,
// the partitions before the inboxes with).
func (r *Reliable) PartitionOf(key string) int { return partitionOf(key, r.shared) }

// Routing reports whether the transport has inbox partitions, so that
// PublishTo can address one node (see Inboxer).
func (r *Reliable) Routing() bool { return r.inboxes > 0 }

// InboxOf returns the partition of node's inbox, -1 without inboxes.
func (r *Reliable) InboxOf(node string) int {
	if r.inboxes == 0 {
		return -1
	}
	return InboxOf(node, r.shared, r.inboxes)
}

// PublishTo is Publish on node's inbox partition instead of a key's partition:
// the message reaches node (and any node whose inbox is the same partition),
// not the others, with everything Publish promises (order per partition,
// outbox, retention, gap detection at the receiver). Like every message of
// this node, it is not delivered to this node's own handler, also when node
// shares its inbox. It returns ErrNoInboxes when the transport has none.
func (r *Reliable) PublishTo(ctx context.Context, node string, payload []byte) error {
	if r.inboxes == 0 {
		return ErrNoInboxes
	}
	_, err := r.publishOn(ctx, r.InboxOf(node), payload)
	return err
}

// PublishToNodes is PublishTo of one payload to several nodes, all or none:
// it writes it once to each distinct inbox of nodes, and returns
// ErrOutboxFull (RejectNew) without accepting it anywhere when the outbox
// cannot take every copy; a refusal counts once (Stats.Rejected). Under
// DropOldest, older messages are dropped until every copy fits.
func (r *Reliable) PublishToNodes(ctx context.Context, nodes []string, payload []byte) error {
	if r.inboxes == 0 {
		return ErrNoInboxes
	}
	parts := make([]int, 0, len(nodes))
	for _, n := range nodes {
		if p := r.InboxOf(n); !slices.Contains(parts, p) {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ctx.Err()
	}
	_, err := r.publishOnAll(ctx, parts, payload)
	return err
}

func partitionOf(key string, partitions int) int {
	const offset32, prime32 = 2166136261, 16777619
	h := uint32(offset32)
	for i := 0; i < len(key); i++ {
		h ^= uint32(key[i])
		h *= prime32
	}
	return int(h % uint32(partitions))
}

// Publish accepts payload into the outbox, or returns at once ErrOutboxFull (a
// bound is reached under RejectNew), ErrTooLarge, ErrClosed or ctx's error. It
// never waits for the broker. The payload is copied; the caller may reuse it.
func (r *Reliable) Publish(ctx context.Context, key string, payload []byte) error {
	_, err := r.publish(ctx, key, payload)
	return err
}

// publish is Publish returning the seq the message got.
func (r *Reliable) publish(ctx context.Context, key string, payload []byte) (uint64, error) {
	return r.publishOn(ctx, partitionOf(key, r.shared), payload)
}

// publishOn accepts payload into the outbox for partition p.
func (r *Reliable) publishOn(ctx context.Context, p int, payload []byte) (uint64, error) {
	return r.publishOnAll(ctx, []int{p}, payload)
}

// publishOnAll accepts payload into the outbox once for each of parts, all or
// none, and returns the seq of the last.
func (r *Reliable) publishOnAll(ctx context.Context, parts []int, payload []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := time.Now()
	var (
		// One partition (every Publish) without allocations of their own.
		datas1  [1][]byte
		seqAts1 [1]int
		seqs1   [1]uint64
	)
	datas, seqAts, seqs := datas1[:], seqAts1[:], seqs1[:]
	if len(parts) > 1 {
		datas, seqAts, seqs = make([][]byte, len(parts)), make([]int, len(parts)), make([]uint64, len(parts))
	}
	for i, p := range parts {
		seqAt := len(r.prefix) + uvarintLen(uint64(p))
		size := seqAt + 16 + len(payload)
		if r.cfg.Outbox.MaxBytes > 0 && int64(size) > r.cfg.Outbox.MaxBytes {
			r.c.rejected.Add(1)
			return 0, fmt.Errorf("%w: %d bytes, outbox holds %d", ErrTooLarge, size, r.cfg.Outbox.MaxBytes)
		}
		data := make([]byte, 0, size)
		data = append(data, r.prefix...)
		data = binary.AppendUvarint(data, uint64(p))
		data = binary.BigEndian.AppendUint64(data, 0) // seq, set by the outbox
		data = binary.BigEndian.AppendUint64(data, uint64(now.UnixNano()))
		data = append(data, payload...)
		datas[i], seqAts[i] = data, seqAt
	}
	var expired, overflow dropAcc
	pos, err := r.ob.addAll(parts, datas, seqAts, seqs, now, &expired, &overflow)
	seq := seqs[len(seqs)-1]
	r.reportDrop(DropMaxAge, &expired)
	r.reportDrop(DropOverflow, &overflow)
	if err != nil {
		switch {
		case errors.Is(err, ErrOutboxFull):
			r.c.rejected.Add(1)
			r.drops.rejected(r.log)
		case errors.Is(err, ErrDisk):
			r.c.rejected.Add(1)
			r.diskFailed(err)
		}
		return 0, err
	}
	if r.disk != nil && r.cfg.Outbox.Fsync == FsyncAlways {
		if err := r.disk.syncThrough(pos); err != nil {
			// Accepted and on its way, but not on stable storage: a host crash
			// could lose it. Say so; the message itself is not refused.
			r.diskFailed(err)
		}
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return seq, nil
}

// Send delivers payload to node to, or to every other node when to is "", on the
// best-effort plane. It fails fast with an error wrapping ErrNotConnected when the
// bus is not Connected or the transport fails, and never buffers.
func (r *Reliable) Send(ctx context.Context, to string, payload []byte) error {
	if r.closing.Load() {
		return ErrClosed
	}
	if to == r.nodeID {
		return ErrSelf
	}
	if s := r.sm.current(); s != Connected {
		return fmt.Errorf("%w (state %s)", ErrNotConnected, s)
	}
	data := make([]byte, 0, len(r.prefix)+17+len(payload))
	data = append(data, r.prefix...)
	data[1] = byte(kindDirect)
	data = append(data, 0) // partition
	data = binary.BigEndian.AppendUint64(data, 0)
	data = binary.BigEndian.AppendUint64(data, uint64(time.Now().UnixNano()))
	data = append(data, payload...)
	if err := r.t.Send(ctx, to, data); err != nil {
		return fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	r.c.sent.Add(1)
	return nil
}

// Receive sets the handler and starts receiving. Only the first call counts.
func (r *Reliable) Receive(h Handler) {
	if h == nil {
		r.log.Error("bus: Receive with a nil handler ignored")
		return
	}
	r.recv.start(h, r.log)
}

// Status reports the state and the outbox.
func (r *Reliable) Status() Status { return r.status(r.sm.snapshot()) }

func (r *Reliable) status(s stateSnapshot) Status {
	now := time.Now()
	n, bytes, oldest := r.ob.snapshot(now)
	conflict, other := r.recv.nodeIDConflictNow(now)
	st := Status{
		NodeIDConflict:   conflict,
		ConflictInstance: other,
		State:            s.State,
		StateName:        s.State.String(),
		Since:            s.Since,
		Attempt:          s.Attempt,
		NextRetry:        s.NextRetry,
		LastError:        s.LastError,
		OutboxLen:        n,
		OutboxBytes:      bytes,
		OutboxOldest:     oldest,
		Nodes:            r.recv.aliveNodes(now, r.livenessWindow()),
	}
	st.UnderReplicated = r.underReplicated.Load()
	return st
}

// livenessWindow is how recently a node must have been heard to count as alive.
func (r *Reliable) livenessWindow() time.Duration {
	if r.cfg.ProbeInterval < 0 {
		return time.Minute
	}
	return max(3*r.cfg.ProbeInterval, r.cfg.ProbeTimeout)
}

// pruneAfter is how long (in connected time) a receiver keeps what it knows of a
// silent run of another node: an hour, and longer than the outbox max age plus
// a margin. A node cut off from the broker while this one is connected drops
// its oldest messages at the max age and publishes again when it is back: the
// gap must then be reported, not taken as a new baseline, so its state must
// outlive the cut. Forgetting only bounds memory under node id churn (a few
// hundred bytes per run).
func (r *Reliable) pruneAfter() time.Duration {
	return max(time.Hour, 10*r.livenessWindow(), r.cfg.Outbox.MaxAge+5*time.Minute)
}

// StateChanged returns a channel closed at the next state change.
func (r *Reliable) StateChanged() <-chan struct{} { return r.sm.changedChan() }

// Close stops receiving and probing, gives the outbox until ctx is done to reach
// the broker, drops (reason "closed": counted, logged, hook) what is left, and
// closes the transport. It returns ctx.Err() when time ran out; a transport
// that does not honour cancellation gets one more second (closeGrace), then is
// left behind with an error log. Close is idempotent; later calls wait for the
// first to finish. OnStateChange must not call Close.
func (r *Reliable) Close(ctx context.Context) error {
	err := ErrClosed // marks "not the first call"
	r.closeOnce.Do(func() { err = r.close(ctx) })
	if !errors.Is(err, ErrClosed) {
		return err
	}
	select {
	case <-r.closed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *Reliable) close(ctx context.Context) error {
	defer close(r.closed)
	r.closing.Store(true)
	r.ob.close()
	r.stopBackground()
	// A transport whose Subscribe ignores its ctx must not make Close hang past
	// ctx: closing the transport below ends it.
	backgroundDone := make(chan struct{})
	go func() {
		r.background.Wait()
		close(backgroundDone)
	}()
	select {
	case <-backgroundDone:
	case <-ctx.Done():
	}

	// Drain: the sender exits once the outbox is empty.
	r.draining.Store(true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	var err error
	select {
	case <-r.senderDone:
	case <-ctx.Done():
		err = ctx.Err()
	}
	r.stopSender()
	if !awaitGrace(ctx, r.senderDone) {
		r.log.Error("bus: the transport's Publish did not return after cancellation; closing without it")
	}
	var left dropAcc
	if r.disk != nil {
		// What the broker did not take stays on disk for the next start.
		if n, bytes, _ := r.ob.snapshot(time.Now()); n > 0 {
			r.log.Warn("bus: messages kept in the disk outbox for the next start", "messages", n, "bytes", bytes, "dir", r.cfg.Outbox.Dir)
			err = nil
		}
		if derr := r.disk.close(); derr != nil {
			r.log.Error("bus: closing the disk outbox", "error", derr)
		}
	} else {
		r.ob.drain(&left)
		r.reportDrop(DropClosed, &left)
	}
	r.drops.end(r.log)
	r.finalAnnounce(ctx, backgroundDone)
	if n := r.kept.discard(); n > 0 {
		// The broker may have lost them and they do not go out again.
		r.log.Warn("bus: closing with acknowledged messages not yet published again after a broken connection; receivers may report them as a gap",
			"messages", n)
	}

	if cerr := r.t.Close(); cerr != nil {
		r.log.Warn("bus: closing the transport", "error", cerr)
	}
	if !awaitGrace(ctx, backgroundDone) {
		r.log.Error("bus: the transport's Subscribe or Ping did not return after cancellation; closing without it")
	}
	r.sm.close()
	close(r.notifierDone)
	if !awaitGrace(ctx, r.notifierExited) {
		r.log.Error("bus: OnStateChange did not return; closing without it")
	}
	if r.cfg.Registerer != nil {
		r.cfg.Registerer.Unregister(r.m)
	}
	if err == nil && left.count > 0 {
		// The sender stopped although the context did not: cannot happen, but
		// never report success with messages left behind.
		err = fmt.Errorf("bus: %d messages left in the outbox at close", left.count)
	}
	return err
}

// finalRound is the probe round of the announcement a bus publishes at Close.
const finalRound = ^uint64(0)

// finalAnnounce publishes, while ctx has time and once the sender and the
// prober have stopped, one last probe per partition (round finalRound): every seq
// this run will ever have is resolved now, so receivers can report what of it
// is missing (also what Close dropped), and take this run's silence from now on
// as a close, not a crash. A failure changes nothing: the run then looks
// crashed.
func (r *Reliable) finalAnnounce(ctx context.Context, backgroundDone <-chan struct{}) {
	if r.cfg.ProbeInterval < 0 || ctx.Err() != nil || r.sm.current() != Connected {
		return // a broker that is not answering would only make Close wait
	}
	select {
	case <-backgroundDone:
	default:
		return
	}
	select {
	case <-r.senderDone:
	default:
		return
	}
	if err := r.republish(ctx); err != nil {
		r.log.Debug("bus: the final announcement failed", "error", err)
		return
	}
	last := r.ob.lastResolved(make([]uint64, 0, r.partitions))
	frames := r.appendProbes(nil, finalRound, r.announced(last), last, nil)
	pctx, cancel := context.WithTimeout(ctx, r.cfg.ProbeTimeout)
	defer cancel()
	if err := r.t.Publish(pctx, frames); err != nil {
		r.log.Debug("bus: the final announcement failed", "error", err)
		return
	}
	r.c.probesSent.Add(1)
}

// closeGrace is how long Close waits, after its ctx is done, for goroutines to
// honour their cancellation before it gives up on them.
const closeGrace = time.Second

// awaitGrace waits for done until ctx is done plus closeGrace, and reports
// whether done was closed.
func awaitGrace(ctx context.Context, done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	case <-ctx.Done():
	}
	t := time.NewTimer(closeGrace)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// sendLoop is the only goroutine that publishes outbox entries: it drains the
// outbox in order, in pipelined batches, and on error backs off and publishes the
// same entries again (receivers drop the duplicates).
func (r *Reliable) sendLoop(ctx context.Context) {
	defer close(r.senderDone)
	var frames []Frame
	var waits []time.Duration
	var rp replication
	attempt := 0
	// rewrote is set when the last publish was refused with ErrPrimaryChanged
	// and the sender went straight on; a second refusal in a row backs off.
	rewrote := false
	for {
		var expired dropAcc
		var lastID uint64
		var replays int
		forgets := r.ob.forgotten()
		frames, lastID, replays, _ = r.ob.batch(time.Now(), frames[:0], r.cfg.BatchSize, r.cfg.BatchBytes, &expired)
		r.reportDrop(DropMaxAge, &expired)
		if r.replicas != nil {
			r.takeRewait(&rp)
		}
		if rp.rewaitDue(time.Now()) {
			r.awaitReplicas(ctx, &rp)
			if ctx.Err() != nil {
				return
			}
			continue
		}
		if len(frames) == 0 {
			if r.draining.Load() {
				if _, written := r.ob.written(); !rp.pending() || written == 0 {
					return // republished frames do not hold Close back
				}
			}
			if !r.idle(ctx, &rp) {
				return
			}
			continue
		}
		under := r.underReplicated.Load()
		if under {
			// Replicas are behind: write without waiting for them; the
			// entries stay in the outbox until AwaitReplicas confirms them.
			for i := range frames {
				frames[i].NoWait = true
			}
		}
		back := r.recovered.wait()
		if !r.lockPublishing(ctx) {
			return
		}
		if r.ob.forgotten() != forgets {
			// The prober, republishing meanwhile, learnt that the written
			// entries must go out again: this batch starts after them.
			r.unlockPublishing()
			clear(frames)
			continue
		}
		// What the broker acknowledged before a break goes out again first.
		err := r.republish(ctx)
		sent := err == nil // the batch went out (or may have)
		if sent {
			pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
			err = r.t.Publish(pctx, frames)
			cancel()
			r.c.replayed.Add(uint64(replays))
		}
		if err == nil && under {
			err = ErrNotReplicated // written, not confirmed: same path
		}
		if err == nil {
			waits = r.ob.commit(lastID, time.Now(), waits[:0])
		}
		r.unlockPublishing()
		if err == nil || r.notReplicated(err, frames, lastID, &rp) {
			for _, w := range waits { // outside the outbox lock
				r.m.observeLatency(w)
			}
			waits = waits[:0]
			if attempt > 0 {
				r.c.reconnects.Add(1)
				attempt = 0
			}
			rewrote = false
			r.sm.ok(compPublish)
			r.drops.end(r.log)
			clear(frames) // do not keep published payloads alive
			continue
		}
		if ctx.Err() != nil {
			return
		}
		r.connectionBroke()
		if rp.pending() {
			// The broker failed: what it wrote unreplicated may be lost with
			// a failover, so it goes out again with the rest.
			r.ob.forgetWritten()
			rp.reset()
		}
		if sent {
			r.ob.markFailed(lastID)
		}
		if errors.Is(err, ErrPrimaryChanged) && r.replicas != nil && !rewrote {
			// The transport wrote nothing: what the old primary took without
			// replicas goes to the new one at once, ahead of this batch.
			rewrote = true
			r.c.primaryChanges.Add(1)
			r.log.Info("bus: the broker's primary changed; publishing again what it acknowledged last and what waits for replicas", "error", err)
			continue
		}
		attempt++
		d := r.bo.delay(attempt)
		r.sm.fail(compPublish, err, attempt, d)
		if !r.retryWait(ctx, d, back, senderHold, nil, r.expireOutbox) {
			return
		}
	}
}

// lockPublishing takes r.publishing, or reports false when ctx ends first.
func (r *Reliable) lockPublishing(ctx context.Context) bool {
	select {
	case r.publishing <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (r *Reliable) unlockPublishing() { <-r.publishing }

// idle waits for work: a Publish, Close, or the next wait for replicas when
// written entries wait for them. It reports whether ctx is still live.
func (r *Reliable) idle(ctx context.Context, rp *replication) bool {
	var timeout <-chan time.Time
	if rp.pending() {
		t := time.NewTimer(time.Until(rp.lastTry.Add(rewaitInterval)))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ctx.Done():
		return false
	case <-r.wake:
	case <-timeout:
	}
	return true
}

// expireOutbox drops the outbox entries that reached the max age and returns
// when the next one does (zero: none).
func (r *Reliable) expireOutbox() time.Time {
	var expired dropAcc
	next := r.ob.expire(time.Now(), &expired)
	r.reportDrop(DropMaxAge, &expired)
	return next
}

// reportDrop logs (once per episode) and hands to the hook the entries in acc
// (the outbox counted them).
func (r *Reliable) reportDrop(reason DropReason, acc *dropAcc) {
	if acc.count == 0 {
		return
	}
	d := Drop{Reason: reason, Origin: r.nodeID, Count: acc.count, Bytes: acc.bytes, Oldest: acc.oldest, Seqs: acc.seqs}
	r.drops.add(r.log, d, r.cfg.Outbox)
	if r.cfg.OnDrop != nil {
		r.cfg.OnDrop(d)
	}
}

// dropEpisodes logs drops once at the start of an episode and once at its end (the
// next successful publish), instead of once per message.
type dropEpisodes struct {
	mu       sync.Mutex
	active   map[DropReason]*episode
	rejectOn bool
	rejects  uint64
}

type episode struct {
	count int
	bytes int64
	start time.Time
}

func (d *dropEpisodes) add(log *slog.Logger, drop Drop, cfg OutboxConfig) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.active == nil {
		d.active = make(map[DropReason]*episode)
	}
	ep := d.active[drop.Reason]
	if ep == nil {
		ep = &episode{start: time.Now()}
		d.active[drop.Reason] = ep
		switch drop.Reason {
		case DropMaxAge:
			log.Warn("bus outbox dropping messages older than the max age", "reason", string(drop.Reason), "max_age", cfg.MaxAge, "count", drop.Count)
		case DropOverflow:
			log.Warn("bus outbox full, dropping the oldest messages", "reason", string(drop.Reason),
				"max_messages", cfg.MaxMessages, "max_bytes", cfg.MaxBytes, "count", drop.Count)
		default:
			log.Warn("bus outbox dropping messages", "reason", string(drop.Reason), "count", drop.Count)
		}
	}
	ep.count += drop.Count
	ep.bytes += drop.Bytes
}

// rejected logs the start of an episode of ErrOutboxFull.
func (d *dropEpisodes) rejected(log *slog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rejects++
	if !d.rejectOn {
		d.rejectOn = true
		log.Warn("bus outbox full, rejecting new messages (ErrOutboxFull)")
	}
}

// end closes the active episodes with a summary line each.
func (d *dropEpisodes) end(log *slog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.active) == 0 && !d.rejectOn {
		return
	}
	for reason, ep := range d.active {
		log.Warn("bus outbox drop episode over", "reason", string(reason), "dropped", ep.count, "bytes", ep.bytes,
			"duration", time.Since(ep.start).Round(time.Millisecond))
	}
	clear(d.active)
	if d.rejectOn {
		log.Warn("bus outbox accepting again", "rejected", d.rejects)
		d.rejectOn, d.rejects = false, 0
	}
}
