//go:build !linux

package bench

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func setDeathSignal(*exec.Cmd) {}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt)
}

// RaiseFileLimit is implemented on Linux only.
func RaiseFileLimit() (uint64, error) { return 0, errors.New("bench: RaiseFileLimit: Linux only") }

func fileLimitCause(uint64) error { return nil }

// RaiseFileLimitTo raises the limit of open files on Linux only.
func RaiseFileLimitTo(uint64) (uint64, error) {
	return 0, errors.New("bench: RaiseFileLimitTo: Linux only")
}

// bindNoPort leaves the socket as it is: IP_BIND_ADDRESS_NO_PORT is Linux's.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
