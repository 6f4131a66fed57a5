// Package gotrack counts the goroutines a server owns so that its shutdown can
// wait for them.
package gotrack

import (
	"context"
	"sync"
)

// Group counts running goroutines. Unlike sync.WaitGroup it may gain goroutines
// while someone waits for it to drain: a session flushing its queue during
// Shutdown starts one, for example. The zero value is ready to use.
type Group struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to zero; nil when nobody waits
}

// Add counts one more running goroutine.
func (g *Group) Add() {
	g.mu.Lock()
	g.n++
	g.mu.Unlock()
}

// Done counts one goroutine less; it wakes the waiters when none is left.
func (g *Group) Done() {
	g.mu.Lock()
	g.n--
	if g.n == 0 && g.idle != nil {
		close(g.idle)
		g.idle = nil
	}
	g.mu.Unlock()
}

// Wait returns nil when no counted goroutine runs, or ctx.Err() when ctx ends
// first.
func (g *Group) Wait(ctx context.Context) error {
	g.mu.Lock()
	if g.n == 0 {
		g.mu.Unlock()
		return nil
	}
	if g.idle == nil {
		g.idle = make(chan struct{})
	}
	idle := g.idle
	g.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
