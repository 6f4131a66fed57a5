package engineio

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats counts what the server did to its clients since NewServer.
type Stats struct {
	// CutSendQueueFull counts sessions closed with ReasonSendQueueFull: a Send
	// found the queue at its message or byte bound.
	CutSendQueueFull uint64
	// CutSlowClient counts sessions closed with ReasonSlowClient: WaitRoom
	// found the queue full for longer than Options.SlowClientTimeout.
	CutSlowClient uint64
	// VolatileDropped counts messages SendVolatile dropped because the
	// session was not writable at once: volatile messages never wait.
	VolatileDropped uint64
	// QueuedBytes is the bytes of messages waiting in the send queues of
	// all sessions now (not counting those being written), the memory that
	// SendQueueBytes bounds per session.
	QueuedBytes int64
	// PollsWaiting is the number of long-polling GET requests the server
	// holds now, parked until it has something to send (or the ping interval
	// ends them).
	PollsWaiting int64
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{CutSendQueueFull: s.stats.cutQueueFull.Load(), CutSlowClient: s.stats.cutSlow.Load(),
		VolatileDropped: s.stats.volatileDropped.Load(), QueuedBytes: s.queued.Load(),
		PollsWaiting: s.stats.pollsWaiting.Load()}
}

type serverStats struct {
	cutQueueFull    atomic.Uint64
	cutSlow         atomic.Uint64
	volatileDropped atomic.Uint64
	pollsWaiting    atomic.Int64
	logGate         atomic.Int64 // Unix nanoseconds of the last rate-limited warning
}

// cut counts a session the server is about to close because of its send queue
// and warns, at most once a second: a broadcast to many stalled clients would
// otherwise log once per client.
func (s *Server) cut(sess *Session, reason, bound string, queued, bytes int) {
	var total uint64
	if reason == ReasonSlowClient {
		total = s.stats.cutSlow.Add(1)
	} else {
		total = s.stats.cutQueueFull.Add(1)
	}
	now := time.Now().UnixNano()
	last := s.stats.logGate.Load()
	if now-last < int64(time.Second) || !s.stats.logGate.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("engineio: client cut", "reason", reason, "bound", bound, "sid", sess.id,
		"queued_messages", queued, "queued_bytes", bytes,
		"send_queue_size", s.opts.SendQueueSize, "send_queue_bytes", s.opts.SendQueueBytes,
		"slow_client_timeout", s.opts.SlowClientTimeout, "cut_total_this_reason", total)
}

// registerMetrics registers durasock_engineio_clients_cut_total on reg. They
// stay registered for the life of the process, as the server's counters do.
func (s *Server) registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	const name, help = "durasock_engineio_clients_cut_total", "Engine.IO sessions closed because their send queue overflowed or stayed full longer than the slow-client timeout, by reason."
	for reason, c := range map[string]*atomic.Uint64{ReasonSendQueueFull: &s.stats.cutQueueFull, ReasonSlowClient: &s.stats.cutSlow} {
		col := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": reason}},
			func() float64 { return float64(c.Load()) })
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				s.log.Warn("engineio: metrics already registered (one Server per Registerer); not exported", slog.Any("error", err))
				return
			}
			s.log.Warn("engineio: registering metrics", slog.Any("error", err))
			return
		}
	}
}
