package compat

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/rueidis"
)

// Sources of messages, as counted.
const (
	sourceNode    = "node"    // a Node socket.io node (redis-adapter)
	sourceEmitter = "emitter" // @socket.io/redis-emitter
	sourcePython  = "python"  // python-socketio's pub/sub managers
)

// Reasons a message is not applied, as counted.
const (
	reasonDecode      = "decode"            // not a message of the protocol
	reasonPickle      = "pickle"            // a pickled python-socketio message
	reasonInvalid     = "invalid"           // decoded, but cannot be applied (e.g. not an event)
	reasonNamespace   = "unknown_namespace" // for a namespace this node does not serve
	reasonUnsupported = "unsupported"       // a request this side cannot answer
	reasonQueueFull   = "queue_full"        // arrived faster than applied (Options.MaxQueue)
	reasonRelays      = "relays_full"       // a broadcast with acks above Options.MaxRelays
	reasonAnswer      = "answer_not_sent"   // an answer that could not be published
)

// Stats counts what a NodeCluster or a Listener did since it was made.
type Stats struct {
	// Received counts the messages received, by source (node, emitter, python).
	Received map[string]uint64 `json:"received"`
	// NotApplied counts the messages received and not applied, by reason
	// (decode, pickle, invalid, unknown_namespace, unsupported, queue_full,
	// relays_full, answer_not_sent).
	NotApplied map[string]uint64 `json:"not_applied"`
	// Reconnects counts the times the subscription connection was lost.
	Reconnects uint64 `json:"reconnects"`
	// Connected reports whether the subscription connection is up.
	Connected bool `json:"connected"`
}

// Defaults of the options that name a Redis channel, exported for commands
// that offer them as flags.
const (
	DefaultKey           = "socket.io"
	DefaultPythonChannel = "socketio"
)

// Defaults of the other options (documented on the fields).
const (
	defaultRequestTimeout = 5 * time.Second
	defaultMaxQueue       = 10000
	defaultMaxRelays      = 10000
	maxAckWait            = time.Hour
)

type outMsg struct {
	channel string
	shard   bool
	payload []byte
}

// core is what NodeCluster and Listener share: a subscription connection, an
// ordered bounded queue of received messages applied by one goroutine, a
// bounded queue of answers published by another, and the counters.
type core struct {
	client rueidis.Client
	log    *slog.Logger
	sub    *subscriber
	in     chan rueidis.PubSubMessage
	out    chan outMsg
	handle func(rueidis.PubSubMessage)

	stop       chan struct{}
	life       context.Context // done on close: ends the waits of relays
	lifeCancel context.CancelFunc
	closeOnce  sync.Once
	wg         sync.WaitGroup

	mu         sync.Mutex
	received   map[string]uint64
	notApplied map[string]uint64
	metrics    *metrics
	logGate    atomic.Int64
}

func (c *core) init(client rueidis.Client, log *slog.Logger, maxQueue int, reg prometheus.Registerer, subsystem string, handle func(rueidis.PubSubMessage)) error {
	c.client, c.log, c.handle = client, log, handle
	c.in = make(chan rueidis.PubSubMessage, maxQueue)
	c.out = make(chan outMsg, maxQueue)
	c.stop = make(chan struct{})
	c.life, c.lifeCancel = context.WithCancel(context.Background())
	c.received = make(map[string]uint64)
	c.notApplied = make(map[string]uint64)
	m, err := newMetrics(reg, subsystem, c)
	if err != nil {
		return err
	}
	c.metrics = m
	c.sub = newSubscriber(client, log, c.enqueue, nil)
	c.wg.Add(2)
	go c.applyLoop()
	go c.publishLoop()
	return nil
}

// enqueue is the subscription's message hook: it never blocks the connection.
func (c *core) enqueue(m rueidis.PubSubMessage) {
	select {
	case c.in <- m:
	default:
		c.drop("", reasonQueueFull, "compat: a message arrived while the queue of received messages was full; not applied",
			slog.String("channel", m.Channel))
	}
}

func (c *core) applyLoop() {
	defer c.wg.Done()
	for {
		select {
		case m := <-c.in:
			c.handle(m)
		case <-c.stop:
			return
		}
	}
}

func (c *core) publishLoop() {
	defer c.wg.Done()
	for {
		select {
		case m := <-c.out:
			ctx, cancel := context.WithTimeout(context.Background(), commandWait)
			err := c.publish(ctx, m)
			cancel()
			if err != nil {
				c.drop("", reasonAnswer, "compat: an answer to another node was not published; it will see this node as missing",
					slog.String("channel", m.channel), slog.Any("error", err))
			}
		case <-c.stop:
			return
		}
	}
}

// publish sends one message now.
func (c *core) publish(ctx context.Context, m outMsg) error {
	var cmd rueidis.Completed
	if m.shard {
		cmd = c.client.B().Spublish().Channel(m.channel).Message(rueidis.BinaryString(m.payload)).Build()
	} else {
		cmd = c.client.B().Publish().Channel(m.channel).Message(rueidis.BinaryString(m.payload)).Build()
	}
	if err := c.client.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("compat: publish to %s: %w", m.channel, err)
	}
	return nil
}

// answer queues a message for the publisher goroutine.
func (c *core) answer(m outMsg) {
	select {
	case c.out <- m:
	default:
		c.drop("", reasonAnswer, "compat: the queue of answers is full; an answer was not published",
			slog.String("channel", m.channel))
	}
}

// closeCore stops the goroutines and the subscription.
func (c *core) closeCore() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.lifeCancel()
		c.sub.close()
		c.wg.Wait()
		c.metrics.unregister()
	})
}

func (c *core) isClosed() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

func (c *core) count(source string) {
	c.mu.Lock()
	c.received[source]++
	c.mu.Unlock()
	c.metrics.received.WithLabelValues(source).Inc()
}

// drop counts a message not applied and logs it, at most once a second.
func (c *core) drop(source, reason, msg string, attrs ...any) {
	c.mu.Lock()
	c.notApplied[reason]++
	n := c.notApplied[reason]
	c.mu.Unlock()
	c.metrics.notApplied.WithLabelValues(reason).Inc()
	now := time.Now().UnixNano()
	last := c.logGate.Load()
	if now-last < int64(time.Second) || !c.logGate.CompareAndSwap(last, now) {
		return
	}
	attrs = append(attrs, slog.String("reason", reason), slog.Uint64("not_applied", n))
	if source != "" {
		attrs = append(attrs, slog.String("source", source))
	}
	c.log.Warn(msg, attrs...)
}

// Stats returns the counters.
func (c *core) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Stats{Received: make(map[string]uint64), NotApplied: make(map[string]uint64),
		Reconnects: c.sub.reconnects.Load(), Connected: c.sub.isConnected()}
	for k, v := range c.received {
		s.Received[k] = v
	}
	for k, v := range c.notApplied {
		s.NotApplied[k] = v
	}
	return s
}

// serverCount asks Redis how many connections subscribe to channel: with
// PUBSUB NUMSUB (classic) or SHARDNUMSUB (sharded), as the Node adapters
// count the servers of a cluster.
func serverCount(ctx context.Context, client rueidis.Client, channel string, shard bool) (int, error) {
	var cmd rueidis.Completed
	if shard {
		cmd = client.B().PubsubShardnumsub().Channel(channel).Build()
	} else {
		cmd = client.B().PubsubNumsub().Channel(channel).Build()
	}
	m, err := client.Do(ctx, cmd).AsIntMap()
	if err != nil {
		return 0, fmt.Errorf("compat: counting the servers: %w", err)
	}
	return int(m[channel]), nil
}

// metrics are the Prometheus metrics of a core.
type metrics struct {
	reg        prometheus.Registerer
	received   *prometheus.CounterVec
	notApplied *prometheus.CounterVec
	reconnects prometheus.CounterFunc
}

func newMetrics(reg prometheus.Registerer, subsystem string, c *core) (*metrics, error) {
	m := &metrics{
		reg: reg,
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "durasock", Subsystem: subsystem, Name: "received_total",
			Help: "Messages received from Node socket.io nodes and emitters, by source (node, emitter, python).",
		}, []string{"source"}),
		notApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "durasock", Subsystem: subsystem, Name: "not_applied_total",
			Help: "Messages received and not applied, by reason.",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "durasock", Subsystem: subsystem, Name: "reconnects_total",
			Help: "Times the pub/sub connection was lost (what was published meanwhile was not received).",
		}, func() float64 {
			if c.sub == nil {
				return 0
			}
			return float64(c.sub.reconnects.Load())
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, col := range []prometheus.Collector{m.received, m.notApplied, m.reconnects} {
		if err := reg.Register(col); err != nil {
			m.unregister()
			return nil, fmt.Errorf("compat: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	m.reg.Unregister(m.received)
	m.reg.Unregister(m.notApplied)
	m.reg.Unregister(m.reconnects)
}
