package gotrack

import (
	"context"
	"testing"
	"time"
)

func TestWaitWhileGoroutinesStart(t *testing.T) {
	var g Group
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("Wait with nothing running: %v", err)
	}
	release := make(chan struct{})
	g.Add()
	go func() {
		defer g.Done()
		g.Add() // a goroutine started while Wait below already waits
		go func() {
			defer g.Done()
			<-release
		}()
		<-release
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	if err := g.Wait(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Wait with goroutines running: %v, want context.DeadlineExceeded", err)
	}
	close(release)
	if err := g.Wait(context.Background()); err != nil {
		t.Fatalf("Wait after the goroutines ended: %v", err)
	}
}
