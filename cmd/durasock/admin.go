package main

import (
	_ "embed"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/compat"
)

// The admin endpoints, /status (JSON), /status/history (JSON), /dashboard
// (HTML) and /metrics, say more about a node than its clients should know.
// They answer:
//   - with -admin-token: requests that carry it (Authorization: Bearer <token>,
//     or Basic credentials with the token as password, which a browser asks for);
//   - without it: every request on -admin-addr (the operator chose who reaches
//     that address), and on -addr only requests from this machine (loopback)
//     that no proxy forwarded.

//go:embed dashboard.html
var dashboardPage []byte

func (a *app) mountAdmin(mux *http.ServeMux, onAdminListener bool) {
	guard := func(browser bool, h http.Handler) http.Handler {
		return a.adminOnly(onAdminListener, browser, h)
	}
	mux.Handle("GET /status", guard(false, http.HandlerFunc(a.status)))
	mux.Handle("GET /status/history", guard(false, http.HandlerFunc(a.statusHistory)))
	mux.Handle("GET /dashboard", guard(true, http.HandlerFunc(a.dashboard)))
	mux.Handle("GET /metrics", guard(false, promhandler(a.registry)))
}

// adminOnly admits the requests the admin endpoints answer (see above). For
// the browser page, a refusal asks the browser for the token (Basic).
func (a *app) adminOnly(onAdminListener, browser bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if a.cfg.AdminToken != "" {
			if token, ok := bearerToken(r); !ok || !tokenMatches(token, a.cfg.AdminToken) {
				if browser {
					w.Header().Set("WWW-Authenticate", `Basic realm="durasock admin: the -admin-token as password"`)
				} else {
					w.Header().Set("WWW-Authenticate", `Bearer realm="durasock admin"`)
				}
				writeError(w, http.StatusUnauthorized, "missing or wrong token: send the header Authorization: Bearer <the -admin-token>")
				return
			}
		} else if !onAdminListener && !fromThisMachine(r) {
			writeError(w, http.StatusForbidden, r.URL.Path+" answers only requests from this machine: start durasock with -admin-token <token> (then send Authorization: Bearer <token>) or -admin-addr <address> to reach it from elsewhere")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// fromThisMachine says whether r came from a loopback address and no proxy
// forwarded it (a reverse proxy on this machine would otherwise open the
// admin endpoints to everyone it serves).
func fromThisMachine(r *http.Request) bool {
	if r.Header.Get("X-Forwarded-For") != "" || r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-Ip") != "" {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// duration is a time.Duration shown twice in /status: as text ("1m30s") and,
// in a sibling field, in seconds.
type duration struct {
	Text    string  `json:"text"`
	Seconds float64 `json:"seconds"`
}

func dur(d time.Duration) duration {
	return duration{Text: roundDuration(d).String(), Seconds: d.Seconds()}
}

// roundDuration keeps a duration readable: milliseconds below a minute,
// seconds above.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Minute {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// statusBody is the JSON of GET /status.
type statusBody struct {
	Ready   bool      `json:"ready"`
	Reason  string    `json:"reason,omitempty"`
	Node    string    `json:"node,omitempty"`
	Mode    string    `json:"mode"`
	Version buildInfo `json:"version"`
	Started time.Time `json:"started"`
	Uptime  duration  `json:"uptime"`
	Clients int       `json:"clients"`
	// OtherNodes are the other nodes this node hears from (it is not listed).
	OtherNodes []string   `json:"other_nodes"`
	Bus        *busStatus `json:"bus,omitempty"`
	// Compat is the state of the Node protocol (-cluster-protocol node-*) and
	// of the emitter listeners (-emitters).
	Compat *compatStatus `json:"compat,omitempty"`
	Config statusKnobs   `json:"config"`
}

// compatStatus is /status's view of the Node cluster and emitter listeners.
type compatStatus struct {
	Protocol  string        `json:"protocol"`
	UID       string        `json:"uid,omitempty"`
	Cluster   *compat.Stats `json:"cluster,omitempty"`
	Emitters  []string      `json:"emitters,omitempty"`
	Listeners *compat.Stats `json:"listeners,omitempty"`
}

// statusKnobs are the settings worth seeing next to the state.
type statusKnobs struct {
	Path          string   `json:"path"`
	Transport     string   `json:"transport,omitempty"`
	WaitReplicas  int      `json:"redis_wait_replicas,omitempty"`
	OutboxMaxMsgs int      `json:"outbox_max_messages,omitempty"`
	OutboxMaxB    int64    `json:"outbox_max_bytes,omitempty"`
	OutboxMaxAge  duration `json:"outbox_max_age"`
	DiskOutbox    bool     `json:"disk_outbox"`
	Recovery      duration `json:"recovery"`
	DrainTimeout  duration `json:"drain_timeout"`
	ShutdownDelay duration `json:"shutdown_delay"`
}

// busStatus is the cluster bus in /status. Error texts carry no address or
// password: the logs have the details.
type busStatus struct {
	State           string       `json:"state"`
	Since           time.Time    `json:"since"`
	For             duration     `json:"for"`
	Attempt         int          `json:"attempt,omitempty"`
	NextRetry       *duration    `json:"next_retry,omitempty"`
	LastError       string       `json:"last_error,omitempty"`
	ConnectedOnce   bool         `json:"connected_once"`
	UnderReplicated bool         `json:"under_replicated"`
	NodeIDConflict  bool         `json:"node_id_conflict"`
	Outbox          outboxStatus `json:"outbox"`
	Totals          busTotals    `json:"totals"`
	History         []transition `json:"state_history"`
}

type outboxStatus struct {
	Messages  int      `json:"messages"`
	Bytes     int64    `json:"bytes"`
	OldestAge duration `json:"oldest_age"`
}

type busTotals struct {
	Accepted     uint64            `json:"accepted"`
	Rejected     uint64            `json:"rejected"`
	Published    uint64            `json:"published"`
	Received     uint64            `json:"received"`
	Dropped      map[string]uint64 `json:"dropped"`
	Gaps         uint64            `json:"gaps"`
	GapMessages  uint64            `json:"gap_messages"`
	Duplicates   uint64            `json:"duplicates"`
	Reconnects   uint64            `json:"reconnects"`
	ProbeFails   uint64            `json:"probe_failures"`
	NodesGone    uint64            `json:"nodes_gone"`
	DiskLoaded   uint64            `json:"disk_loaded,omitempty"`
	DecodeErrors uint64            `json:"decode_errors,omitempty"`
}

func (a *app) statusBody() statusBody {
	why := a.notReady()
	now := time.Now()
	body := statusBody{
		Ready: why == "", Reason: why, Mode: "single process", Version: a.build,
		Started: a.started.UTC().Truncate(time.Second), Uptime: dur(now.Sub(a.started)),
		Clients: a.sio.Engine().Count(), OtherNodes: []string{},
		Config: statusKnobs{
			Path: a.cfg.Path, Recovery: dur(a.cfg.Recovery), DrainTimeout: dur(a.cfg.DrainTimeout),
			ShutdownDelay: dur(a.cfg.ShutdownDelay), OutboxMaxAge: dur(0),
		},
	}
	if st := a.compat; st != nil {
		c := &compatStatus{Protocol: a.cfg.Compat.Protocol, Emitters: a.cfg.Compat.Emitters}
		if st.node != nil {
			s := st.node.Stats()
			c.UID, c.Cluster = st.node.UID(), &s
			body.Mode = "cluster (" + a.cfg.Compat.Protocol + ")"
		}
		if st.listener != nil {
			s := st.listener.Stats()
			c.Listeners = &s
		}
		body.Compat = c
	}
	if a.bus == nil {
		return body
	}
	body.Mode = "cluster"
	body.Node = a.bus.NodeID()
	body.OtherNodes = a.cluster.Nodes()
	sort.Strings(body.OtherNodes)
	o := a.cfg.Outbox
	body.Config.Transport, body.Config.WaitReplicas = a.cfg.RedisMode, a.cfg.WaitReplicas
	body.Config.OutboxMaxMsgs, body.Config.OutboxMaxB, body.Config.OutboxMaxAge, body.Config.DiskOutbox = o.MaxMessages, o.MaxBytes, dur(o.MaxAge), o.Dir != ""
	st := a.bus.Status()
	s := a.bus.Stats()
	hist, _ := a.mon.history()
	b := &busStatus{
		State: st.State.String(), Since: st.Since.UTC(), For: dur(now.Sub(st.Since)), Attempt: st.Attempt,
		LastError: a.scrub.publicError(st.LastError), ConnectedOnce: a.mon.connectedOnce.Load(),
		UnderReplicated: st.UnderReplicated, NodeIDConflict: st.NodeIDConflict,
		Outbox: outboxStatus{Messages: st.OutboxLen, Bytes: st.OutboxBytes, OldestAge: dur(st.OutboxOldest)},
		Totals: busTotals{
			Accepted: s.Accepted, Rejected: s.Rejected, Published: s.Published, Received: s.Received,
			Dropped: map[string]uint64{"max_age": s.DroppedMaxAge, "overflow": s.DroppedOverflow, "closed": s.DroppedClosed},
			Gaps:    s.Gaps, GapMessages: s.GapMessages, Duplicates: s.Duplicates, Reconnects: s.Reconnects,
			ProbeFails: s.ProbeFailures, NodesGone: s.NodesGoneSilent + s.NodesGoneReplaced + s.NodesClosed,
			DiskLoaded: s.DiskLoaded, DecodeErrors: s.DecodeErrors,
		},
		History: hist,
	}
	if st.State == bus.Reconnecting && !b.ConnectedOnce {
		b.State = "connecting"
	}
	if st.NextRetry > 0 {
		nr := dur(st.NextRetry)
		b.NextRetry = &nr
	}
	if b.History == nil {
		b.History = []transition{}
	}
	body.Bus = b
	return body
}

// status is GET /status: JSON for humans and scripts, indented.
func (a *app) status(w http.ResponseWriter, _ *http.Request) {
	writeIndented(w, a.statusBody())
}

// statusHistory is GET /status/history: the dashboard's chart points.
func (a *app) statusHistory(w http.ResponseWriter, _ *http.Request) {
	t, s := a.mon.history()
	if t == nil {
		t = []transition{}
	}
	writeIndented(w, map[string]any{"interval_seconds": a.mon.sampleEvery.Seconds(), "transitions": t, "samples": s})
}

func writeIndented(w http.ResponseWriter, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		writeError(w, http.StatusInternalServerError, "status: "+err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	// The client may be gone; nothing else to tell it.
	_, _ = w.Write(append(b, '\n'))
}

// dashboard is GET /dashboard: a page that reads /status and /status/history.
func (a *app) dashboard(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(dashboardPage) // the browser may be gone
}

// metricSums gathers the registry once and sums each named metric over its
// labels.
func (a *app) metricSums(names ...string) map[string]float64 {
	out := make(map[string]float64, len(names))
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	families, err := a.registry.Gather()
	if err != nil && len(families) == 0 {
		return out
	}
	for _, f := range families {
		if !want[f.GetName()] {
			continue
		}
		for _, m := range f.GetMetric() {
			switch {
			case m.GetCounter() != nil:
				out[f.GetName()] += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[f.GetName()] += m.GetGauge().GetValue()
			}
		}
	}
	return out
}
