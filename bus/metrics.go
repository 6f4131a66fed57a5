package bus

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are the bus's monotonic counts, read by Stats and by the collector.
type counters struct {
	accepted, rejected, published, replayed      atomic.Uint64
	droppedMaxAge, droppedOverflow, droppedClose atomic.Uint64
	received, duplicates, gaps, gapMessages      atomic.Uint64
	decodeErrors, probesSent, probeFailures      atomic.Uint64
	reconnects, sent, handlerPanics              atomic.Uint64
	recoveries, diskLoaded, diskErrors           atomic.Uint64
	tailGaps, goneSilent, goneReplaced           atomic.Uint64
	goneClosed                                   atomic.Uint64
	nodeIDConflicts, peerIDConflicts             atomic.Uint64
	underReplicated, replicaWaits                atomic.Uint64
	primaryChanges                               atomic.Uint64
	republished, republishes, retainEvicted      atomic.Uint64
}

// Stats are the counters of a bus since New.
type Stats struct {
	// Accepted is the number of Publish calls that returned nil.
	Accepted uint64
	// Rejected is the number of Publish calls that returned ErrOutboxFull or
	// ErrTooLarge.
	Rejected uint64
	// Published is the number of accepted messages the broker acknowledged.
	Published uint64
	// Replayed counts frames published again after a failed publish.
	Replayed uint64
	// Dropped counts accepted messages dropped, by reason.
	DroppedMaxAge, DroppedOverflow, DroppedClosed uint64
	// Received counts messages delivered to the Handler (both planes).
	Received uint64
	// Duplicates counts frames dropped because their seq was already delivered.
	Duplicates uint64
	// Gaps counts sequence gaps; GapMessages the messages missing in them.
	Gaps, GapMessages uint64
	// TailGaps counts the gaps (included in Gaps) found by another node's probe
	// announcing more than arrived: its last messages were lost.
	TailGaps uint64
	// NodesGoneSilent counts runs of other nodes that sent probes and then fell
	// silent past the liveness window (counted in connected time);
	// NodesGoneReplaced the runs that fell silent while a newer run of the same
	// id spoke; NodesClosed the runs that fell silent after announcing their
	// Close.
	NodesGoneSilent, NodesGoneReplaced, NodesClosed uint64
	// NodeIDConflicts counts frames received under this node's id from another
	// process; PeerIDConflicts the times a run of another id spoke again after a
	// newer run of that id had replaced it (two processes with one id).
	NodeIDConflicts, PeerIDConflicts uint64
	// DecodeErrors counts frames that were not valid envelopes.
	DecodeErrors uint64
	// ProbesSent counts probe rounds published; ProbeFailures the rounds missed
	// and the failed pings or probe publishes.
	ProbesSent, ProbeFailures uint64
	// Reconnects counts recoveries after an error: publishes that succeeded after
	// failures, subscriptions started again, pings that answered again.
	Reconnects uint64
	// BrokerReturns counts readiness pings that found the broker answering again
	// after a failed ping; each one ended the pending backoff waits.
	BrokerReturns uint64
	// Sent counts successful Send calls.
	Sent uint64
	// HandlerPanics counts messages whose handler panicked (recovered and logged).
	HandlerPanics uint64
	// DiskLoaded counts messages an earlier process of this node had accepted
	// and not published, loaded from the disk outbox at New to be published.
	DiskLoaded uint64
	// DiskErrors counts failures of the disk outbox: Publish calls refused
	// because the record could not be written, and fsyncs that failed.
	DiskErrors uint64
	// PublishLatencyCount is the number of observations in the publish latency
	// histogram, PublishLatencySum their sum.
	PublishLatencyCount uint64
	PublishLatencySum   time.Duration
	// UnderReplicated counts episodes of under-replication (Status.UnderReplicated
	// turned on); ReplicaWaits counts waits for replicas that fell short again.
	UnderReplicated, ReplicaWaits uint64
	// PrimaryChanges counts the times messages written without replicas'
	// confirmation turned out to be on a primary that no longer serves (a
	// failover, a restart), or the transport refused a batch because the
	// primary serving its partition changed (a Cluster slot moved): what the
	// old primary may have lost was written again, ahead of newer ones.
	PrimaryChanges uint64
	// Republished counts messages published again after the connection broke
	// (Config.Retain), in Republishes episodes (a failed republish counts
	// nothing: it is tried again whole); RetainEvicted the acknowledged
	// messages forgotten before they could be published again: beyond the
	// retention bounds, accepted longer than Outbox.MaxAge before a republish
	// (logged), or retained at Close while a republish was due (logged).
	Republished, Republishes, RetainEvicted uint64
}

// Stats returns the counters.
func (r *Reliable) Stats() Stats {
	c := &r.c
	s := Stats{
		Accepted:          c.accepted.Load(),
		Rejected:          c.rejected.Load(),
		Published:         c.published.Load(),
		Replayed:          c.replayed.Load(),
		DroppedMaxAge:     c.droppedMaxAge.Load(),
		DroppedOverflow:   c.droppedOverflow.Load(),
		DroppedClosed:     c.droppedClose.Load(),
		Received:          c.received.Load(),
		Duplicates:        c.duplicates.Load(),
		Gaps:              c.gaps.Load(),
		GapMessages:       c.gapMessages.Load(),
		TailGaps:          c.tailGaps.Load(),
		NodesGoneSilent:   c.goneSilent.Load(),
		NodesGoneReplaced: c.goneReplaced.Load(),
		NodesClosed:       c.goneClosed.Load(),
		NodeIDConflicts:   c.nodeIDConflicts.Load(),
		PeerIDConflicts:   c.peerIDConflicts.Load(),
		DecodeErrors:      c.decodeErrors.Load(),
		ProbesSent:        c.probesSent.Load(),
		ProbeFailures:     c.probeFailures.Load(),
		Reconnects:        c.reconnects.Load(),
		BrokerReturns:     c.recoveries.Load(),
		Sent:              c.sent.Load(),
		HandlerPanics:     c.handlerPanics.Load(),
		DiskLoaded:        c.diskLoaded.Load(),
		DiskErrors:        c.diskErrors.Load(),
		UnderReplicated:   c.underReplicated.Load(),
		ReplicaWaits:      c.replicaWaits.Load(),
		PrimaryChanges:    c.primaryChanges.Load(),
		Republished:       c.republished.Load(),
		Republishes:       c.republishes.Load(),
		RetainEvicted:     c.retainEvicted.Load(),
	}
	s.PublishLatencyCount = r.m.latencyCount.Load()
	s.PublishLatencySum = time.Duration(r.m.latencySumNanos.Load())
	return s
}

// metrics is the prometheus.Collector of a bus. Counters and gauges are read at
// scrape time from the bus itself, so the hot path pays only atomic adds.
type metrics struct {
	r               *Reliable
	latency         prometheus.Histogram
	latencyCount    atomic.Uint64
	latencySumNanos atomic.Int64

	state, outboxMessages, outboxBytes, outboxOldest *prometheus.Desc
	dropped, reconnects, replayed, duplicates, gaps  *prometheus.Desc
	gapMessages, probeFailures, received, decodeErr  *prometheus.Desc
	accepted, rejected, published, handlerPanics     *prometheus.Desc
	brokerReturns, tailGaps, nodesGone               *prometheus.Desc
	nodeIDConflicts, nodeIDConflict, peerIDConflicts *prometheus.Desc
	diskLoaded, diskErrors                           *prometheus.Desc
	underReplicated, unreplicated, replicaWaits      *prometheus.Desc
	primaryChanges                                   *prometheus.Desc
	republished, retainEvicted                       *prometheus.Desc
	retainedMessages, retainedBytes                  *prometheus.Desc
}

func newMetrics(r *Reliable) *metrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("durasock_"+name, help, labels, nil)
	}
	m := &metrics{
		r: r,
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "durasock_bus_publish_latency_seconds",
			Help:    "Time from Publish accepting a message to the broker acknowledging it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		state:            d("bus_state", "1 for the current bus state, 0 for the others.", "state"),
		outboxMessages:   d("outbox_messages", "Messages in the outbox, not yet acknowledged by the broker."),
		outboxBytes:      d("outbox_bytes", "Encoded bytes in the outbox."),
		outboxOldest:     d("outbox_oldest_age_seconds", "Age of the oldest message in the outbox (0 when empty)."),
		dropped:          d("bus_dropped_total", "Accepted messages dropped, by reason (max_age, overflow, closed).", "reason"),
		reconnects:       d("bus_reconnects_total", "Recoveries after broker errors (publish, subscribe, ping)."),
		replayed:         d("bus_replayed_total", "Frames published again after a failed publish."),
		duplicates:       d("bus_duplicates_total", "Received frames dropped as duplicates."),
		gaps:             d("bus_gaps_total", "Sequence gaps detected in messages of other nodes."),
		gapMessages:      d("bus_gap_messages_total", "Messages of other nodes missing in sequence gaps."),
		probeFailures:    d("bus_probe_failures_total", "Liveness probes missed and failed pings."),
		received:         d("bus_received_total", "Messages delivered to the handler."),
		decodeErr:        d("bus_decode_errors_total", "Received frames that were not valid envelopes."),
		accepted:         d("bus_accepted_total", "Messages accepted by Publish."),
		rejected:         d("bus_rejected_total", "Publish calls rejected at once (outbox full, too large)."),
		published:        d("bus_published_total", "Accepted messages acknowledged by the broker."),
		handlerPanics:    d("bus_handler_panics_total", "Received messages whose handler panicked (recovered)."),
		diskLoaded:       d("bus_disk_loaded_total", "Messages of an earlier process of this node loaded from the disk outbox to be published."),
		diskErrors:       d("bus_disk_errors_total", "Disk outbox failures: Publish refused for a failed write, failed fsyncs."),
		brokerReturns:    d("bus_broker_returns_total", "Pings that found the broker answering again after a failure (each ends the pending backoff waits)."),
		tailGaps:         d("bus_tail_gaps_total", "Sequence gaps (included in bus_gaps_total) found by another node's probe announcing more than arrived."),
		nodesGone:        d("bus_nodes_gone_total", "Runs of other nodes that fell silent past the liveness window, by reason (silent: it sent probes; replaced: a newer run of its id speaks; closed: it announced its Close).", "reason"),
		nodeIDConflicts:  d("bus_node_id_conflicts_total", "Frames received under this node's id from another process (node ids must be unique)."),
		nodeIDConflict:   d("bus_node_id_conflict", "1 while another process used this node's id within the last minute."),
		peerIDConflicts:  d("bus_peer_id_conflicts_total", "Times a run of another node id spoke again after a newer run of that id replaced it (two processes with one id)."),
		underReplicated:  d("bus_under_replicated", "1 while messages the broker wrote wait for its replicas to acknowledge them (WaitReplicas)."),
		unreplicated:     d("bus_unreplicated_messages", "Messages written by the broker, kept in the outbox until its replicas acknowledge them."),
		replicaWaits:     d("bus_replica_waits_total", "Waits for replicas that fell short (each retried, never published again)."),
		primaryChanges:   d("bus_primary_changes_total", "Times messages written without replicas' confirmation were found on a primary that no longer serves, or a batch was refused because the primary serving its partition changed (a Cluster slot moved); what the old primary may have lost was written again, ahead of newer ones."),
		republished:      d("bus_republished_total", "Acknowledged messages published again after the broker connection broke (the broker may have lost them; receivers skip those they have)."),
		retainEvicted:    d("bus_retained_evicted_total", "Acknowledged messages forgotten before they could be published again: beyond the retention bounds, older than the outbox max age at a republish, or retained at Close while a republish was due."),
		retainedMessages: d("bus_retained_messages", "Acknowledged messages kept to be published again if the broker connection breaks."),
		retainedBytes:    d("bus_retained_bytes", "Encoded bytes of the retained messages."),
	}
	m.underReplicated = d("bus_under_replicated", "1 while messages the broker wrote wait for its replicas to acknowledge them (WaitReplicas).")
	m.unreplicated = d("bus_unreplicated_messages", "Messages written by the broker, kept in the outbox until its replicas acknowledge them.")
	m.replicaWaits = d("bus_replica_waits_total", "Waits for replicas that fell short (each retried, never published again).")
	return m
}

func (m *metrics) observeLatency(d time.Duration) {
	m.latency.Observe(d.Seconds())
	m.latencyCount.Add(1)
	m.latencySumNanos.Add(int64(d))
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.state, m.outboxMessages, m.outboxBytes, m.outboxOldest,
		m.dropped, m.reconnects, m.replayed, m.duplicates, m.gaps, m.gapMessages, m.probeFailures,
		m.received, m.decodeErr, m.accepted, m.rejected, m.published, m.handlerPanics, m.brokerReturns,
		m.tailGaps, m.nodesGone, m.nodeIDConflicts, m.nodeIDConflict, m.peerIDConflicts,
		m.diskLoaded, m.diskErrors, m.underReplicated, m.unreplicated, m.replicaWaits, m.primaryChanges,
		m.republished, m.retainEvicted, m.retainedMessages, m.retainedBytes} {
		ch <- d
	}
	m.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	r := m.r
	state := r.sm.current()
	for _, s := range []State{Connected, Reconnecting, Failed, Closed} {
		v := 0.0
		if s == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(m.state, prometheus.GaugeValue, v, s.String())
	}
	n, bytes, oldest := r.ob.snapshot(time.Now())
	ch <- prometheus.MustNewConstMetric(m.outboxMessages, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(m.outboxBytes, prometheus.GaugeValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(m.outboxOldest, prometheus.GaugeValue, oldest.Seconds())
	s := r.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(m.dropped, s.DroppedMaxAge, string(DropMaxAge))
	counter(m.dropped, s.DroppedOverflow, string(DropOverflow))
	counter(m.dropped, s.DroppedClosed, string(DropClosed))
	counter(m.reconnects, s.Reconnects)
	counter(m.replayed, s.Replayed)
	counter(m.duplicates, s.Duplicates)
	counter(m.gaps, s.Gaps)
	counter(m.gapMessages, s.GapMessages)
	counter(m.probeFailures, s.ProbeFailures)
	counter(m.received, s.Received)
	counter(m.decodeErr, s.DecodeErrors)
	counter(m.accepted, s.Accepted)
	counter(m.rejected, s.Rejected)
	counter(m.published, s.Published)
	counter(m.handlerPanics, s.HandlerPanics)
	counter(m.brokerReturns, s.BrokerReturns)
	counter(m.tailGaps, s.TailGaps)
	counter(m.nodesGone, s.NodesGoneSilent, goneSilent)
	counter(m.nodesGone, s.NodesGoneReplaced, goneReplaced)
	counter(m.nodesGone, s.NodesClosed, goneClosed)
	counter(m.nodeIDConflicts, s.NodeIDConflicts)
	counter(m.peerIDConflicts, s.PeerIDConflicts)
	counter(m.diskLoaded, s.DiskLoaded)
	counter(m.diskErrors, s.DiskErrors)
	conflict := 0.0
	if on, _ := r.recv.nodeIDConflictNow(time.Now()); on {
		conflict = 1
	}
	ch <- prometheus.MustNewConstMetric(m.nodeIDConflict, prometheus.GaugeValue, conflict)
	counter(m.replicaWaits, s.ReplicaWaits)
	counter(m.primaryChanges, s.PrimaryChanges)
	counter(m.republished, s.Republished)
	counter(m.retainEvicted, s.RetainEvicted)
	keptN, keptBytes := r.kept.snapshot()
	ch <- prometheus.MustNewConstMetric(m.retainedMessages, prometheus.GaugeValue, float64(keptN))
	ch <- prometheus.MustNewConstMetric(m.retainedBytes, prometheus.GaugeValue, float64(keptBytes))
	under := 0.0
	if r.underReplicated.Load() {
		under = 1
	}
	ch <- prometheus.MustNewConstMetric(m.underReplicated, prometheus.GaugeValue, under)
	_, unrepl := r.ob.written()
	ch <- prometheus.MustNewConstMetric(m.unreplicated, prometheus.GaugeValue, float64(unrepl))
	m.latency.Collect(ch)
}
