package engineio

import (
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Why the server refused what a client sent: the reason label of
// durasock_engineio_refused_total and of the rate-limited warning.
const (
	// RefusedPayloadTooLarge: a polling body or WebSocket message over
	// Options.MaxPayload (HTTP 413, WebSocket close 1009).
	RefusedPayloadTooLarge = "payload too large"
	// RefusedBodyTimeout: a polling POST whose body did not arrive within
	// Options.PollingBodyTimeout (HTTP 408).
	RefusedBodyTimeout = "body timeout"
	// RefusedInvalidUTF8: a WebSocket text message or polling body that is not
	// valid UTF-8 (WebSocket close 1007, HTTP 400). Nothing of it is passed on.
	RefusedInvalidUTF8 = "invalid utf-8"
	// RefusedOrigin: a WebSocket handshake from an Origin that CORSOptions does
	// not allow (HTTP 403).
	RefusedOrigin = "origin"
	// RefusedBadPacket: a packet or polling payload that does not decode
	// (HTTP 400, or the WebSocket closed), or a WebSocket frame that breaks
	// RFC 6455 (close 1002, or 1007 for bad compressed data); the session
	// closes with ReasonParseError.
	RefusedBadPacket = "bad packet"
)

var refusalReasons = [...]string{RefusedPayloadTooLarge, RefusedBodyTimeout, RefusedInvalidUTF8, RefusedOrigin, RefusedBadPacket}

// refusals counts refused input by reason, in the order of refusalReasons.
type refusals struct {
	n       [len(refusalReasons)]atomic.Uint64
	logGate atomic.Int64 // Unix nanoseconds of the last warning
}

func refusalIndex(reason string) int {
	for i, r := range refusalReasons {
		if r == reason {
			return i
		}
	}
	panic("engineio: unknown refusal reason " + reason)
}

// Refused returns how many times the server refused what clients sent since
// NewServer, by reason (the Refused* constants).
func (s *Server) Refused() map[string]uint64 {
	m := make(map[string]uint64, len(refusalReasons))
	for i, r := range refusalReasons {
		m[r] = s.refused.n[i].Load()
	}
	return m
}

// noteRefusal counts a refusal and warns, at most once a second: a flood of bad
// requests must not flood the log.
func (s *Server) noteRefusal(reason string, r *http.Request, sid string, detail ...any) {
	total := s.refused.n[refusalIndex(reason)].Add(1)
	now := time.Now().UnixNano()
	last := s.refused.logGate.Load()
	if now-last < int64(time.Second) || !s.refused.logGate.CompareAndSwap(last, now) {
		return
	}
	args := []any{"reason", reason, "sid", sid, "total_this_reason", total}
	if r != nil {
		args = append(args, "remote", r.RemoteAddr)
	}
	s.log.Warn("engineio: client input refused", append(args, detail...)...)
}

// registerRefusalMetrics registers durasock_engineio_refused_total,
// durasock_engineio_send_queue_bytes, durasock_engineio_polls_waiting and
// durasock_engineio_volatile_dropped_total on reg.
func (s *Server) registerRefusalMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, col := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "durasock_engineio_send_queue_bytes",
			Help: "Bytes of messages waiting in the send queues of all Engine.IO sessions of the process (each queue is bounded by SendQueueBytes)."},
			func() float64 { return float64(s.queued.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "durasock_engineio_polls_waiting",
			Help: "Long-polling requests the Engine.IO server holds now, parked until it has something to send."},
			func() float64 { return float64(s.stats.pollsWaiting.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "durasock_engineio_volatile_dropped_total",
			Help: "Volatile messages dropped because their session was not writable at once."},
			func() float64 { return float64(s.stats.volatileDropped.Load()) }),
	} {
		if err := reg.Register(col); err != nil {
			return // reported by registerMetrics, which registers first
		}
	}
	const name, help = "durasock_engineio_refused_total", "Client input the Engine.IO server refused (bodies or messages too large, not valid UTF-8 or not decodable, slow polling bodies, WebSocket handshakes from origins not allowed), by reason."
	for i, reason := range refusalReasons {
		c := &s.refused.n[i]
		col := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": reason}},
			func() float64 { return float64(c.Load()) })
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				s.log.Warn("engineio: registering metrics", slog.Any("error", err))
			}
			return
		}
	}
}
