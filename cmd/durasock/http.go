package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
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
	// Delivery is when the API answers: "accepted" (default) once the event is
	// in the node's outbox, "published" once it is in Redis.
	Delivery string `json:"delivery"`
	// TimeoutMS bounds the wait of "published" (default 5000, at most 60000).
	TimeoutMS int `json:"timeout_ms"`
}

// Delivery modes of POST /api/emit, named in the request and in the answer.
const (
	// deliveryAccepted: delivered to this node's clients and in its outbox, in
	// memory; a crash of this process before Redis took it loses it.
	deliveryAccepted = "accepted"
	// deliveryPublished: in Redis (and confirmed by the replicas the node waits
	// for, -redis-wait-replicas): a crash of this process no longer loses it.
	deliveryPublished = "published"
	// deliveryLocal: no cluster; delivered to this process's clients.
	deliveryLocal = "local"
)

// emitAnswer is the body of a successful POST /api/emit.
type emitAnswer struct {
	OK       bool   `json:"ok"`
	Delivery string `json:"delivery"`
}

// maxEmitWait bounds timeout_ms.
const maxEmitWait = time.Minute

// maxEmitBody bounds the body of POST /api/emit.
const maxEmitBody = 1 << 20

// emit broadcasts an event from outside, e.g. from a backend that is not Go:
//
//	curl -H 'Authorization: Bearer TOKEN' -d '{"event":"news","args":[{"n":1}],"rooms":["lobby"]}' localhost:3000/api/emit
//
// By default it answers 202 {"delivery":"accepted"} once the broadcast was
// delivered to this node's clients and accepted into the cluster bus's outbox,
// which is in this process's memory. With "delivery":"published" it answers 200
// {"delivery":"published"} only once Redis holds the event (and the replicas the
// node waits for confirmed it), so a crash of this node can no longer lose it; if
// that takes longer than timeout_ms it answers 504 with "delivery":"accepted"
// (the event stays queued and is delivered when Redis takes it), and 503 when a
// bound of the outbox dropped it meanwhile. Without a cluster it answers 200
// {"delivery":"local"}. 503 when the bus refused the event (outbox full), 400 for
// a bad request, 401 without the token. Without -emit-token the API is off (404).
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
	switch req.Delivery {
	case "":
		req.Delivery = deliveryAccepted
	case deliveryAccepted, deliveryPublished:
	default:
		writeError(w, http.StatusBadRequest, `"delivery" must be "accepted" or "published"`)
		return
	}
	wait := 5 * time.Second
	if req.TimeoutMS < 0 || time.Duration(req.TimeoutMS)*time.Millisecond > maxEmitWait {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"timeout_ms" must be in 0..%d`, maxEmitWait.Milliseconds()))
		return
	} else if req.TimeoutMS > 0 {
		wait = time.Duration(req.TimeoutMS) * time.Millisecond
	}
	args := make([]any, len(req.Args))
	for i, a := range req.Args {
		args[i] = a
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	err := a.sio.Of(req.Namespace).To(req.Rooms...).Except(req.Except...).Emit(ctx, req.Event, args...)
	switch {
	case errors.Is(err, bus.ErrOutboxFull), errors.Is(err, bus.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	case err != nil:
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	switch {
	case a.bus == nil:
		writeJSON(w, http.StatusOK, emitAnswer{OK: true, Delivery: deliveryLocal})
	case req.Delivery == deliveryAccepted:
		writeJSON(w, http.StatusAccepted, emitAnswer{OK: true, Delivery: deliveryAccepted})
	default:
		a.answerPublished(ctx, w, wait)
	}
}

// answerPublished answers an emit once the bus's outbox has handed everything
// accepted so far, the emit included, to Redis.
func (a *app) answerPublished(ctx context.Context, w http.ResponseWriter, wait time.Duration) {
	err := a.bus.Sync(ctx)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, emitAnswer{OK: true, Delivery: deliveryPublished})
	case errors.Is(err, bus.ErrDropped):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error(), "delivery": "dropped"})
	default:
		writeJSON(w, http.StatusGatewayTimeout, map[string]string{
			"error":    fmt.Sprintf("not in Redis within %v; the event stays queued and is delivered when Redis takes it", wait),
			"delivery": deliveryAccepted,
		})
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
