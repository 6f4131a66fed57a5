package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The control panel of `durasock cluster`: the health poller that samples every
// node each second, and the panel's page and JSON API.

// nodeHealth is what the poller last learned about a node.
type nodeHealth struct {
	ready atomic.Bool

	mu      sync.Mutex
	id      string
	bus     string
	clients float64
	outbox  float64
	lagMS   float64
	eps     float64
	dropped float64
	gaps    float64
	prev    metricSample
}

// metricSample is the counters of one scrape of /metrics.
type metricSample struct {
	at                       time.Time
	events                   float64 // accepted + received bus messages
	latencySum, latencyCount float64
}

// panelSample is one point of a node's charts.
type panelSample struct {
	Outbox float64 `json:"outbox"`
	LagMS  float64 `json:"lag_ms"`
	EPS    float64 `json:"eps"`
	Up     bool    `json:"up"`
	// Waiting is the checker's accepted ticks not yet arrived on this node.
	Waiting int `json:"waiting"`
}

// clusterHistory keeps the last samples of every node for the charts.
type clusterHistory struct {
	mu    sync.Mutex
	size  int
	nodes map[string][]panelSample
	redis []bool
}

func newClusterHistory(size int) *clusterHistory {
	return &clusterHistory{size: size, nodes: map[string][]panelSample{}}
}

func (h *clusterHistory) add(name string, s panelSample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := append(h.nodes[name], s)
	if len(l) > h.size {
		l = l[len(l)-h.size:]
	}
	h.nodes[name] = l
}

func (h *clusterHistory) addRedis(up bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.redis = append(h.redis, up)
	if len(h.redis) > h.size {
		h.redis = h.redis[len(h.redis)-h.size:]
	}
}

func (h *clusterHistory) get(name string) []panelSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]panelSample(nil), h.nodes[name]...)
}

var pollClient = &http.Client{Timeout: time.Second}

// poll samples every node and Redis each second until ctx is done. Readiness
// is checked every 250 ms so that the load balancer stops sending new sessions
// to a draining node at once.
func (lc *localCluster) poll(ctx context.Context) {
	fast := time.NewTicker(250 * time.Millisecond)
	defer fast.Stop()
	var last time.Time
	for {
		for _, n := range lc.nodeList() {
			lc.checkReady(ctx, n)
		}
		if time.Since(last) >= time.Second {
			last = time.Now()
			lc.history.addRedis(lc.redis.Running())
			var wg sync.WaitGroup
			for _, n := range lc.nodeList() {
				wg.Go(func() { lc.sample(ctx, n) })
			}
			wg.Wait()
		}
		select {
		case <-ctx.Done():
			return
		case <-fast.C:
		}
	}
}

func (lc *localCluster) checkReady(ctx context.Context, n *nodeProc) {
	if st, _ := n.procState(); st != procRunning {
		n.health.ready.Store(false)
		return
	}
	code, _, err := pollGet(ctx, "http://"+n.addr+"/readyz")
	n.health.ready.Store(err == nil && code == http.StatusOK)
}

func pollGet(ctx context.Context, u string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := pollClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

// sample scrapes one node's /status and /metrics into its health and charts.
func (lc *localCluster) sample(ctx context.Context, n *nodeProc) {
	h := &n.health
	st, _ := n.procState()
	up := st == procRunning || st == procDraining
	var m map[string]float64
	var states map[string]float64
	var id string
	if up {
		if code, b, err := pollGet(ctx, "http://"+n.addr+"/status"); err == nil && code == http.StatusOK {
			var s struct {
				Node string `json:"node"`
			}
			if json.Unmarshal(b, &s) == nil {
				id = s.Node
			}
		}
		if code, b, err := pollGet(ctx, "http://"+n.addr+"/metrics"); err == nil && code == http.StatusOK {
			m, states = parseMetrics(b)
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if id != "" {
		h.id = id
	}
	if m == nil {
		h.bus, h.clients, h.outbox, h.lagMS, h.eps = "", 0, 0, 0, 0
		h.prev = metricSample{}
		lc.history.add(n.name, panelSample{})
		return
	}
	h.bus = ""
	for s, v := range states {
		if v == 1 {
			h.bus = s
		}
	}
	h.clients = m["durasock_connected_clients"]
	h.outbox = m["durasock_outbox_messages"]
	h.dropped = m["durasock_bus_dropped_total"]
	h.gaps = m["durasock_bus_gaps_total"]
	cur := metricSample{
		at:           time.Now(),
		events:       m["durasock_bus_accepted_total"] + m["durasock_bus_received_total"],
		latencySum:   m["durasock_bus_publish_latency_seconds_sum"],
		latencyCount: m["durasock_bus_publish_latency_seconds_count"],
	}
	// Delivery lag: how long the oldest queued message has waited, or else
	// the mean time from accept to Redis of what was published since the last
	// sample.
	h.lagMS = m["durasock_outbox_oldest_age_seconds"] * 1000
	h.eps = 0
	if !h.prev.at.IsZero() {
		if dc := cur.latencyCount - h.prev.latencyCount; dc > 0 {
			h.lagMS = max(h.lagMS, (cur.latencySum-h.prev.latencySum)/dc*1000)
		}
		if dt := cur.at.Sub(h.prev.at).Seconds(); dt > 0 {
			h.eps = max(0, (cur.events-h.prev.events)/dt)
		}
	}
	h.prev = cur
	lc.history.add(n.name, panelSample{Outbox: h.outbox, LagMS: h.lagMS, EPS: h.eps, Up: true, Waiting: lc.checker.view().Nodes[n.name].Waiting})
}

// parseMetrics reads the Prometheus text format: the sum of every series per
// metric name, and the durasock_bus_state gauge by its state label.
func parseMetrics(b []byte) (map[string]float64, map[string]float64) {
	m, states := map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name, labels := line[:sp], ""
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name, labels = name[:i], name[i:]
		}
		if name == "durasock_bus_state" {
			if _, rest, ok := strings.Cut(labels, `state="`); ok {
				if s, _, ok := strings.Cut(rest, `"`); ok {
					states[s] = v
				}
			}
			continue
		}
		m[name] += v
	}
	return m, states
}

// panelNode is a node as the panel's JSON shows it.
type panelNode struct {
	Name    string        `json:"name"`
	Addr    string        `json:"addr"`
	ID      string        `json:"id"`
	Proc    string        `json:"proc"`
	Exit    string        `json:"exit,omitempty"`
	Ready   bool          `json:"ready"`
	Bus     string        `json:"bus"`
	Clients float64       `json:"clients"`
	Outbox  float64       `json:"outbox"`
	LagMS   float64       `json:"lag_ms"`
	EPS     float64       `json:"eps"`
	Dropped float64       `json:"dropped"`
	Gaps    float64       `json:"gaps"`
	Samples []panelSample `json:"samples"`
}

type panelState struct {
	Redis struct {
		Addr    string `json:"addr"`
		Running bool   `json:"running"`
		History []bool `json:"history"`
	} `json:"redis"`
	Nodes   []panelNode `json:"nodes"`
	Events  []string    `json:"events"`
	Checker checkView   `json:"checker"`
}

func (lc *localCluster) state() panelState {
	var s panelState
	s.Redis.Addr, s.Redis.Running = lc.redis.Addr(), lc.redis.Running()
	lc.history.mu.Lock()
	s.Redis.History = append([]bool(nil), lc.history.redis...)
	lc.history.mu.Unlock()
	for _, n := range lc.nodeList() {
		proc, exit := n.procState()
		h := &n.health
		h.mu.Lock()
		pn := panelNode{Name: n.name, Addr: n.addr, ID: h.id, Proc: proc, Exit: exit, Ready: h.ready.Load(), Bus: h.bus,
			Clients: h.clients, Outbox: h.outbox, LagMS: h.lagMS, EPS: h.eps, Dropped: h.dropped, Gaps: h.gaps}
		h.mu.Unlock()
		pn.Samples = lc.history.get(n.name)
		s.Nodes = append(s.Nodes, pn)
	}
	lc.mu.Lock()
	s.Events = append([]string(nil), lc.events...)
	lc.mu.Unlock()
	s.Checker = lc.checker.view()
	return s
}

// panel serves /cluster/ (the page), /cluster/api/state and the actions:
// POST /cluster/api/redis/{kill,start} and /cluster/api/node/{name}/{drain,kill,start}.
// Actions need the header X-Durasock-Cluster, which a page of another origin
// cannot send without a CORS preflight that this server never allows.
func (lc *localCluster) panel(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	p := strings.TrimPrefix(r.URL.Path, "/cluster")
	switch {
	case r.Method == http.MethodGet && (p == "" || p == "/"):
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(mustRead("web/cluster.html"))
	case r.Method == http.MethodGet && p == "/cluster.js":
		w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
		_, _ = w.Write(mustRead("web/cluster.js"))
	case r.Method == http.MethodGet && p == "/cluster.css":
		w.Header().Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(mustRead("web/cluster.css"))
	case r.Method == http.MethodGet && p == "/api/state":
		writeJSON(w, http.StatusOK, lc.state())
	case r.Method == http.MethodPost && strings.HasPrefix(p, "/api/"):
		if r.Header.Get("X-Durasock-Cluster") == "" {
			writeError(w, http.StatusForbidden, "actions need the header X-Durasock-Cluster")
			return
		}
		if err := lc.act(r.Context(), strings.Split(strings.TrimPrefix(p, "/api/"), "/")); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	default:
		writeError(w, http.StatusNotFound, "no such page or action")
	}
}

// act carries out a panel action.
func (lc *localCluster) act(ctx context.Context, parts []string) error {
	switch {
	case len(parts) == 2 && parts[0] == "redis" && parts[1] == "kill":
		lc.note("Redis killed (SIGKILL)")
		return lc.redis.Kill()
	case len(parts) == 2 && parts[0] == "redis" && parts[1] == "start":
		lc.note("Redis starting")
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		return lc.redis.Start(ctx)
	case len(parts) == 3 && parts[0] == "node":
		n := lc.node(parts[1])
		if n == nil {
			return errUnknown("node " + parts[1])
		}
		switch parts[2] {
		case "drain":
			lc.note("%s draining (SIGTERM)", n.name)
			return n.drain()
		case "kill":
			lc.note("%s killed (SIGKILL)", n.name)
			return n.kill()
		case "start":
			lc.note("%s starting", n.name)
			return n.start(lc.bin)
		}
	}
	return errUnknown("action " + strings.Join(parts, "/"))
}

type errUnknown string

func (e errUnknown) Error() string { return "unknown " + string(e) }
