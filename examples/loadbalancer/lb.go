package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sessionIdle is how long a session the balancer has not seen a request of is
// remembered.
const sessionIdle = 5 * time.Minute

// LB is the load balancer: round robin over ready nodes for new sessions, and
// every request of an Engine.IO session to the node that opened it.
type LB struct {
	nodes []*backend
	next  atomic.Uint64
	log   *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session // by Engine.IO sid

	stop chan struct{}
	done sync.WaitGroup
}

type backend struct {
	url   *url.URL
	proxy *httputil.ReverseProxy
	ready atomic.Bool
}

type session struct {
	node *backend
	seen time.Time
}

// New returns a balancer over nodes (base URLs) that checks every node's
// /readyz every check. Close stops the checks.
func New(nodes []string, check time.Duration, log *slog.Logger) (*LB, error) {
	if len(nodes) == 0 {
		return nil, errors.New("no -node given")
	}
	lb := &LB{log: log, sessions: make(map[string]*session), stop: make(chan struct{})}
	for _, n := range nodes {
		u, err := url.Parse(n)
		if err != nil || u.Scheme == "" || u.Host == "" {
			return nil, fmt.Errorf("node %q: want a base URL such as http://127.0.0.1:3001", n)
		}
		b := &backend{url: u}
		b.proxy = &httputil.ReverseProxy{
			Rewrite:        func(r *httputil.ProxyRequest) { r.SetURL(u); r.SetXForwarded() },
			ModifyResponse: lb.learnSession(b),
			ErrorHandler:   lb.proxyError(b),
		}
		lb.nodes = append(lb.nodes, b)
	}
	lb.checkAll()
	lb.done.Add(1)
	go lb.checkLoop(check)
	return lb, nil
}

// Close stops the health checks.
func (lb *LB) Close() {
	close(lb.stop)
	lb.done.Wait()
}

func (lb *LB) checkLoop(every time.Duration) {
	defer lb.done.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-lb.stop:
			return
		case <-t.C:
			lb.checkAll()
			lb.forgetIdle(time.Now())
		}
	}
}

func (lb *LB) checkAll() {
	client := http.Client{Timeout: time.Second}
	for _, b := range lb.nodes {
		resp, err := client.Get(b.url.JoinPath("/readyz").String())
		ready := err == nil && resp.StatusCode == http.StatusOK
		if err == nil {
			resp.Body.Close()
		}
		if b.ready.Swap(ready) != ready {
			lb.log.Info("node readiness changed", "node", b.url.String(), "ready", ready)
		}
	}
}

func (lb *LB) forgetIdle(now time.Time) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for sid, s := range lb.sessions {
		if now.Sub(s.seen) > sessionIdle {
			delete(lb.sessions, sid)
		}
	}
}

// pick returns the next ready node, or nil when none is.
func (lb *LB) pick() *backend {
	n := len(lb.nodes)
	start := int(lb.next.Add(1))
	for i := range n {
		if b := lb.nodes[(start+i)%n]; b.ready.Load() {
			return b
		}
	}
	return nil
}

// ServeHTTP routes a request of an existing Engine.IO session to its node and
// anything else to the next ready node.
func (lb *LB) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if sid := r.URL.Query().Get("sid"); sid != "" && r.URL.Query().Get("EIO") != "" {
		lb.mu.Lock()
		s := lb.sessions[sid]
		if s != nil {
			s.seen = time.Now()
		}
		lb.mu.Unlock()
		if s == nil {
			// Its node is gone (or never was ours): the client starts over.
			unknownSession(w)
			return
		}
		s.node.proxy.ServeHTTP(w, r)
		return
	}
	b := lb.pick()
	if b == nil {
		http.Error(w, "no node is ready", http.StatusServiceUnavailable)
		return
	}
	b.proxy.ServeHTTP(w, r)
}

// learnSession remembers the sid of an Engine.IO long-polling handshake answered
// by b (a WebSocket handshake keeps its one connection on b by itself).
func (lb *LB) learnSession(b *backend) func(*http.Response) error {
	return func(resp *http.Response) error {
		q := resp.Request.URL.Query()
		if q.Get("EIO") == "" || q.Get("sid") != "" || q.Get("transport") != "polling" || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		var open struct {
			SID string `json:"sid"`
		}
		if len(body) > 1 && body[0] == '0' && json.Unmarshal(body[1:], &open) == nil && open.SID != "" {
			lb.mu.Lock()
			lb.sessions[open.SID] = &session{node: b, seen: time.Now()}
			lb.mu.Unlock()
		}
		return nil
	}
}

// proxyError answers a request whose node did not answer. The sessions of that
// node are forgotten, so that their clients reconnect to another node.
func (lb *LB) proxyError(b *backend) func(http.ResponseWriter, *http.Request, error) {
	return func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() != nil {
			return // the client went away, not the node
		}
		b.ready.Store(false)
		lb.mu.Lock()
		for sid, s := range lb.sessions {
			if s.node == b {
				delete(lb.sessions, sid)
			}
		}
		lb.mu.Unlock()
		lb.log.Warn("node did not answer", "node", b.url.String(), "error", err)
		if r.URL.Query().Get("sid") != "" {
			unknownSession(w)
			return
		}
		http.Error(w, "node unavailable", http.StatusBadGateway)
	}
}

// unknownSession is Engine.IO's answer for a sid the server does not know.
func unknownSession(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusBadRequest)
	_, _ = io.WriteString(w, `{"code":1,"message":`+strconv.Quote("Session ID unknown")+`}`)
}
