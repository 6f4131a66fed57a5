package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
)

// setDeathSignal makes the kernel kill a node when this process dies, so that a
// crashed or interrupted run leaves no server behind.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// RaiseFileLimit raises the soft limit of open files to the hard limit and
// returns the new soft limit.
func RaiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, err
		}
	}
	return r.Cur, nil
}

// RaiseFileLimitTo raises the soft limit of open files to the hard limit and,
// where the hard limit is below n and the process may raise it (root), both
// to n; processes started afterwards inherit it. It returns the soft limit.
func RaiseFileLimitTo(n uint64) (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Max < n {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: n, Max: n}); err == nil {
			return n, nil
		}
	}
	return RaiseFileLimit()
}

// capSysResource is the capability bit that lets a process raise a hard
// resource limit (linux/capability.h).
const capSysResource = 24

// fileLimitCause says why this process cannot have n open files: the
// system-wide ceiling of a process's limit (/proc/sys/fs/nr_open), or a hard
// limit it may not raise (no CAP_SYS_RESOURCE in its effective set: root in
// a container often lacks it, and then `ulimit -Hn` cannot go up either).
func fileLimitCause(n uint64) error {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return err
	}
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if max, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && max < n {
			return fmt.Errorf("/proc/sys/fs/nr_open is %d: raise it (sysctl fs.nr_open) and the hard limit", max)
		}
	}
	if r.Max >= n {
		return nil
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(status)) {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err == nil && caps&(1<<capSysResource) == 0 {
				return fmt.Errorf("the hard limit is %d and this process lacks CAP_SYS_RESOURCE (CapEff %s), so it cannot raise it; "+
					"run where the hard limit is at least %d (ulimit -Hn, LimitNOFILE= in systemd, docker run --ulimit nofile=%d:%d)",
					r.Max, strings.TrimSpace(hex), n, n, n)
			}
		}
	}
	return errors.New("the hard limit is " + strconv.FormatUint(r.Max, 10) + ": raise it (ulimit -Hn)")
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (not in package
// syscall).
const ipBindAddressNoPort = 24

// bindNoPort makes a socket bound to a source address take its port at
// connect, not at bind, as load generators do: the port then need only be
// free for the destination, where bind with port 0 holds it on the address
// for any destination.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}
