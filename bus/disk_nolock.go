//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package bus

import "os"

// lockDir opens the lock file; this platform has no flock, so two processes
// sharing a directory are not detected.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}

func unlockDir(*os.File) {}
