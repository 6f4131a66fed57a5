package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/durasock/durasock/bus"
)

func promhandler(r *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(r, promhttp.HandlerOpts{Registry: r})
}

// healthz says the process is alive and serving HTTP.
func (a *app) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// outboxReadyFraction is the outbox fill above which a node stops taking new
// clients: close to the bound, new work would soon be rejected.
const outboxReadyFraction = 0.9

// notReady says why this node should not get new clients, or "" when it should.
// A node is not ready while it drains, when its bus has given up reconnecting
// (Failed), or when its outbox is nearly full. A bus that is reconnecting keeps the
// node ready: local clients are served and cross-node messages wait in the outbox.
func (a *app) notReady() string {
	select {
	case <-a.draining:
		return "draining"
	default:
	}
	if a.bus == nil {
		return ""
	}
	st := a.bus.Status()
	switch st.State {
	case bus.Failed:
		return "bus failed: " + st.LastError
	case bus.Closed:
		return "bus closed"
	}
	if o := a.cfg.Outbox; float64(st.OutboxLen) >= outboxReadyFraction*float64(o.MaxMessages) ||
		float64(st.OutboxBytes) >= outboxReadyFraction*float64(o.MaxBytes) {
		return "outbox nearly full"
	}
	return ""
}

func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	if why := a.notReady(); why != "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// statusBody is the JSON of GET /status.
type statusBody struct {
	Ready   bool        `json:"ready"`
	Reason  string      `json:"reason,omitempty"`
	Clients int         `json:"clients"`
	Adapter string      `json:"adapter"`
	Node    string      `json:"node,omitempty"`
	Nodes   []string    `json:"nodes,omitempty"`
	Bus     *bus.Status `json:"bus,omitempty"`
}

func (a *app) status(w http.ResponseWriter, _ *http.Request) {
	why := a.notReady()
	body := statusBody{Ready: why == "", Reason: why, Clients: a.sio.Engine().Count(), Adapter: "memory"}
	if a.bus != nil {
		st := a.bus.Status()
		st.StateName = st.State.String()
		body.Adapter, body.Node, body.Nodes, body.Bus = "cluster", a.bus.NodeID(), a.cluster.Nodes(), &st
	}
	writeJSON(w, http.StatusOK, body)
}

// emitRequest is the body of POST /api/emit.
type emitRequest struct {
	Namespace string            `json:"namespace"`
	Event     string            `json:"event"`
	Args      []json.RawMessage `json:"args"`
	Rooms     []string          `json:"rooms"`
	Except    []string          `json:"except"`
}

// maxEmitBody bounds the body of POST /api/emit.
const maxEmitBody = 1 << 20

// emit broadcasts an event from outside, e.g. from a backend that is not Go:
//
//	curl -H 'Authorization: Bearer TOKEN' -d '{"event":"news","args":[{"n":1}],"rooms":["lobby"]}' localhost:3000/api/emit
//
// It answers 202 once the broadcast was delivered locally and accepted by the
// cluster bus, 503 when the bus refused it (outbox full), 400 for a bad request
// and 401 without the token. Without -emit-token the API is off (404).
func (a *app) emit(w http.ResponseWriter, r *http.Request) {
	if a.cfg.EmitToken == "" {
		writeError(w, http.StatusNotFound, "the emit API is off: start durasock with -emit-token")
		return
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(token), []byte(a.cfg.EmitToken)) != 1 {
		writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
		return
	}
	var req emitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEmitBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad JSON body: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad JSON body: more than one value")
		return
	}
	if req.Event == "" {
		writeError(w, http.StatusBadRequest, `"event" is required`)
		return
	}
	if req.Namespace == "" {
		req.Namespace = "/"
	}
	args := make([]any, len(req.Args))
	for i, a := range req.Args {
		args[i] = a
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	err := a.sio.Of(req.Namespace).To(req.Rooms...).Except(req.Except...).Emit(ctx, req.Event, args...)
	switch {
	case errors.Is(err, bus.ErrOutboxFull), errors.Is(err, bus.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, http.StatusAccepted, map[string]bool{"ok": true})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// An error here means the client went away; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// redactURL hides the password of a Redis URL for logs.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
