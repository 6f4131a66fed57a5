package redistest

import "syscall"

// sysProcAttr makes the kernel kill a child when the test binary dies, so a crashed or
// timed-out test leaves no redis-server behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
