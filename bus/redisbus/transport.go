package redisbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// StreamKey is the stream of partition p of the Streams transport:
// "{<prefix>:<p>}:stream". The braces are a Redis Cluster hash tag, so each
// partition has its own slot and a cluster spreads partitions over its primaries.
func StreamKey(prefix string, p int) string {
	return "{" + prefix + ":" + strconv.Itoa(p) + "}:stream"
}

// InboxKey is the stream of inbox b (0 <= b < Options.Inboxes) of the Streams
// transport, partition Partitions+b: "{<prefix>:in:<b>}:stream". Like a shared
// partition, each inbox has its own hash tag, so a Redis Cluster spreads the
// inboxes over its primaries.
func InboxKey(prefix string, b int) string {
	return "{" + prefix + ":in:" + strconv.Itoa(b) + "}:stream"
}

// PartitionChannel is the channel of partition p of the PubSub transport:
// "{<prefix>:<p>}:pubsub" (a sharded channel on Redis Cluster).
func PartitionChannel(prefix string, p int) string {
	return "{" + prefix + ":" + strconv.Itoa(p) + "}:pubsub"
}

// NewTransport makes the transport named by opts.Kind for opts.URL. It does not
// connect: the first call that needs Redis does, and calls fail with an error
// (wrapping ErrUnavailable) until Redis answers. It fails only for a bad URL,
// bad options or unreadable TLS files.
func NewTransport(opts *Options) (bus.Transport, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.setDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	ep, err := ParseEndpoint(o.URL)
	if err != nil {
		return nil, err
	}
	if ep.Inboxes > 0 {
		o.Inboxes = ep.Inboxes
		if err := o.validate(); err != nil {
			return nil, err
		}
	}
	co, err := clientOption(ep, &o)
	if err != nil {
		return nil, err
	}
	log := o.Bus.Logger
	if log == nil {
		log = slog.Default()
	}
	b := &base{opts: o, conn: newLazyClient(co, ep.Topology), all: AllChannel(o.Prefix), closed: make(chan struct{}),
		stats: &streamStats{log: log}, legacy: newLegacyTargets(legacyDirectFor)}
	if o.Kind == Streams && o.Bus.Registerer != nil {
		b.metrics = newStatsCollector(b.stats)
		if err := o.Bus.Registerer.Register(b.metrics); err != nil {
			return nil, fmt.Errorf("redisbus: register metrics: %w", err)
		}
	}
	switch o.Kind {
	case PubSub:
		return newPubSub(b), nil
	default:
		return newStreams(b), nil
	}
}

// base is what both transports share: the lazy client and the direct plane.
type base struct {
	opts Options
	conn *lazyClient
	all  string
	// legacy are the nodes that did not receive a frame on their NodeChannel
	// lately: Send uses their legacyNodeChannel for a while.
	legacy *legacyTargets

	closeOnce sync.Once
	closed    chan struct{} // closed by Close: running Subscribe calls return

	stats   *streamStats
	metrics *statsCollector // registered on opts.Bus.Registerer (streams only)
}

// Partitions is the number of partitions of the reliable plane: the shared
// ones, then the inboxes.
func (b *base) Partitions() int { return b.opts.Partitions + b.opts.Inboxes }

// client returns the connected client or an error at once.
func (b *base) client(ctx context.Context) (rueidis.Client, error) {
	return b.conn.get(ctx)
}

// Ping checks that Redis answers.
func (b *base) Ping(ctx context.Context) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	return b.wrap("ping", c.Do(ctx, c.B().Ping().Build()).Error())
}

// Close closes the client; it is idempotent. Calls in progress return an error.
func (b *base) Close() error {
	b.closeOnce.Do(func() {
		close(b.closed)
		b.conn.close()
		if b.metrics != nil {
			b.opts.Bus.Registerer.Unregister(b.metrics)
		}
	})
	return nil
}

// subscribeGroup starts the group of one Subscribe call, with a member that
// ends it with ErrClosed when the transport is closed: rueidis does not close
// connections taken out of its pool, so Close must stop their readers.
func (b *base) subscribeGroup(ctx context.Context) *group {
	g := newGroup(ctx)
	g.run(func(ctx context.Context) error {
		select {
		case <-b.closed:
			return ErrClosed
		case <-ctx.Done():
			return nil
		}
	})
	return g
}

// wrap gives an error of a Redis call the package prefix, and marks connection
// failures with ErrUnavailable.
func (b *base) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, rueidis.ErrClosing) && b.conn.current() == nil {
		return fmt.Errorf("redisbus: %s: %w", op, ErrClosed)
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redisbus: %s: %w", op, err)
	}
	return fmt.Errorf("redisbus: %s: %w: %w", op, ErrUnavailable, err)
}

// receive runs one subscription until ctx ends or it fails. A subscription that
// Redis ends by itself (nil from rueidis) is an error: the caller must rebuild.
func (b *base) receive(ctx context.Context, c rueidis.Client, sharded bool, channels []string, fn func(rueidis.PubSubMessage)) error {
	var cmd rueidis.Completed
	if sharded {
		cmd = c.B().Ssubscribe().Channel(channels...).Build()
	} else {
		cmd = c.B().Subscribe().Channel(channels...).Build()
	}
	// A connection of its own: a slow deliver then holds back only this
	// subscription (until Redis drops it at its output buffer limit, which
	// Subscribe reports), never the commands of Publish and Send. rueidis
	// unsubscribes the connection when it goes back to the pool, and pings it
	// while idle, so a subscription on a dead link fails within about
	// WriteTimeout.
	dc, release := c.Dedicate()
	defer release()
	err := dc.Receive(ctx, cmd, fn)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err == nil {
		return ErrSubscriptionEnded
	}
	return b.wrap("subscribe", err)
}

// group runs the goroutines of one Subscribe call: the first to fail cancels
// the others, and wait returns its error after all have stopped.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context) *group {
	g := &group{}
	g.ctx, g.cancel = context.WithCancel(ctx)
	return g
}

func (g *group) run(f func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := f(g.ctx); err != nil {
			g.once.Do(func() {
				g.err = err
				g.cancel()
			})
		}
	}()
}

func (g *group) wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}

// serial makes deliver safe to call from several goroutines, one call at a time.
func serial(deliver func(bus.Frame)) func(bus.Frame) {
	var mu sync.Mutex
	return func(f bus.Frame) {
		mu.Lock()
		defer mu.Unlock()
		deliver(f)
	}
}
