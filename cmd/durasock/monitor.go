package main

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/bus"
)

// monitor watches the bus for the operator: it warns while Redis cannot be
// reached (at startup too, where the bus has no state change to log), keeps
// the history of bus states, and samples the numbers the dashboard charts.
type monitor struct {
	a     *app
	start time.Time
	// warnAfter is how long Redis may be unreachable before the first warning;
	// warnEvery the interval of the warnings after it.
	warnAfter, warnEvery time.Duration
	sampleEvery          time.Duration

	connectedOnce atomic.Bool
	// routingReady: with interest routing, this node knew every live node's
	// interest once (cluster.AwaitRoutingReady).
	routingReady atomic.Bool

	mu          sync.Mutex
	transitions []transition // oldest first, at most maxTransitions
	samples     []sample     // ring, at most maxSamples
	next        int          // next slot of samples once full

	// Owned by run.
	downSince, lastWarn time.Time
	warned              bool
}

const (
	maxTransitions = 100
	maxSamples     = 300 // 10 minutes at one sample every 2 s
)

// transition is one bus state change.
type transition struct {
	At    time.Time `json:"at"`
	State string    `json:"state"`
	Error string    `json:"error,omitempty"`
}

// sample is one point of the dashboard's charts.
type sample struct {
	T             int64   `json:"t"` // Unix milliseconds
	State         string  `json:"state,omitempty"`
	Clients       int     `json:"clients"`
	OtherNodes    int     `json:"other_nodes"`
	OutboxMsgs    int     `json:"outbox_messages"`
	OutboxOldestS float64 `json:"outbox_oldest_age_seconds"`
	Gaps          uint64  `json:"gap_messages"`
	Drops         uint64  `json:"dropped"`
	EventsIn      float64 `json:"events_received"`
	EventsOut     float64 `json:"events_sent"`
}

func newMonitor(a *app) *monitor {
	return &monitor{a: a, start: time.Now(), warnAfter: 3 * time.Second, warnEvery: 30 * time.Second, sampleEvery: 2 * time.Second}
}

// run watches until ctx is done.
func (m *monitor) run(ctx context.Context) {
	check := time.NewTicker(time.Second)
	defer check.Stop()
	sampleT := time.NewTicker(m.sampleEvery)
	defer sampleT.Stop()
	var changed <-chan struct{}
	if m.a.bus != nil {
		changed = m.a.bus.StateChanged()
		st := m.a.bus.Status()
		m.record(st)
	}
	m.sample()
	for {
		if m.a.bus != nil {
			m.check(time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-check.C:
		case <-sampleT.C:
			m.sample()
		case <-changed:
			changed = m.a.bus.StateChanged()
			m.record(m.a.bus.Status())
		}
	}
}

// record notes the bus state in the history.
func (m *monitor) record(st bus.Status) {
	if st.State == bus.Connected {
		m.connectedOnce.Store(true)
	}
	name := st.State.String()
	if st.State == bus.Reconnecting && !m.connectedOnce.Load() {
		name = "connecting"
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if n := len(m.transitions); n > 0 && m.transitions[n-1].State == name {
		return
	}
	m.transitions = append(m.transitions, transition{At: st.Since, State: name, Error: m.a.scrub.publicError(st.LastError)})
	if len(m.transitions) > maxTransitions {
		m.transitions = append(m.transitions[:0], m.transitions[len(m.transitions)-maxTransitions:]...)
	}
}

// check warns, at most every warnEvery, while the bus cannot reach Redis.
func (m *monitor) check(now time.Time) {
	st := m.a.bus.Status()
	switch st.State {
	case bus.Connected:
		m.connectedOnce.Store(true)
		if m.warned {
			m.a.log.Info("Redis reachable again", "redis", m.a.redisShown, "unreachable_for", now.Sub(m.downSince).Round(time.Second))
		}
		m.downSince, m.warned = time.Time{}, false
		return
	case bus.Closed:
		return
	}
	if m.downSince.IsZero() {
		m.downSince = st.Since
		if m.downSince.IsZero() || m.downSince.After(now) {
			m.downSince = now
		}
	}
	down := now.Sub(m.downSince)
	if down < m.warnAfter || (m.warned && now.Sub(m.lastWarn) < m.warnEvery) {
		return
	}
	m.warned, m.lastWarn = true, now
	msg := "Redis unreachable: events for other nodes wait in the outbox"
	if !m.connectedOnce.Load() {
		msg = "cannot reach Redis since start: events for other nodes wait in the outbox"
		if m.a.cfg.ReadyNeedsBus {
			msg += "; /readyz answers 503 until Redis answers"
		}
	}
	attrs := []any{
		slog.String("redis", m.a.redisShown),
		slog.Duration("for", down.Round(time.Second)),
		slog.String("state", st.State.String()),
		slog.Int("outbox_messages", st.OutboxLen),
		slog.Duration("outbox_oldest_age", st.OutboxOldest.Round(time.Millisecond)),
	}
	if st.LastError != "" {
		attrs = append(attrs, slog.String("error", m.a.scrub.scrub(st.LastError)))
	}
	attrs = append(attrs, slog.Duration("next_warning_in", m.warnEvery))
	m.a.log.Warn(msg, attrs...)
}

// sample adds a point to the charts.
func (m *monitor) sample() {
	s := sample{T: time.Now().UnixMilli(), Clients: m.a.sio.Engine().Count()}
	if m.a.bus != nil {
		st := m.a.bus.Status()
		stats := m.a.bus.Stats()
		s.State = st.State.String()
		s.OutboxMsgs = st.OutboxLen
		s.OutboxOldestS = st.OutboxOldest.Seconds()
		s.Gaps = stats.GapMessages
		s.Drops = stats.DroppedMaxAge + stats.DroppedOverflow + stats.DroppedClosed
		s.OtherNodes = len(m.a.cluster.Nodes())
	}
	sums := m.a.metricSums("durasock_socketio_events_received_total", "durasock_socketio_events_sent_total")
	s.EventsIn, s.EventsOut = sums["durasock_socketio_events_received_total"], sums["durasock_socketio_events_sent_total"]
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) < maxSamples {
		m.samples = append(m.samples, s)
		return
	}
	m.samples[m.next] = s
	m.next = (m.next + 1) % maxSamples
}

// history returns the transitions and the samples, oldest first.
func (m *monitor) history() ([]transition, []sample) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := append([]transition(nil), m.transitions...)
	s := make([]sample, 0, len(m.samples))
	s = append(s, m.samples[m.next:]...)
	s = append(s, m.samples[:m.next]...)
	return t, s
}
