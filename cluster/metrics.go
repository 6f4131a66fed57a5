package cluster

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Prometheus metrics of a Cluster (durasock_cluster_*).
type metrics struct {
	reg          prometheus.Registerer
	collectors   []prometheus.Collector
	decodeErrors prometheus.Counter
	dropped      prometheus.Counter
	timeouts     prometheus.Counter
}

func newMetrics(c *Cluster, reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		reg: reg,
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_decode_errors_total",
			Help: "Cluster messages dropped because they could not be decoded.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_dropped_requests_total",
			Help: "Requests of other nodes not served because too many were running (MaxServing).",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "durasock_cluster_request_timeouts_total",
			Help: "Cross-node requests of this node that ended without every answer.",
		}),
	}
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
	m.collectors = []prometheus.Collector{m.decodeErrors, m.dropped, m.timeouts, nodes, requests, received}
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
