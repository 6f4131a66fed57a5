//go:build !linux

package engineio

import "errors"

// poller is not available on this system: every WebSocket session keeps a
// reader goroutine, blocked in a read while the connection is idle.
type poller struct{}

var errNoPoller = errors.New("engineio: no poller on this system")

func newPoller(*Server) (*poller, error) { return nil, errNoPoller }

func (*poller) arm(int, uint64, bool) error { return errNoPoller }

func (*poller) close() {}
