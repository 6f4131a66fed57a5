package main

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/socketio"
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
// A node is not ready from the shutdown signal on, before its bus reached Redis
// once (-ready-needs-redis), when its bus has given up reconnecting (Failed),
// when another process runs with its node id, or when its outbox is nearly full.
// A bus that is reconnecting after it was connected keeps the node ready: local
// clients are served and cross-node messages wait in the outbox.
func (a *app) notReady() string {
	select {
	case <-a.draining:
		return "draining"
	default:
	}
	select {
	case <-a.stopping:
		return "shutting down (-shutdown-delay): still serving, the drain follows"
	default:
	}
	if a.bus == nil {
		return a.compatNotReady()
	}
	st := a.bus.Status()
	switch st.State {
	case bus.Connected:
		a.mon.connectedOnce.Store(true)
	case bus.Failed:
		return "bus failed (reconnect attempts exhausted): " + a.scrub.publicError(st.LastError)
	case bus.Closed:
		return "bus closed"
	}
	if a.cfg.ReadyNeedsBus && !a.mon.connectedOnce.Load() {
		return "waiting for Redis: not reached since start"
	}
	if st.NodeIDConflict {
		return "another running process uses this node id"
	}
	if a.cfg.InterestRouting && a.cluster != nil && !a.mon.routingReady.Load() {
		// Once, at start: a node that routes before it knows where every
		// other node's sockets are would miss some of them.
		if err := a.cluster.AwaitRoutingReady(checkNow); err != nil {
			return "interest routing: the other nodes' rooms are not known yet"
		}
		a.mon.routingReady.Store(true)
	}
	o := a.cfg.Outbox
	if (o.MaxMessages > 0 && float64(st.OutboxLen) >= outboxReadyFraction*float64(o.MaxMessages)) ||
		(o.MaxBytes > 0 && float64(st.OutboxBytes) >= outboxReadyFraction*float64(o.MaxBytes)) {
		return "outbox nearly full"
	}
	return ""
}

// checkNow is a context that is already done: a wait given it checks once.
var checkNow = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	if why := a.notReady(); why != "" {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
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

// emitFields describes the fields of emitRequest for error messages.
var emitFields = map[string]string{
	"namespace":  "a string, like \"/\"",
	"event":      "a string",
	"args":       "a list of JSON values",
	"rooms":      "a list of strings",
	"except":     "a list of strings",
	"delivery":   `"accepted" or "published"`,
	"timeout_ms": "a whole number of milliseconds",
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

// bearerToken returns the token of an "Authorization: Bearer <token>" header
// (the scheme in any case), or of Basic credentials (the password; a browser
// asks for them), and whether there was one.
func bearerToken(r *http.Request) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "bearer"):
		return rest, true
	case strings.EqualFold(scheme, "basic"):
		b, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", false
		}
		_, pass, _ := strings.Cut(string(b), ":")
		return pass, true
	}
	return "", false
}

// tokenMatches compares in constant time.
func tokenMatches(got, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

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
// a bad request, 401 without the token, 404 for a namespace this server does not
// serve, 413 for a body over 1 MiB. Without -emit-token the API is off (404).
func (a *app) emit(w http.ResponseWriter, r *http.Request) {
	if a.cfg.EmitToken == "" {
		writeError(w, http.StatusNotFound, "the emit API is off: start durasock with -emit-token")
		return
	}
	if token, ok := bearerToken(r); !ok || !tokenMatches(token, a.cfg.EmitToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="durasock emit"`)
		writeError(w, http.StatusUnauthorized, "missing or wrong token: send the header Authorization: Bearer <the -emit-token>")
		return
	}
	var req emitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxEmitBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		code, msg := jsonProblem(err)
		writeError(w, code, msg)
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		code, msg := http.StatusBadRequest, "the body holds more than one JSON object: send one"
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			code, msg = jsonProblem(err)
		}
		writeError(w, code, msg)
		return
	}
	if req.Event == "" {
		writeError(w, http.StatusBadRequest, `"event" is missing: name the event to send, like {"event":"news"}`)
		return
	}
	if req.Namespace == "" {
		req.Namespace = "/"
	}
	if !strings.HasPrefix(req.Namespace, "/") {
		req.Namespace = "/" + req.Namespace
	}
	if !a.namespaces[req.Namespace] {
		writeError(w, http.StatusNotFound, fmt.Sprintf("namespace %q is not served by this server (it serves %s)", req.Namespace, a.servedNamespaces()))
		return
	}
	switch req.Delivery {
	case "":
		req.Delivery = deliveryAccepted
	case deliveryAccepted, deliveryPublished:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"delivery" %q: want "accepted" (answer once queued) or "published" (answer once in Redis)`, req.Delivery))
		return
	}
	wait := 5 * time.Second
	if req.TimeoutMS < 0 || time.Duration(req.TimeoutMS)*time.Millisecond > maxEmitWait {
		writeError(w, http.StatusBadRequest, fmt.Sprintf(`"timeout_ms" %d: want 0 to %d (0: 5000)`, req.TimeoutMS, maxEmitWait.Milliseconds()))
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
	case errors.Is(err, socketio.ErrReservedEvent):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%q is an event name Socket.IO reserves (connect, connect_error, disconnect, disconnecting, newListener, removeListener): pick another", req.Event))
		return
	case errors.Is(err, bus.ErrOutboxFull):
		writeError(w, http.StatusServiceUnavailable, "not sent: the outbox is full (Redis has been unreachable for a while, or is too slow); try again later")
		return
	case errors.Is(err, bus.ErrTooLarge):
		writeError(w, http.StatusRequestEntityTooLarge, "not sent: the event is larger than the whole outbox (-outbox-max-bytes)")
		return
	case errors.Is(err, bus.ErrClosed):
		writeError(w, http.StatusServiceUnavailable, "not sent: this server is shutting down; send it to another node")
		return
	case err != nil:
		a.log.Warn("emit API: not sent", "namespace", req.Namespace, "event", req.Event, "err", a.scrub.scrub(err.Error()))
		writeError(w, http.StatusInternalServerError, "not sent: "+a.scrub.publicError(err.Error()))
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

func (a *app) servedNamespaces() string {
	list := make([]string, 0, len(a.namespaces))
	for n := range a.namespaces {
		list = append(list, n)
	}
	sort.Strings(list)
	return strings.Join(list, ", ")
}

// jsonProblem turns a decoding error of the emit body into a status and a
// sentence without Go type names.
func jsonProblem(err error) (int, string) {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxEmitBody)
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return http.StatusBadRequest, fmt.Sprintf("the body is not valid JSON (at byte %d): send one object like {\"event\":\"news\",\"args\":[1]}", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		if te.Field == "" {
			return http.StatusBadRequest, "the body must be a JSON object, like {\"event\":\"news\",\"args\":[1]}"
		}
		field, _, _ := strings.Cut(te.Field, ".")
		if want, ok := emitFields[field]; ok {
			return http.StatusBadRequest, fmt.Sprintf("%q must be %s", field, want)
		}
		return http.StatusBadRequest, fmt.Sprintf("%q has the wrong type", field)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return http.StatusBadRequest, "the body is empty or cut short: send one JSON object like {\"event\":\"news\",\"args\":[1]}"
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		known := make([]string, 0, len(emitFields))
		for f := range emitFields {
			known = append(known, f)
		}
		sort.Strings(known)
		return http.StatusBadRequest, fmt.Sprintf("unknown field %s; the fields are %s", name, strings.Join(known, ", "))
	}
	return http.StatusBadRequest, "the body is not a valid emit request"
}

// answerPublished answers an emit once the bus's outbox has handed everything
// accepted so far, the emit included, to Redis.
func (a *app) answerPublished(ctx context.Context, w http.ResponseWriter, wait time.Duration) {
	err := a.bus.Sync(ctx)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, emitAnswer{OK: true, Delivery: deliveryPublished})
	case errors.Is(err, bus.ErrDropped):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{
			"error":    "dropped before Redis took it: a bound of the outbox (max age or drop-oldest) removed it",
			"delivery": "dropped",
		})
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
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	// An error here means the client went away; there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// compatNotReady is notReady for a node of a Node cluster (-cluster-protocol
// node-*): it is ready once its subscription to Redis was up once.
func (a *app) compatNotReady() string {
	if a.compat == nil || a.compat.node == nil {
		return ""
	}
	if a.compat.node.Stats().Connected {
		a.mon.connectedOnce.Store(true)
	}
	if a.cfg.ReadyNeedsBus && !a.mon.connectedOnce.Load() {
		return "waiting for Redis: the Node cluster's subscription is not up yet"
	}
	return ""
}
