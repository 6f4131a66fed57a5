package compat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
)

// Mode selects the protocol of @socket.io/redis-adapter a NodeCluster speaks.
type Mode uint8

const (
	// Classic is createAdapter: PUBLISH/PSUBSCRIBE on socket.io#<nsp>#…,
	// requests and answers on socket.io-request#<nsp># and
	// socket.io-response#<nsp>#; servers counted with PUBSUB NUMSUB.
	Classic Mode = iota
	// Sharded is createShardedAdapter (Redis 7 sharded pub/sub, the default
	// "dynamic" subscription mode): SPUBLISH/SSUBSCRIBE on socket.io#<nsp>#,
	// socket.io#<nsp>#<room># for the public rooms and
	// socket.io#<nsp>#<uid># for answers; servers counted with PUBSUB
	// SHARDNUMSUB.
	Sharded
)

func (m Mode) String() string {
	if m == Sharded {
		return "sharded"
	}
	return "classic"
}

// Options configures a NodeCluster. The zero value (or nil) gives the defaults.
type Options struct {
	// Mode is the protocol: Classic (default) or Sharded. Every node of the
	// cluster, Node or durasock, must use the same.
	Mode Mode
	// Key is the channel prefix (the Node adapters' key / channelPrefix
	// option). Default "socket.io".
	Key string
	// RequestTimeout bounds FetchSockets, ServerSideEmit with replies and
	// BroadcastWithAck when their ctx has no deadline, and the wait for the
	// acks of this node's sockets to a broadcast of another node that says no
	// timeout. Default 5 s.
	RequestTimeout time.Duration
	// MaxQueue bounds the messages received and not applied yet, and the
	// answers not published yet. A message above it is not applied: counted
	// (durasock_compat_not_applied_total{reason="queue_full"}) and logged.
	// Default 10 000.
	MaxQueue int
	// MaxRelays bounds the broadcasts with acks of other nodes waiting for
	// the acks of this node's sockets. Above it a request is answered with no
	// recipients, counted and logged. Default 10 000.
	MaxRelays int
	// Logger receives the log lines. Default slog.Default().
	Logger *slog.Logger
	// Registerer, when not nil, receives the metrics (durasock_compat_*).
	Registerer prometheus.Registerer
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Key == "" {
		r.Key = DefaultKey
	}
	if r.RequestTimeout <= 0 {
		r.RequestTimeout = defaultRequestTimeout
	}
	if r.MaxQueue <= 0 {
		r.MaxQueue = defaultMaxQueue
	}
	if r.MaxRelays <= 0 {
		r.MaxRelays = defaultMaxRelays
	}
	if r.Logger == nil {
		r.Logger = slog.Default()
	}
	return r
}

// role is what a subscribed channel carries.
type role uint8

const (
	roleBroadcast role = iota // classic broadcasts (the pattern)
	roleRequest               // classic requests
	roleResponse              // classic answers
	roleSharded               // every sharded channel
)

type route struct {
	nsp  string
	role role
}

// NodeCluster makes this process a member of a cluster of Node socket.io
// servers that use @socket.io/redis-adapter: one Socket.IO server, whose
// nodes run Node or durasock. Pass its Adapter method to the server as its
// adapter factory. It also applies what @socket.io/redis-emitter publishes
// (Classic mode).
type NodeCluster struct {
	core
	opts Options
	uid  string

	mu     sync.RWMutex
	nsps   map[string]*nodeAdapter
	routes map[string]route
	reqs   map[string]*pending
	relays int
}

// NewNodeCluster starts a NodeCluster on client, which it uses to publish and
// to open its subscription connection. The caller keeps ownership of client
// and closes it after the NodeCluster.
func NewNodeCluster(client rueidis.Client, opts *Options) (*NodeCluster, error) {
	if client == nil {
		return nil, fmt.Errorf("compat: nil Redis client")
	}
	o := opts.withDefaults()
	c := &NodeCluster{
		opts: o, uid: newUID(o.Mode),
		nsps: make(map[string]*nodeAdapter), routes: make(map[string]route), reqs: make(map[string]*pending),
	}
	log := o.Logger.With(slog.String("component", "compat"), slog.String("dialect", "node-"+o.Mode.String()), slog.String("uid", c.uid))
	if err := c.init(client, log, o.MaxQueue, o.Registerer, "compat", c.receive); err != nil {
		return nil, err
	}
	return c, nil
}

// newUID returns an adapter uid like Node's: 6 characters (classic), 16 hex
// digits (sharded).
func newUID(m Mode) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never returns an error
	if m == Sharded {
		return hex.EncodeToString(b[:])
	}
	return hex.EncodeToString(b[:3])
}

// UID is this node's adapter uid on the wire.
func (c *NodeCluster) UID() string { return c.uid }

// Stats returns the counters of the NodeCluster.
func (c *NodeCluster) Stats() Stats { return c.stats() }

// Adapter returns the adapter of nsp; it is an adapter.Factory. It returns once
// Redis confirmed the subscriptions of the namespace (so that the other nodes
// count this one), or after RequestTimeout while Redis is unreachable.
func (c *NodeCluster) Adapter(nsp adapter.Namespace) (adapter.Adapter, error) {
	local, err := adapter.NewLocal(nsp)
	if err != nil {
		return nil, fmt.Errorf("compat: %w", err)
	}
	a := &nodeAdapter{c: c, name: nsp.Name(), nsp: nsp, local: local, roomSubs: make(map[string]bool)}
	a.channels()
	c.mu.Lock()
	if c.isClosed() {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, ok := c.nsps[a.name]; ok {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrNamespaceTaken, a.name)
	}
	c.nsps[a.name] = a
	for _, s := range a.subs {
		c.routes[s.name] = s.route
	}
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	if err := c.sub.apply(ctx, true, a.subscriptions()...); err != nil {
		c.log.Warn("compat: subscriptions of a namespace not confirmed yet; the other nodes may not count this one until they are",
			slog.String("namespace", a.name), slog.Any("error", err))
	}
	return a, nil
}

// Factory returns c.Adapter as an adapter.Factory.
func (c *NodeCluster) Factory() adapter.Factory { return c.Adapter }

// Close closes every adapter, unsubscribes and stops. It does not close the
// Redis client. It is idempotent; ctx bounds the wait for the unsubscriptions.
func (c *NodeCluster) Close(ctx context.Context) error {
	c.mu.RLock()
	nsps := make([]*nodeAdapter, 0, len(c.nsps))
	for _, a := range c.nsps {
		nsps = append(nsps, a)
	}
	c.mu.RUnlock()
	for _, a := range nsps {
		a.close(ctx)
	}
	c.closeCore()
	c.mu.Lock()
	for _, p := range c.reqs {
		p.finish()
	}
	c.mu.Unlock()
	return nil
}

func (c *NodeCluster) removeNsp(a *nodeAdapter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nsps[a.name] != a {
		return
	}
	delete(c.nsps, a.name)
	for _, s := range a.subs {
		delete(c.routes, s.name)
	}
}

// receive decodes and applies one message, on the apply goroutine.
func (c *NodeCluster) receive(m rueidis.PubSubMessage) {
	key := m.Channel
	if m.Pattern != "" {
		key = m.Pattern
	}
	c.mu.RLock()
	r, ok := c.routes[key]
	a := c.nsps[r.nsp]
	c.mu.RUnlock()
	if !ok || a == nil {
		return // unsubscribed meanwhile
	}
	payload := []byte(m.Message)
	var o *op
	var err error
	switch r.role {
	case roleBroadcast:
		o, err = decodeClassicBroadcast(payload)
	case roleRequest:
		o, err = decodeClassicRequest(payload)
	case roleResponse:
		o, err = decodeClassicResponse(payload)
	default:
		o, err = decodeSharded(payload)
	}
	if err != nil {
		c.count(sourceNode)
		c.drop(sourceNode, reasonDecode, "compat: a message of the Node dialect did not decode; not applied",
			slog.String("channel", m.Channel), slog.Int("bytes", len(payload)), slog.Any("error", err))
		return
	}
	source := sourceNode
	if o.uid == emitterUID || (r.role != roleResponse && o.uid == "" && r.role != roleSharded) {
		source = sourceEmitter
	}
	if o.kind.isAnswer() {
		c.count(source)
		c.answered(o)
		return
	}
	if o.uid == c.uid || o.kind == opNone {
		return // this node's own message, or a heartbeat
	}
	c.count(source)
	if o.nsp != "" && o.nsp != a.name {
		return // the other namespace of a shared channel; Node ignores it too
	}
	a.serve(source, o)
}
