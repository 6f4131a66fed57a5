package redisbus

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/redis/rueidis"
)

// lazyClient makes the rueidis client on first use and again after a failed
// attempt, because rueidis.NewClient dials at construction and a transport must
// work while Redis is down at start. Once made, the client reconnects by itself.
//
// One attempt runs at a time in a goroutine owned by the lazyClient (Close waits
// for it); callers wait for it or for their ctx, whichever is first.
type lazyClient struct {
	opt      rueidis.ClientOption
	topology Topology

	mu      sync.Mutex
	client  rueidis.Client
	attempt *dialAttempt
	closed  bool
	wg      sync.WaitGroup
}

type dialAttempt struct {
	done   chan struct{}
	client rueidis.Client
	err    error
}

func newLazyClient(opt rueidis.ClientOption, topology Topology) *lazyClient {
	return &lazyClient{opt: opt, topology: topology}
}

// get returns the client, making it if needed. It fails with ErrUnavailable
// (wrapping the cause) when Redis cannot be reached, with ctx.Err() when ctx
// ends first, and with ErrClosed after close.
func (l *lazyClient) get(ctx context.Context) (rueidis.Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	if l.client != nil {
		c := l.client
		l.mu.Unlock()
		return c, nil
	}
	a := l.attempt
	if a == nil {
		a = &dialAttempt{done: make(chan struct{})}
		l.attempt = a
		l.wg.Add(1)
		go l.dial(a)
	}
	l.mu.Unlock()
	select {
	case <-a.done:
		if a.err != nil {
			return nil, a.err
		}
		return a.client, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (l *lazyClient) dial(a *dialAttempt) {
	defer l.wg.Done()
	c, err := rueidis.NewClient(l.opt)
	if err == nil && l.topology == Cluster && c.Mode() != rueidis.ClientModeCluster {
		c.Close()
		c, err = nil, fmt.Errorf("%w: the redis+cluster URL names a server that is not in cluster mode", ErrBadURL)
	}
	if err != nil && !errors.Is(err, ErrBadURL) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	l.mu.Lock()
	l.attempt = nil
	if err == nil {
		if l.closed {
			c.Close()
			c, err = nil, ErrClosed
		} else {
			l.client = c
		}
	}
	a.client, a.err = c, err
	close(a.done)
	l.mu.Unlock()
}

// current returns the client if it has been made, without dialing.
func (l *lazyClient) current() rueidis.Client {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.client
}

// close closes the client and waits for a dial in progress; it is idempotent.
func (l *lazyClient) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	c := l.client
	l.client = nil
	l.mu.Unlock()
	l.wg.Wait()
	if c != nil {
		c.Close()
	}
}

func unixDialer(path string) func(context.Context, string, *net.Dialer, *tls.Config) (net.Conn, error) {
	return func(ctx context.Context, _ string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
		return d.DialContext(ctx, "unix", path)
	}
}

// isCluster reports whether c talks to a Redis Cluster (keys of different slots
// cannot share a command; pub/sub is sharded).
func isCluster(c rueidis.Client) bool { return c.Mode() == rueidis.ClientModeCluster }
