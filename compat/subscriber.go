package compat

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

// subKind is how a subscription is made.
type subKind uint8

const (
	subChannel subKind = iota // SUBSCRIBE
	subPattern                // PSUBSCRIBE
	subShard                  // SSUBSCRIBE
)

type subscription struct {
	kind subKind
	name string
}

// Reconnect delays of a subscription connection.
const (
	reconnectBase = 100 * time.Millisecond
	reconnectCap  = 5 * time.Second
	commandWait   = 5 * time.Second
)

// subscriber keeps one connection of its own subscribed to a changing set of
// channels and patterns, and re-subscribes them after the connection breaks.
// Pub/sub keeps nothing: what is published while the connection is down is
// not received (counted by reconnects, the only trace Redis leaves).
type subscriber struct {
	client    rueidis.Client
	log       *slog.Logger
	onMessage func(rueidis.PubSubMessage)
	onState   func(connected bool)

	mu        sync.Mutex
	want      map[subscription]bool // wanted subscriptions
	confirmed map[subscription]bool // confirmed by Redis on the current connection
	connected bool
	changed   chan struct{} // closed and replaced when confirmed or connected change

	wake       chan struct{}
	cancel     context.CancelFunc
	done       chan struct{}
	reconnects atomic.Uint64
}

func newSubscriber(client rueidis.Client, log *slog.Logger, onMessage func(rueidis.PubSubMessage), onState func(bool)) *subscriber {
	ctx, cancel := context.WithCancel(context.Background())
	s := &subscriber{
		client: client, log: log, onMessage: onMessage, onState: onState,
		want: make(map[subscription]bool), confirmed: make(map[subscription]bool),
		changed: make(chan struct{}), wake: make(chan struct{}, 1),
		cancel: cancel, done: make(chan struct{}),
	}
	go s.run(ctx)
	return s
}

// close stops the subscriber and releases its connection.
func (s *subscriber) close() {
	s.cancel()
	<-s.done
}

func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// changedLocked wakes the waiters; s.mu is held.
func (s *subscriber) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// set asks for subs to be subscribed (on) or not, and returns at once.
func (s *subscriber) set(on bool, subs ...subscription) {
	s.mu.Lock()
	for _, sub := range subs {
		if on {
			s.want[sub] = true
		} else {
			delete(s.want, sub)
		}
	}
	s.mu.Unlock()
	s.signal()
}

// apply is set, then a wait until Redis confirmed it on the current
// connection or ctx is done. An unsubscription does not wait while the
// connection is down (there is nothing to undo then).
func (s *subscriber) apply(ctx context.Context, on bool, subs ...subscription) error {
	s.set(on, subs...)
	for {
		s.mu.Lock()
		ok := !s.connected && !on
		if !ok && s.connected {
			ok = true
			for _, sub := range subs {
				if s.confirmed[sub] != on {
					ok = false
					break
				}
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// isConnected reports whether the subscription connection is up.
func (s *subscriber) isConnected() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.connected
}

func (s *subscriber) onSubscription(m rueidis.PubSubSubscription) {
	var sub subscription
	on := true
	switch m.Kind {
	case "subscribe":
		sub.kind = subChannel
	case "unsubscribe":
		sub.kind, on = subChannel, false
	case "psubscribe":
		sub.kind = subPattern
	case "punsubscribe":
		sub.kind, on = subPattern, false
	case "ssubscribe":
		sub.kind = subShard
	case "sunsubscribe":
		sub.kind, on = subShard, false
	default:
		return
	}
	sub.name = m.Channel
	s.mu.Lock()
	if on {
		s.confirmed[sub] = true
	} else {
		delete(s.confirmed, sub)
	}
	s.changedLocked()
	s.mu.Unlock()
}

func (s *subscriber) setConnected(on bool) {
	s.mu.Lock()
	s.connected = on
	if !on {
		clear(s.confirmed)
	}
	s.changedLocked()
	s.mu.Unlock()
	if s.onState != nil {
		s.onState(on)
	}
}

func (s *subscriber) run(ctx context.Context) {
	defer close(s.done)
	attempt := 0
	for ctx.Err() == nil {
		err := s.session(ctx)
		if ctx.Err() != nil {
			return
		}
		n := s.reconnects.Add(1)
		s.log.Warn("compat: pub/sub connection lost; what is published until it is back is not received",
			slog.Any("error", err), slog.Uint64("reconnects", n))
		attempt++
		d := min(reconnectCap, reconnectBase<<min(attempt, 10))
		d = d/2 + rand.N(d/2+1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// session runs one connection until it fails or ctx ends.
func (s *subscriber) session(ctx context.Context) error {
	dc, release := s.client.Dedicate()
	defer func() {
		dc.Close()
		release()
		s.setConnected(false)
	}()
	errs := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: s.onMessage, OnSubscription: s.onSubscription})
	// A PING proves the connection before it is called connected.
	pctx, cancel := context.WithTimeout(ctx, commandWait)
	err := dc.Do(pctx, dc.B().Ping().Build()).Error()
	cancel()
	if err != nil {
		return err
	}
	s.setConnected(true)
	issued := make(map[subscription]bool)
	for {
		if err := s.sync(ctx, dc, issued); err != nil {
			return err
		}
		select {
		case <-s.wake:
		case err := <-errs:
			if err == nil {
				err = errSubscriptionEnded
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// sync sends the (un)subscribe commands that make issued what s.want is.
func (s *subscriber) sync(ctx context.Context, dc rueidis.DedicatedClient, issued map[subscription]bool) error {
	s.mu.Lock()
	var add, del [3][]string
	for sub := range s.want {
		if !issued[sub] {
			add[sub.kind] = append(add[sub.kind], sub.name)
			issued[sub] = true
		}
	}
	for sub := range issued {
		if !s.want[sub] {
			del[sub.kind] = append(del[sub.kind], sub.name)
			delete(issued, sub)
		}
	}
	s.mu.Unlock()
	var cmds rueidis.Commands
	b := dc.B()
	if len(add[subChannel]) > 0 {
		cmds = append(cmds, b.Subscribe().Channel(add[subChannel]...).Build())
	}
	if len(add[subPattern]) > 0 {
		cmds = append(cmds, b.Psubscribe().Pattern(add[subPattern]...).Build())
	}
	for _, ch := range add[subShard] {
		// One per channel: on a Redis Cluster the channels of one command
		// must share a slot.
		cmds = append(cmds, b.Ssubscribe().Channel(ch).Build())
	}
	for _, ch := range del[subChannel] {
		cmds = append(cmds, b.Unsubscribe().Channel(ch).Build())
	}
	for _, ch := range del[subPattern] {
		cmds = append(cmds, b.Punsubscribe().Pattern(ch).Build())
	}
	for _, ch := range del[subShard] {
		cmds = append(cmds, b.Sunsubscribe().Channel(ch).Build())
	}
	if len(cmds) == 0 {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, commandWait)
	defer cancel()
	for _, r := range dc.DoMulti(cctx, cmds...) {
		if err := r.Error(); err != nil {
			return err
		}
	}
	return nil
}
