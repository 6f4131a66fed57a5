package nemesis

import (
	"time"

	"github.com/durasock/durasock/socketio"
)

// setRecovery enables connection state recovery on a node when d > 0.
func setRecovery(o *socketio.Options, d time.Duration) {
	if d > 0 {
		o.Recovery = &socketio.RecoveryOptions{MaxDisconnectionDuration: d}
	}
}
