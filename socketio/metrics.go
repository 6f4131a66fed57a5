package socketio

import (
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/durasock/durasock/parser"
)

// Socket.IO-level metrics, kept when Options.Registerer is set (and only then:
// without it the hooks below are a nil check). They count packets at the two
// places every packet passes: the decoder's output (onMessage) and the write to a
// connection (conn.write), so that no code path can bypass them.
//
//	durasock_socketio_connections{namespace}            gauge: sockets connected now
//	durasock_socketio_connects_total{namespace}         sockets that joined a namespace
//	durasock_socketio_connect_errors_total{namespace}   CONNECT refused (middleware, unknown namespace, ...)
//	durasock_socketio_events_received_total{namespace}  EVENT packets from clients
//	durasock_socketio_events_sent_total{namespace}      EVENT packets written to clients (one per recipient)
//	durasock_socketio_acks_received_total{namespace}    ACK packets from clients
//	durasock_socketio_acks_sent_total{namespace}        ACK packets written to clients
//	durasock_socketio_parse_errors_total                connections closed for a malformed packet
//	durasock_socketio_sessions_recovered_total{namespace}     clients that asked to recover their session and did
//	durasock_socketio_sessions_not_recovered_total{namespace} clients that asked to and got a new session instead
//
// The namespace label takes at most maxMetricNamespaces distinct values (the
// first seen); further namespaces, from a dynamic parent with many names, are
// counted under "other", so that the series stay bounded.

// maxMetricNamespaces bounds the values of the namespace label.
const maxMetricNamespaces = 64

// mainNamespace is "/" as packet bytes.
var mainNamespace = []byte("/")

// otherNamespace is the label of the namespaces past maxMetricNamespaces.
const otherNamespace = "other"

// nsCounters are the counters of one namespace label.
type nsCounters struct {
	connects, connectErrors atomic.Uint64
	eventsIn, eventsOut     atomic.Uint64
	acksIn, acksOut         atomic.Uint64
	recovered, notRecovered atomic.Uint64
}

type metrics struct {
	srv *Server
	// byNsp maps a namespace label to its counters. The map is never changed
	// once stored (a new label stores a copy), so that the per-packet lookup
	// takes no lock and, with a []byte key, allocates nothing.
	byNsp       atomic.Pointer[map[string]*nsCounters]
	mu          sync.Mutex // serializes the copies
	parseErrors atomic.Uint64
}

var (
	descConnections = prometheus.NewDesc("durasock_socketio_connections",
		"Sockets connected to a namespace of this server now.", []string{"namespace"}, nil)
	descConnects = prometheus.NewDesc("durasock_socketio_connects_total",
		"Sockets that joined a namespace (CONNECT answered).", []string{"namespace"}, nil)
	descConnectErrors = prometheus.NewDesc("durasock_socketio_connect_errors_total",
		"CONNECT requests refused with CONNECT_ERROR (middleware, unknown namespace, too many namespaces).", []string{"namespace"}, nil)
	descEventsIn = prometheus.NewDesc("durasock_socketio_events_received_total",
		"EVENT packets received from clients.", []string{"namespace"}, nil)
	descEventsOut = prometheus.NewDesc("durasock_socketio_events_sent_total",
		"EVENT packets written to clients, one per recipient.", []string{"namespace"}, nil)
	descAcksIn = prometheus.NewDesc("durasock_socketio_acks_received_total",
		"ACK packets received from clients (answers to EmitWithAck).", []string{"namespace"}, nil)
	descAcksOut = prometheus.NewDesc("durasock_socketio_acks_sent_total",
		"ACK packets written to clients (Event.Ack).", []string{"namespace"}, nil)
	descParseErrors = prometheus.NewDesc("durasock_socketio_parse_errors_total",
		"Connections closed because a client sent a malformed Socket.IO packet.", nil, nil)
	descRecovered = prometheus.NewDesc("durasock_socketio_sessions_recovered_total",
		"Clients that asked to recover their session (connection state recovery) and did, with the events they missed.", []string{"namespace"}, nil)
	descNotRecovered = prometheus.NewDesc("durasock_socketio_sessions_not_recovered_total",
		"Clients that asked to recover their session and got a new one instead (expired, unknown, or not restorable exactly): the events they missed while away are not delivered to them.", []string{"namespace"}, nil)
)

// newMetrics registers the Socket.IO metrics of srv on reg, or returns nil when
// reg is nil.
func newMetrics(srv *Server, reg prometheus.Registerer, log *slog.Logger) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{srv: srv}
	empty := map[string]*nsCounters{}
	m.byNsp.Store(&empty)
	if err := reg.Register(m); err != nil {
		if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			log.Warn("socketio: metrics already registered (one Server per Registerer); not exported", slog.Any("error", err))
		} else {
			log.Warn("socketio: registering metrics", slog.Any("error", err))
		}
	}
	return m
}

func (m *metrics) counters(nsp string) *nsCounters {
	if c := (*m.byNsp.Load())[nsp]; c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.byNsp.Load()
	if c := old[nsp]; c != nil {
		return c
	}
	if len(old) >= maxMetricNamespaces {
		nsp = otherNamespace
		if c := old[nsp]; c != nil {
			return c
		}
	}
	next := make(map[string]*nsCounters, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	c := &nsCounters{}
	next[nsp] = c
	m.byNsp.Store(&next)
	return c
}

// countersOf is counters for a namespace name still in the packet's bytes.
func (m *metrics) countersOf(nsp []byte) *nsCounters {
	if c := (*m.byNsp.Load())[string(nsp)]; c != nil {
		return c
	}
	return m.counters(string(nsp))
}

// received counts a decoded packet from a client.
func (m *metrics) received(p *parser.Packet) {
	if m == nil {
		return
	}
	switch p.Type {
	case parser.Event, parser.BinaryEvent:
		m.counters(p.Namespace).eventsIn.Add(1)
	case parser.Ack, parser.BinaryAck:
		m.counters(p.Namespace).acksIn.Add(1)
	}
}

// recovery counts a client that asked to recover its session in namespace
// nsp: recovered, or given a new session.
func (m *metrics) recovery(nsp string, recovered bool) {
	if m == nil {
		return
	}
	if recovered {
		m.counters(nsp).recovered.Add(1)
	} else {
		m.counters(nsp).notRecovered.Add(1)
	}
}

// parseError counts a connection closed for a malformed packet.
func (m *metrics) parseError() {
	if m != nil {
		m.parseErrors.Add(1)
	}
}

// sent counts an encoded packet written to a client. It reads the packet type
// and namespace from the head of the text (type digit, "N-" for binary
// packets, "/nsp," for a namespace other than "/").
func (m *metrics) sent(e *parser.Encoded) {
	if m == nil || len(e.Text) == 0 {
		return
	}
	t := e.Text
	typ := t[0]
	switch typ {
	case '0', '2', '3', '4', '5', '6':
	default:
		return
	}
	t = t[1:]
	if typ == '5' || typ == '6' {
		for len(t) > 0 && t[0] >= '0' && t[0] <= '9' {
			t = t[1:]
		}
		if len(t) > 0 && t[0] == '-' {
			t = t[1:]
		}
	}
	nsp := mainNamespace
	if len(t) > 0 && t[0] == '/' {
		end := 0
		for end < len(t) && t[end] != ',' {
			end++
		}
		nsp = t[:end]
	}
	c := m.countersOf(nsp)
	switch typ {
	case '0':
		c.connects.Add(1)
	case '4':
		c.connectErrors.Add(1)
	case '2', '5':
		c.eventsOut.Add(1)
	case '3', '6':
		c.acksOut.Add(1)
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descConnects, descConnectErrors,
		descEventsIn, descEventsOut, descAcksIn, descAcksOut, descParseErrors, descRecovered, descNotRecovered} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for nsp, c := range *m.byNsp.Load() {
		counter := func(d *prometheus.Desc, v *atomic.Uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v.Load()), nsp)
		}
		counter(descConnects, &c.connects)
		counter(descConnectErrors, &c.connectErrors)
		counter(descEventsIn, &c.eventsIn)
		counter(descEventsOut, &c.eventsOut)
		counter(descAcksIn, &c.acksIn)
		counter(descAcksOut, &c.acksOut)
		counter(descRecovered, &c.recovered)
		counter(descNotRecovered, &c.notRecovered)
	}
	for nsp, n := range m.connections() {
		ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(n), nsp)
	}
	ch <- prometheus.MustNewConstMetric(descParseErrors, prometheus.CounterValue, float64(m.parseErrors.Load()))
}

// connections counts the connected sockets per namespace label.
func (m *metrics) connections() map[string]int {
	m.srv.mu.RLock()
	list := make([]*Namespace, 0, len(m.srv.nsps))
	for _, n := range m.srv.nsps {
		list = append(list, n)
	}
	m.srv.mu.RUnlock()
	out := make(map[string]int, len(list))
	for _, n := range list {
		n.mu.RLock()
		k := len(n.sockets)
		n.mu.RUnlock()
		label := n.name
		if _, ok := (*m.byNsp.Load())[label]; !ok && len(out) >= maxMetricNamespaces {
			label = otherNamespace
		}
		out[label] += k
	}
	return out
}
