package bus_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/internal/redistest"
	"github.com/durasock/durasock/internal/testwait"
)

// stillHeldLog is the bus's log line after a break that lost nothing it
// retained.
const stillHeldLog = "bus: the broker connection broke; it still holds every message it acknowledged last, none published again"

// msgCounter is a slog.Handler counting the records with a given message.
type msgCounter struct {
	msg string
	mu  sync.Mutex
	n   int
}

func (c *msgCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *msgCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == c.msg {
		c.mu.Lock()
		c.n++
		c.mu.Unlock()
	}
	return nil
}
func (c *msgCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *msgCounter) WithGroup(string) slog.Handler      { return c }
func (c *msgCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// TestRedisRepublishesOnlyWhatRedisLost: node a publishes n messages, then m
// more after a snapshot, and the connection breaks in one of three ways:
// Redis (RDB only) is SIGKILLed and restarted from the snapshot, losing the m;
// Redis with appendfsync always is SIGKILLed and restarted, losing nothing;
// every client connection is killed (CLIENT KILL, like a network cut), Redis
// losing nothing. a publishes again exactly what Redis lost, counted from
// what it wrote, not its retention window (n+m, what it published before it
// read the streams), and a receiver gets every message once, in order, with no
// gap reported.
func TestRedisRepublishesOnlyWhatRedisLost(t *testing.T) {
	t.Parallel()
	const n, m, k = 300, 40, 20
	for _, tc := range []struct {
		name   string
		opts   []redistest.Option
		lost   int
		break_ func(ctx context.Context, t *testing.T, srv *redistest.Server, noticed func() bool)
	}{
		{"restart from an older snapshot", []redistest.Option{redistest.WithoutPersistence()}, m, killRestart},
		{"restart with appendfsync always", []redistest.Option{redistest.WithAOFPolicy("always")}, 0, killRestart},
		{"connections killed", nil, 0, func(ctx context.Context, t *testing.T, srv *redistest.Server, noticed func() bool) {
			t.Helper()
			// A connection killed while none of a's commands is on it (its
			// read between two XREADs, no publish or ping under way) is
			// replaced without an error: a sees no break, and needs none, as
			// Redis lost nothing. Killed again until a sees one, as a
			// network cut that lasts fails the commands sent during it.
			for try := 0; try < 20 && !noticed(); try++ {
				if _, err := srv.Do(ctx, "CLIENT", "KILL", "TYPE", "normal"); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(3 * time.Second)
				for time.Now().Before(deadline) && !noticed() {
					time.Sleep(20 * time.Millisecond)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Standalone(t, tc.opts...)
			logs := &msgCounter{msg: stillHeldLog}
			tr, err := redisbus.NewTransport(&redisbus.Options{URL: srv.URL(), Partitions: 2})
			if err != nil {
				t.Fatal(err)
			}
			a, err := bus.New(tr, &bus.Config{NodeID: "a", Logger: slog.New(logs), Retain: bus.RetainConfig{Window: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := a.Close(ctx); err != nil {
					t.Errorf("Close a: %v", err)
				}
			})
			a.Receive(func(bus.Message) {})
			r := openRedisBus(t, srv.URL(), "r", bus.Config{})
			var got recorder
			r.Receive(got.add)
			waitConnected(t, a)
			waitConnected(t, r)
			ctx := t.Context()
			publish := func(from, to int) {
				t.Helper()
				for i := from; i <= to; i++ {
					if err := a.Publish(ctx, "k", fmt.Appendf(nil, "a/%d", i)); err != nil {
						t.Fatal(err)
					}
				}
				testwait.For(t, 30*time.Second, "a's outbox to empty", func() bool { return a.Stats().Published == uint64(to) })
			}
			publish(1, n)
			if _, err := srv.Do(ctx, "SAVE"); err != nil {
				t.Fatal(err)
			}
			publish(n+1, n+m)
			testwait.For(t, 30*time.Second, "r to read everything", func() bool { return got.len() == n+m })
			// a decides what to publish again before its next publish or
			// probe after it noted the break.
			republished := func() bool { return logs.count() > 0 || a.Stats().Republishes > 0 }
			tc.break_(ctx, t, srv, republished)
			for deadline := time.Now().Add(30 * time.Second); !republished(); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("a did not republish within 30s after the break: a %+v", a.Stats())
				}
			}
			publish(n+m+1, n+m+k)
			testwait.For(t, 30*time.Second, "r to receive everything", func() bool { return got.len() >= n+m+k })
			probes := a.Stats().ProbesSent
			testwait.For(t, 30*time.Second, "two more probe rounds", func() bool { return a.Stats().ProbesSent >= probes+2 })
			if bad := got.check("a", n+m+k); bad != "" {
				t.Error(bad)
			}
			if s := r.Stats(); s.Gaps != 0 || s.GapMessages != 0 {
				t.Errorf("r reported %d gaps (%d messages)", s.Gaps, s.GapMessages)
			}
			s := a.Stats()
			if s.Republished != uint64(tc.lost) {
				t.Errorf("a republished %d messages, Redis lost %d (a retained %d)", s.Republished, tc.lost, n+m)
			}
			if tc.lost == 0 && logs.count() == 0 {
				t.Errorf("no %q log", stillHeldLog)
			}
			t.Logf("a: republished %d in %d episodes, reconnects %d; r: %d duplicates skipped", s.Republished, s.Republishes, s.Reconnects, r.Stats().Duplicates)
		})
	}
}

func killRestart(ctx context.Context, t *testing.T, srv *redistest.Server, _ func() bool) {
	t.Helper()
	if err := srv.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
}
