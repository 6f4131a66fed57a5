package socketio

import (
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/parser"
	"github.com/prometheus/client_golang/prometheus"
)

// Why a connection was closed for what its client sent: the reason label of
// durasock_socketio_clients_cut_total and of the rate-limited warning.
const (
	// ReasonAttachmentsTooLarge: the binary attachments of one packet
	// exceeded Options.MaxAttachmentBytes while they arrived.
	ReasonAttachmentsTooLarge = "attachments too large"
)

// cutReasons are the reasons counted, in the order of serverCuts.n.
var cutReasons = [...]string{ReasonParseError, ReasonAttachmentsTooLarge}

type serverCuts struct {
	n       [len(cutReasons)]atomic.Uint64
	logGate atomic.Int64 // Unix nanoseconds of the last warning
}

// Cut returns how many connections the server closed since NewServer because
// of what their clients sent, by reason (ReasonParseError: a malformed packet,
// too many attachments, text that is not UTF-8; ReasonAttachmentsTooLarge).
func (s *Server) Cut() map[string]uint64 {
	m := make(map[string]uint64, len(cutReasons))
	for i, r := range cutReasons {
		m[r] = s.cuts.n[i].Load()
	}
	return m
}

// cutReason is the close reason for a decoding error.
func cutReason(err error) string {
	if errors.Is(err, parser.ErrAttachmentsTooLarge) {
		return ReasonAttachmentsTooLarge
	}
	return ReasonParseError
}

// noteCut counts a connection closed for reason and warns, at most once a
// second.
func (s *Server) noteCut(reason, sid string, err error) {
	i := 0
	for j, r := range cutReasons {
		if r == reason {
			i = j
		}
	}
	total := s.cuts.n[i].Add(1)
	now := time.Now().UnixNano()
	last := s.cuts.logGate.Load()
	if now-last < int64(time.Second) || !s.cuts.logGate.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("socketio: client cut", "reason", reason, "sid", sid, "err", err,
		"max_attachments", s.opts.MaxAttachments, "max_attachment_bytes", s.opts.MaxAttachmentBytes,
		"cut_total_this_reason", total)
}

// registerMetrics registers durasock_socketio_clients_cut_total on reg.
func (s *Server) registerMetrics(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	const name, help = "durasock_socketio_clients_cut_total", "Socket.IO connections closed because of what their client sent (malformed packets, attachments over the bounds), by reason."
	for i, reason := range cutReasons {
		c := &s.cuts.n[i]
		col := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: prometheus.Labels{"reason": reason}},
			func() float64 { return float64(c.Load()) })
		if err := reg.Register(col); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				s.log.Warn("socketio: registering metrics", slog.Any("error", err))
			}
			return
		}
	}
}
