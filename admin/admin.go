package admin

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/durasock/durasock/socketio"
)

// DefaultNamespace is the namespace the Admin UI connects to by default.
const DefaultNamespace = "/admin"

// statsInterval is how often each server sends its statistics, as the
// reference instrumentation does.
const statsInterval = 2 * time.Second

// Errors returned by New.
var (
	ErrNoAuth       = errors.New("admin: Options.Auth must be set, or NoAuth true")
	ErrPasswordHash = errors.New("admin: the password must be a bcrypt hash")
)

// Features the UI enables according to the "config" event.
const (
	featureEmit             = "EMIT"
	featureJoin             = "JOIN"
	featureLeave            = "LEAVE"
	featureDisconnect       = "DISCONNECT"
	featureMJoin            = "MJOIN"
	featureMLeave           = "MLEAVE"
	featureMDisconnect      = "MDISCONNECT"
	featureAggregatedEvents = "AGGREGATED_EVENTS"
	featureAllEvents        = "ALL_EVENTS"
)

// BasicAuth is the username and password the UI asks for. Password is a bcrypt
// hash, as with the reference instrumentation: make one with
// bcrypt.GenerateFromPassword or `htpasswd -nbBC 10 "" secret | cut -d: -f2`.
type BasicAuth struct {
	Username string
	Password string
}

// Options configures New.
type Options struct {
	// Namespace is where the UI connects. Default DefaultNamespace.
	Namespace string
	// Auth is the username and bcrypt-hashed password the UI must give. It is
	// required unless NoAuth is true.
	Auth *BasicAuth
	// NoAuth lets anyone who reaches the server use the UI. Use it only on a
	// network where that is intended.
	NoAuth bool
	// ReadOnly hides every action from the UI (emit, join, leave, disconnect)
	// and refuses them: the UI only watches.
	ReadOnly bool
	// ServerID names this server process in the UI. Default "hostname#pid".
	ServerID string
	// Sessions keeps the session ids handed to a UI that logged in, so that it
	// reconnects without the password. Default: in this process's memory (a
	// UI that reconnects to another process of a cluster logs in again).
	Sessions SessionStore
	// Production sends only the servers' statistics, as the reference
	// instrumentation's "production" mode: no socket list, no per-socket
	// events. By default (development mode) every socket connecting,
	// disconnecting, joining or leaving a room is a message to the UIs of
	// every server, which costs a cluster broadcast each.
	Production bool
	// AllEvents also lists every event a client emits on the UI's Events page
	// (connections, disconnections and rooms are listed anyway): a cluster
	// broadcast per event. Ignored in Production.
	AllEvents bool
	// Logger receives warnings. Default slog.Default().
	Logger *slog.Logger
}

// SessionStore keeps the session ids of logged-in UIs.
type SessionStore interface {
	SaveSession(ctx context.Context, id string) error
	SessionExists(ctx context.Context, id string) (bool, error)
}

// memorySessions is the default SessionStore.
type memorySessions struct {
	mu  sync.Mutex
	ids map[string]time.Time
}

// sessionLifetime bounds how long a UI session is remembered.
const sessionLifetime = 24 * time.Hour

func (m *memorySessions) SaveSession(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	for k, t := range m.ids {
		if now.Sub(t) > sessionLifetime {
			delete(m.ids, k)
		}
	}
	m.ids[id] = now
	return nil
}

func (m *memorySessions) SessionExists(_ context.Context, id string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.ids[id]
	return ok && time.Since(t) <= sessionLifetime, nil
}

// Admin is the instrumentation of one server. Close stops it.
type Admin struct {
	srv      *socketio.Server
	nsp      *socketio.Namespace
	opts     Options
	log      *slog.Logger
	started  time.Time
	hostname string
	features []string

	mu      sync.Mutex
	tracked map[*socketio.Namespace]bool
	sockets map[*socketio.Socket]*seen // local sockets, with what the UI was last told
	// engines counts the tracked sockets of each Engine.IO session, so that
	// the first one to connect and the last one to leave mark the client's
	// connection and disconnection on the dashboard.
	engines map[string]int
	events  map[aggregatedKey]int // per second, sent with the next statistics
	// sessions holds the session id made for a UI socket by the middleware
	// until the socket is connected.
	sessions map[*socketio.Socket]string

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// seen is what the UI knows of a local socket: its rooms and transport, so
// that a change is sent once.
type seen struct {
	rooms     []string
	transport string
}

// New serves the Admin UI namespace on srv and starts the statistics of this
// server. Every namespace of srv is reported, those created later too.
func New(srv *socketio.Server, opts *Options) (*Admin, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Auth == nil && !o.NoAuth {
		return nil, ErrNoAuth
	}
	if o.Auth != nil {
		if _, err := bcrypt.Cost([]byte(o.Auth.Password)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPasswordHash, err)
		}
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	if o.ServerID == "" {
		o.ServerID = host + "#" + strconv.Itoa(os.Getpid())
	}
	if o.Sessions == nil {
		o.Sessions = &memorySessions{ids: make(map[string]time.Time)}
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	a := &Admin{
		srv: srv, opts: o, log: log, started: time.Now(), hostname: host,
		tracked:  make(map[*socketio.Namespace]bool),
		sockets:  make(map[*socketio.Socket]*seen),
		sessions: make(map[*socketio.Socket]string),
		engines:  make(map[string]int),
		events:   make(map[aggregatedKey]int),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	// The UI shows its Sockets, Rooms, Clients and Events pages only with
	// ALL_EVENTS, as the reference development mode announces it.
	a.features = []string{featureAggregatedEvents}
	if !o.Production {
		a.features = append(a.features, featureAllEvents)
	}
	if !o.ReadOnly {
		a.features = append([]string{featureEmit, featureJoin, featureLeave, featureDisconnect,
			featureMJoin, featureMLeave, featureMDisconnect}, a.features...)
	}
	a.nsp = srv.Of(o.Namespace)
	if a.nsp.Err() != nil {
		return nil, fmt.Errorf("admin: namespace %s: %w", o.Namespace, a.nsp.Err())
	}
	if o.Auth != nil {
		a.nsp.Use(a.authenticate)
	}
	a.nsp.OnConnection(a.onAdmin)
	a.nsp.OnServerSideEmit(listSocketsEvent, a.onListSockets)
	if !o.Production {
		a.scan()
	}
	go a.loop()
	return a, nil
}

// Close stops the statistics. The namespace stays: its sockets are closed
// with the server.
func (a *Admin) Close() {
	a.stopOnce.Do(func() { close(a.stop) })
	<-a.done
}

// authenticate is the UI namespace's middleware: a session id handed out
// earlier, or the username and password.
func (a *Admin) authenticate(ctx context.Context, s *socketio.Socket) error {
	var auth struct {
		SessionID string `json:"sessionId"`
		Username  string `json:"username"`
		Password  string `json:"password"`
	}
	if err := json.Unmarshal(s.Handshake().Auth, &auth); err != nil {
		return errInvalidCredentials
	}
	if auth.SessionID != "" {
		ok, err := a.opts.Sessions.SessionExists(ctx, auth.SessionID)
		if err != nil {
			a.log.Warn("admin: session store", "err", err)
		}
		if ok {
			return nil
		}
	}
	user := subtle.ConstantTimeCompare([]byte(auth.Username), []byte(a.opts.Auth.Username)) == 1
	if bcrypt.CompareHashAndPassword([]byte(a.opts.Auth.Password), []byte(auth.Password)) != nil || !user {
		a.log.Warn("admin: invalid credentials", "address", s.Handshake().Address)
		return errInvalidCredentials
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("admin: session id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if err := a.opts.Sessions.SaveSession(ctx, id); err != nil {
		a.log.Warn("admin: session store", "err", err)
		return nil
	}
	// Sent once the socket is connected (onAdmin).
	a.mu.Lock()
	if len(a.sessions) >= 1024 { // UI sockets that never completed their connection
		clear(a.sessions)
	}
	a.sessions[s] = id
	a.mu.Unlock()
	return nil
}

// errInvalidCredentials is what the UI shows on its login form.
var errInvalidCredentials = &socketio.ConnectError{Message: "invalid credentials"}

// onAdmin runs for every UI that connects to this server.
func (a *Admin) onAdmin(s *socketio.Socket) {
	a.mu.Lock()
	session, ok := a.sessions[s]
	delete(a.sessions, s)
	a.mu.Unlock()
	if ok {
		if err := s.Emit("session", session); err != nil {
			return
		}
	}
	if !a.opts.ReadOnly {
		s.On("emit", a.onEmit)
		s.On("join", func(e *socketio.Event) { a.onRooms(e, true) })
		s.On("leave", func(e *socketio.Event) { a.onRooms(e, false) })
		s.On("_disconnect", a.onDisconnect)
	}
	if err := s.Emit("config", map[string]any{"supportedFeatures": a.features}); err != nil {
		return
	}
	if !a.opts.Production {
		a.scan()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Emit("all_sockets", a.allSockets(ctx)); err != nil {
			a.log.Debug("admin: all_sockets", "err", err)
		}
	}
	a.sendStats()
}

// action arguments: (nsp, ..., filter) as the UI sends them.
func (a *Admin) target(nsp, filter string) (socketio.BroadcastOperator, bool) {
	n := a.existing(nsp)
	if n == nil {
		return socketio.BroadcastOperator{}, false
	}
	if filter != "" {
		return n.In(filter), true
	}
	return n.Except(), true
}

func (a *Admin) existing(name string) *socketio.Namespace {
	for _, n := range a.srv.Namespaces() {
		if n.Name() == name {
			return n
		}
	}
	return nil
}

const actionTimeout = 10 * time.Second

// onEmit: emit(nsp, filter, event, ...args).
func (a *Admin) onEmit(e *socketio.Event) {
	var nsp, filter, event string
	if len(e.Args) < 3 || e.Bind(&nsp, &filter, &event) != nil || event == "" {
		a.log.Debug("admin: malformed emit", "args", len(e.Args))
		return
	}
	op, ok := a.target(nsp, filter)
	if !ok {
		return
	}
	args := e.Values()[3:]
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	if err := op.Emit(ctx, event, args...); err != nil {
		a.log.Warn("admin: emit from the UI", "namespace", nsp, "room", filter, "event", event, "err", err)
	}
}

// onRooms: join|leave(nsp, room, filter).
func (a *Admin) onRooms(e *socketio.Event, join bool) {
	var nsp, room, filter string
	if len(e.Args) < 2 || e.Bind(&nsp, &room) != nil || room == "" {
		return
	}
	if len(e.Args) > 2 {
		// The filter is null when the UI acts on the whole namespace.
		if err := json.Unmarshal(e.Args[2], &filter); err != nil {
			filter = ""
		}
	}
	op, ok := a.target(nsp, filter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	var err error
	if join {
		err = op.SocketsJoin(ctx, room)
	} else {
		err = op.SocketsLeave(ctx, room)
	}
	if err != nil {
		a.log.Warn("admin: rooms from the UI", "namespace", nsp, "room", room, "join", join, "err", err)
	}
}

// onDisconnect: _disconnect(nsp, close, filter).
func (a *Admin) onDisconnect(e *socketio.Event) {
	var nsp, filter string
	var closeConn bool
	if len(e.Args) < 1 || json.Unmarshal(e.Args[0], &nsp) != nil {
		return
	}
	if len(e.Args) > 1 {
		_ = json.Unmarshal(e.Args[1], &closeConn)
	}
	if len(e.Args) > 2 {
		_ = json.Unmarshal(e.Args[2], &filter)
	}
	op, ok := a.target(nsp, filter)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	if err := op.DisconnectSockets(ctx, closeConn); err != nil {
		a.log.Warn("admin: disconnect from the UI", "namespace", nsp, "room", filter, "err", err)
	}
}

// loop sends the statistics and what changed in the local sockets.
func (a *Admin) loop() {
	defer close(a.done)
	t := time.NewTicker(statsInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			if !a.opts.Production {
				a.scan()
				a.diff()
			}
			a.sendStats()
		}
	}
}

// broadcast sends an event to every UI, on every server.
func (a *Admin) broadcast(event string, args ...any) {
	ctx, cancel := context.WithTimeout(context.Background(), actionTimeout)
	defer cancel()
	if err := a.nsp.Emit(ctx, event, args...); err != nil {
		a.log.Debug("admin: broadcast", "event", event, "err", err)
	}
}

func now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

// scan starts tracking the namespaces created since the last scan. Sockets
// already in a namespace seen for the first time are announced.
func (a *Admin) scan() {
	for _, n := range a.srv.Namespaces() {
		a.mu.Lock()
		known := a.tracked[n]
		a.tracked[n] = true
		a.mu.Unlock()
		if known {
			continue
		}
		n.OnConnection(a.onSocket)
		for _, s := range n.Sockets() {
			a.onSocket(s)
		}
	}
}

// onSocket runs for every socket that connects to this server.
func (a *Admin) onSocket(s *socketio.Socket) {
	a.mu.Lock()
	if _, ok := a.sockets[s]; ok {
		a.mu.Unlock()
		return
	}
	a.sockets[s] = &seen{rooms: s.Rooms(), transport: s.Transport()}
	engine := s.EngineID()
	if a.engines[engine]++; a.engines[engine] == 1 {
		a.countLocked("rawConnection", "")
	}
	a.mu.Unlock()
	nsp := s.Namespace().Name()
	if a.opts.AllEvents && s.Namespace() != a.nsp {
		s.OnAny(func(e *socketio.Event) {
			args := append([]any{e.Name}, e.Values()...)
			a.broadcast("event_received", nsp, s.ID(), args, now())
		})
	}
	s.OnDisconnect(func(reason string) {
		a.mu.Lock()
		delete(a.sockets, s)
		if a.engines[engine]--; a.engines[engine] <= 0 {
			delete(a.engines, engine)
			a.countLocked("rawDisconnection", reason)
		}
		a.mu.Unlock()
		a.broadcast("socket_disconnected", nsp, s.ID(), reason, now())
	})
	a.broadcast("socket_connected", a.serialize(s), now())
}

// diff tells the UIs of rooms joined and left and transports upgraded since
// the last tick.
func (a *Admin) diff() {
	a.mu.Lock()
	list := make([]*socketio.Socket, 0, len(a.sockets))
	for s := range a.sockets {
		list = append(list, s)
	}
	a.mu.Unlock()
	for _, s := range list {
		if !s.Connected() {
			continue
		}
		rooms, transport := s.Rooms(), s.Transport()
		a.mu.Lock()
		old, ok := a.sockets[s]
		if ok {
			a.sockets[s] = &seen{rooms: rooms, transport: transport}
		}
		a.mu.Unlock()
		if !ok {
			continue
		}
		nsp := s.Namespace().Name()
		for _, r := range rooms {
			if !contains(old.rooms, r) {
				a.broadcast("room_joined", nsp, r, s.ID(), now())
			}
		}
		for _, r := range old.rooms {
			if !contains(rooms, r) {
				a.broadcast("room_left", nsp, r, s.ID(), now())
			}
		}
		if transport != old.transport {
			a.broadcast("socket_updated", map[string]any{"id": s.ID(), "nsp": nsp, "transport": transport})
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// stats is the "server_stats" payload.
type stats struct {
	ServerID            string          `json:"serverId"`
	Hostname            string          `json:"hostname"`
	PID                 int             `json:"pid"`
	Uptime              float64         `json:"uptime"`
	ClientsCount        int             `json:"clientsCount"`
	PollingClientsCount int             `json:"pollingClientsCount"`
	AggregatedEvents    []aggregated    `json:"aggregatedEvents"`
	Namespaces          []namespaceStat `json:"namespaces"`
}

type aggregated struct {
	Timestamp int64  `json:"timestamp"`
	Type      string `json:"type"`
	SubType   string `json:"subType,omitempty"`
	Count     int    `json:"count"`
}

// aggregatedKey is one bar of the dashboard's histograms: a second, an event
// type and its detail (the reason of a disconnection).
type aggregatedKey struct {
	second  int64 // Unix milliseconds, whole seconds
	typ     string
	subType string
}

func (a *Admin) countLocked(typ, subType string) {
	const maxKeys = 10_000 // the UI takes them every 2 s; a stopped loop must not grow this
	if len(a.events) >= maxKeys {
		return
	}
	a.events[aggregatedKey{second: time.Now().Truncate(time.Second).UnixMilli(), typ: typ, subType: subType}]++
}

type namespaceStat struct {
	Name         string `json:"name"`
	SocketsCount int    `json:"socketsCount"`
}

func (a *Admin) sendStats() {
	st := stats{
		ServerID:         a.opts.ServerID,
		Hostname:         a.hostname,
		PID:              os.Getpid(),
		Uptime:           time.Since(a.started).Seconds(),
		ClientsCount:     a.srv.Engine().Count(),
		AggregatedEvents: []aggregated{},
		Namespaces:       []namespaceStat{},
	}
	polling := make(map[string]bool)
	for _, n := range a.srv.Namespaces() {
		socks := n.Sockets()
		st.Namespaces = append(st.Namespaces, namespaceStat{Name: n.Name(), SocketsCount: len(socks)})
		for _, s := range socks {
			if s.Transport() == "polling" {
				polling[s.EngineID()] = true
			}
		}
	}
	st.PollingClientsCount = len(polling)
	a.mu.Lock()
	for k, n := range a.events {
		st.AggregatedEvents = append(st.AggregatedEvents, aggregated{Timestamp: k.second, Type: k.typ, SubType: k.subType, Count: n})
	}
	clear(a.events)
	a.mu.Unlock()
	a.broadcast("server_stats", st)
}

// socketInfo is a socket as the UI lists it.
type socketInfo struct {
	ID        string          `json:"id"`
	ClientID  string          `json:"clientId"`
	Transport string          `json:"transport"`
	Nsp       string          `json:"nsp"`
	Data      json.RawMessage `json:"data"`
	Handshake handshake       `json:"handshake"`
	Rooms     []string        `json:"rooms"`
}

type handshake struct {
	Address string            `json:"address"`
	Headers map[string]string `json:"headers"`
	Query   map[string]string `json:"query"`
	Issued  int64             `json:"issued"`
	Secure  bool              `json:"secure"`
	Time    string            `json:"time"`
	URL     string            `json:"url"`
	XDomain bool              `json:"xdomain"`
}

func (a *Admin) serialize(s *socketio.Socket) socketInfo {
	hs := s.Handshake()
	h := handshake{
		Address: hs.Address,
		Headers: make(map[string]string, len(hs.Headers)),
		Query:   make(map[string]string, len(hs.Query)),
		Issued:  hs.Time.UnixMilli(),
		Secure:  hs.Secure,
		Time:    hs.Time.Format("Mon Jan 02 2006 15:04:05 GMT-0700 (MST)"),
		URL:     hs.URL,
	}
	for k, v := range hs.Headers {
		h.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	for k, v := range hs.Query {
		if len(v) > 0 {
			h.Query[k] = v[0]
		}
	}
	if ip := h.Headers["cf-connecting-ip"]; ip != "" {
		h.Address = ip
	} else if ip := h.Headers["x-forwarded-for"]; ip != "" {
		h.Address = ip
	}
	h.XDomain = h.Headers["origin"] != ""
	data := json.RawMessage("{}")
	if v := s.Data(); v != nil {
		if b, err := json.Marshal(v); err == nil && len(b) > 0 && b[0] == '{' {
			data = b
		}
	}
	clientID := s.EngineID()
	if len(clientID) > 12 {
		clientID = clientID[:12]
	}
	return socketInfo{
		ID: s.ID(), ClientID: clientID, Transport: s.Transport(), Nsp: s.Namespace().Name(),
		Data: data, Handshake: h, Rooms: s.Rooms(),
	}
}

// listSocketsEvent asks every other server for its sockets.
const listSocketsEvent = "durasock:admin:sockets"

func (a *Admin) localSockets() []socketInfo {
	out := []socketInfo{}
	for _, n := range a.srv.Namespaces() {
		for _, s := range n.Sockets() {
			out = append(out, a.serialize(s))
		}
	}
	return out
}

func (a *Admin) onListSockets(e *socketio.Event) {
	if err := e.Ack(a.localSockets()); err != nil {
		a.log.Debug("admin: answering a socket list", "err", err)
	}
}

// allSockets lists the sockets of every server: this one's, and those the
// others answer within ctx (a server that does not answer in time, or runs
// without the instrumentation, is missing from the list, and a warning says
// so).
func (a *Admin) allSockets(ctx context.Context) []socketInfo {
	list := a.localSockets()
	replies, err := a.nsp.ServerSideEmitWithAck(ctx, listSocketsEvent)
	if err != nil {
		a.log.Warn("admin: sockets of the other servers", "answered", len(replies), "err", err)
	}
	for _, r := range replies {
		if r.Args.Len() == 0 {
			continue
		}
		var more []socketInfo
		if err := r.Args.Bind(&more); err != nil {
			a.log.Warn("admin: malformed socket list", "from", r.From, "err", err)
			continue
		}
		list = append(list, more...)
	}
	return list
}
