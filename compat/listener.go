package compat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// ListenerOptions configures a Listener. The zero value listens to nothing:
// set Node, Python or both.
type ListenerOptions struct {
	// Node listens to what @socket.io/redis-emitter publishes (its default
	// channels socket.io#<nsp>#… and socket.io-request#<nsp>#).
	Node bool
	// Key is the emitter's key option. Default "socket.io".
	Key string
	// Python listens to what python-socketio's pub/sub managers publish in
	// their JSON form (python-socketio 5.14 and later) on PythonChannel.
	Python bool
	// PythonChannel is the managers' channel option. Default "socketio".
	PythonChannel string
	// AckTimeout bounds the wait for a client's ack to a Python emit with a
	// callback. Default 30 s.
	AckTimeout time.Duration
	// MaxQueue bounds the messages received and not applied yet. Default 10 000.
	MaxQueue int
	// Logger receives the log lines. Default slog.Default().
	Logger *slog.Logger
	// Registerer, when not nil, receives the metrics (durasock_emitters_*).
	Registerer prometheus.Registerer
}

// Listener applies what the emitters of other ecosystems publish into Redis
// to the sockets of this node, alongside any adapter (the cluster adapter on
// Redis streams included): wrap the server's adapter factory with Wrap.
//
// Every node of a durasock cluster runs one: each applies a message to its
// own sockets. Such messages arrive over Redis pub/sub, outside the cluster
// bus: what is published while a node's subscription is down is not
// received, and they are not ordered with the cluster's own messages.
type Listener struct {
	core
	opts ListenerOptions

	mu   sync.RWMutex
	nsps map[string]*listened
}

// NewListener starts a Listener on client. The caller keeps ownership of
// client and closes it after the Listener.
func NewListener(client rueidis.Client, opts *ListenerOptions) (*Listener, error) {
	if client == nil {
		return nil, fmt.Errorf("compat: nil Redis client")
	}
	var o ListenerOptions
	if opts != nil {
		o = *opts
	}
	if o.Key == "" {
		o.Key = DefaultKey
	}
	if o.PythonChannel == "" {
		o.PythonChannel = DefaultPythonChannel
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.MaxQueue <= 0 {
		o.MaxQueue = defaultMaxQueue
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	l := &Listener{opts: o, nsps: make(map[string]*listened)}
	log := o.Logger.With(slog.String("component", "emitters"))
	if err := l.init(client, log, o.MaxQueue, o.Registerer, "emitters", l.receive); err != nil {
		return nil, err
	}
	var subs []subscription
	if o.Node {
		// Patterns, so that every namespace is heard and Node servers that
		// count subscribers of their request channel do not count this one.
		subs = append(subs, subscription{subPattern, o.Key + "#*"}, subscription{subPattern, o.Key + "-request#*"})
	}
	if o.Python {
		subs = append(subs, subscription{subChannel, o.PythonChannel})
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultRequestTimeout)
	defer cancel()
	if err := l.sub.apply(ctx, true, subs...); err != nil {
		l.log.Warn("compat: emitter subscriptions not confirmed yet", slog.Any("error", err))
	}
	return l, nil
}

// Stats returns the counters of the Listener.
func (l *Listener) Stats() Stats { return l.stats() }

// Close stops the Listener. It does not close the adapters it wrapped.
func (l *Listener) Close(context.Context) error {
	l.closeCore()
	return nil
}

// Wrap returns a factory that makes f's adapter and has the Listener apply
// the emitters' messages of the namespace through it (as operations with
// Options.Local: on this node's sockets only).
func (l *Listener) Wrap(f adapter.Factory) adapter.Factory {
	return func(nsp adapter.Namespace) (adapter.Adapter, error) {
		inner, err := f(nsp)
		if err != nil {
			return nil, err
		}
		w := &listened{Adapter: inner, l: l, nsp: nsp}
		l.mu.Lock()
		if l.isClosed() {
			l.mu.Unlock()
			return inner, nil // nothing to listen for any more
		}
		l.nsps[nsp.Name()] = w
		l.mu.Unlock()
		return w, nil
	}
}

// listened is an adapter the Listener applies messages through.
type listened struct {
	adapter.Adapter
	l    *Listener
	nsp  adapter.Namespace
	once sync.Once
}

func (w *listened) Close() error {
	w.once.Do(func() {
		w.l.mu.Lock()
		if w.l.nsps[w.nsp.Name()] == w {
			delete(w.l.nsps, w.nsp.Name())
		}
		w.l.mu.Unlock()
	})
	return w.Adapter.Close()
}

func (l *Listener) target(nsp string) *listened {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.nsps[nsp]
}

func (l *Listener) receive(m rueidis.PubSubMessage) {
	payload := []byte(m.Message)
	switch {
	case m.Pattern == "" && m.Channel == l.opts.PythonChannel:
		l.count(sourcePython)
		l.python(payload)
	case m.Pattern == l.opts.Key+"#*":
		l.count(sourceEmitter)
		o, err := decodeClassicBroadcast(payload)
		if err != nil {
			l.drop(sourceEmitter, reasonDecode, "compat: an emitter message did not decode; not applied",
				slog.String("channel", m.Channel), slog.Any("error", err))
			return
		}
		l.applyNode(o)
	case m.Pattern == l.opts.Key+"-request#*":
		l.count(sourceEmitter)
		o, err := decodeClassicRequest(payload)
		if err != nil {
			l.drop(sourceEmitter, reasonDecode, "compat: an emitter request did not decode; not applied",
				slog.String("channel", m.Channel), slog.Any("error", err))
			return
		}
		o.nsp = strings.TrimSuffix(strings.TrimPrefix(m.Channel, l.opts.Key+"-request#"), "#")
		l.applyNode(o)
	}
}

// applyNode applies a message of @socket.io/redis-emitter to this node.
func (l *Listener) applyNode(o *op) {
	w := l.target(o.nsp)
	if w == nil {
		l.drop(sourceEmitter, reasonNamespace, "compat: an emitter message for a namespace this node does not serve; not applied",
			slog.String("namespace", o.nsp))
		return
	}
	ctx, cancel := context.WithTimeout(l.life, defaultRequestTimeout)
	defer cancel()
	opts := o.options()
	opts.Local = true
	var err error
	switch o.kind {
	case opBroadcast:
		var p *parser.Packet
		if p, err = toPacket(o.packet, o.nsp); err == nil {
			err = w.Broadcast(ctx, p, opts)
		}
	case opJoin, opLeave, opDisconnect:
		if o.sid != "" {
			opts = adapter.Options{Rooms: []string{o.sid}, Local: true}
			o.target = []string{o.room}
		}
		switch o.kind {
		case opJoin:
			err = w.AddSockets(ctx, opts, o.target)
		case opLeave:
			err = w.DelSockets(ctx, opts, o.target)
		default:
			err = w.DisconnectSockets(ctx, opts, o.close)
		}
	case opServerEmit:
		if o.requestID != "" {
			l.drop(sourceEmitter, reasonUnsupported, "compat: a server-side emit with acknowledgement from a Node server; only emitters are listened to")
			return
		}
		var event string
		var args []json.RawMessage
		if event, args, err = eventArgs(o.data); err == nil {
			w.nsp.HandleServerSideEmit(event, args, nil)
		}
	default:
		l.drop(sourceEmitter, reasonUnsupported, "compat: a request of a Node server, not of an emitter; not applied (use the node-redis-adapter dialect to join a Node cluster)",
			slog.String("kind", o.kind.String()))
		return
	}
	if err != nil && !errors.Is(err, adapter.ErrClosed) {
		l.drop(sourceEmitter, reasonInvalid, "compat: an emitter message cannot be applied",
			slog.String("namespace", o.nsp), slog.String("kind", o.kind.String()), slog.Any("error", err))
	}
}
