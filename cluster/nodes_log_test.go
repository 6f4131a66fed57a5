package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/durasock/durasock/internal/testwait"
)

// lockedBuffer is a log destination a test may read while nodes write.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNodeTimeoutNamesTheBroker: when the other nodes time out because this
// node's own broker link is down, the warning says so instead of blaming them.
func TestNodeTimeoutNamesTheBroker(t *testing.T) {
	var logs lockedBuffer
	opts := &Options{HeartbeatInterval: time.Second, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	broker, _ := memoryNodes(t, 2, opts)
	broker.setDown(true)
	testwait.For(t, waitTimeout, "the node timeout warning", func() bool {
		return strings.Contains(logs.String(), "node timed out while this node cannot reach the broker (Redis)")
	})
	broker.setDown(false)
}
