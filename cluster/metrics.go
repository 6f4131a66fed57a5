package cluster

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of a Cluster (durasock_cluster_*).
type metrics struct {
	reg           prometheus.Registerer
	collectors    []prometheus.Collector
	decodeErrors  prometheus.Counter
	dropped       *prometheus.CounterVec
	timeouts      prometheus.Counter
	expired       prometheus.Counter
	refusedRelays prometheus.Counter
	routed        prometheus.Counter
	fanout        prometheus.Histogram
	unrouted      prometheus.Counter
}

func newMetrics(c *Cluster, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_decode_errors_total",
			Help: "Cluster messages dropped because they could not be decoded.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "durasock_cluster_dropped_requests_total",
			Help: "Answers to requests of other nodes dropped because their lane (control or replies) was full (MaxServing).",
		}, []string{"lane"}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_request_timeouts_total",
			Help: "Cross-node requests of this node that ended without every answer.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_expired_requests_total",
			Help: "Requests of other nodes not served because they arrived after their requester's deadline.",
		}),
		refusedRelays: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_relays_refused_total",
			Help: "Broadcasts with acks of other nodes refused because MaxRelays were waiting for acks.",
		}),
		routed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_routed_messages_total",
			Help: "Messages of routed namespaces (InterestRouting) this node published to the inboxes of the nodes they concern.",
		}),
		fanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "durasock_cluster_routed_fanout",
			Help:    "Inbox writes per routed message: how many nodes' inboxes it was written to.",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128},
		}),
		unrouted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_routed_unready_total",
			Help: "Routed messages this node published to no node before it knew every live node's interest (AwaitRoutingReady had not returned): other nodes' sockets may have missed them.",
		}),
	}
	// Both lanes are visible from the start, at 0.
	m.dropped.WithLabelValues(laneControl)
	m.dropped.WithLabelValues(laneReplies)
	nodes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "durasock_cluster_nodes",
		Help: "Other nodes of the cluster known to be alive.",
	}, func() float64 { return float64(len(c.Nodes())) })
	requests := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "durasock_cluster_requests_total",
		Help: "Cross-node requests made by this node (fetch sockets, server-side emit with replies, broadcast with acks).",
	}, func() float64 { return float64(c.stats.requests.Load()) })
	received := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "durasock_cluster_messages_received_total",
		Help: "Cluster messages of other nodes decoded and applied or answered.",
	}, func() float64 { return float64(c.stats.received.Load()) })
	relays := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "durasock_cluster_relays",
		Help: "Broadcasts with acks of other nodes waiting for the acks of this node's sockets (bounded by MaxRelays).",
	}, func() float64 { return float64(c.relayCount()) })
	outages := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "durasock_cluster_routing_outages_total",
		Help: "Nodes (processes) that spoke again after this node forgot their interest (InterestRouting; silent for longer than InterestKeep without a goodbye): what this node published for their sockets meanwhile reached no inbox.",
	}, func() float64 { return float64(c.stats.routingOutages.Load()) })
	timeouts := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "durasock_cluster_node_timeouts_total",
		Help: "Nodes this node stopped waiting for without a goodbye (silent for NodeTimeout, or their membership entry turned stale); each is logged as a warning.",
	}, func() float64 { return float64(c.stats.nodeTimeouts.Load()) })
	inboxWrites := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "durasock_cluster_inbox_writes_total",
		Help: "Inbox writes of the routed messages this node published (InterestRouting).",
	}, func() float64 { return float64(c.stats.inboxWrites.Load()) })
	m.collectors = []prometheus.Collector{m.decodeErrors, m.dropped, m.timeouts, m.expired, m.refusedRelays,
		m.routed, m.fanout, m.unrouted, nodes, requests, received, relays, inboxWrites, outages, timeouts}
	if reg == nil {
		return m, nil
	}
	for i, col := range m.collectors {
		if err := reg.Register(col); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("cluster: metrics already registered (one Cluster per Registerer): %w", err)
			}
			return nil, fmt.Errorf("cluster: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	for _, col := range m.collectors {
		m.reg.Unregister(col)
	}
}
