package testwait

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestForPollsUntilTheConditionHolds(t *testing.T) {
	var n atomic.Int32
	For(t, time.Minute, "the third poll", func() bool { return n.Add(1) >= 3 })
	if got := n.Load(); got != 3 {
		t.Errorf("cond called %d times, want 3", got)
	}
}

func TestForFailsAfterTheDeadline(t *testing.T) {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() { // Fatalf ends the goroutine it is called on, as in a real test
		defer close(done)
		For(ft, time.Millisecond, "a condition that never holds", func() bool { return false })
	}()
	<-done
	if ft.msg == "" {
		t.Error("For returned without failing the test")
	}
}

// fatalRecorder records Fatalf instead of failing the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	runtime.Goexit()
}
