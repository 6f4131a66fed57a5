//go:build linux || darwin || freebsd || netbsd || openbsd

package bus

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockDir takes an exclusive lock on path, failing at once when another process
// holds it: two processes must never share a disk outbox.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("in use by another process (%s is locked)", path)
		}
		return nil, err
	}
	return f, nil
}

func unlockDir(f *os.File) { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN) }
