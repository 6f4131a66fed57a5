package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times on Linux.
const clockTicks = 100

// cpuSeconds returns the user+system CPU time of a process, from
// /proc/<pid>/stat.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	// The command name may hold spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %d fields", pid, len(f))
	}
	// After the name: state(0) ... utime(11) stime(12).
	u, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	s, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: bad times", pid)
	}
	return float64(u+s) / clockTicks, nil
}

// machineCPU returns the CPU seconds every core of the machine spent busy
// (user, nice, system, irq, softirq, steal) and, of them, in softirq, where
// the kernel's network work runs when no process is (a TCP timer, a packet
// on loopback): the first line of /proc/stat.
func machineCPU() (busy, softirq float64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := bytes.Fields(line)
	if len(f) < 9 || string(f[0]) != "cpu" {
		return 0, 0, fmt.Errorf("bench: /proc/stat: first line %q", line)
	}
	var t [8]uint64 // user nice system idle iowait irq softirq steal
	for i := range t {
		if t[i], err = strconv.ParseUint(string(f[1+i]), 10, 64); err != nil {
			return 0, 0, fmt.Errorf("bench: /proc/stat: %w", err)
		}
	}
	busy = float64(t[0]+t[1]+t[2]+t[5]+t[6]+t[7]) / clockTicks
	return busy, float64(t[6]) / clockTicks, nil
}

// cpuMeter measures the CPU share of the processes of a run.
type cpuMeter struct {
	pids  map[string]int
	start map[string]float64
}

func newCPUMeter(e *env) *cpuMeter {
	m := &cpuMeter{pids: map[string]int{"loadgen": os.Getpid()}, start: map[string]float64{}}
	for _, n := range e.nodes {
		m.pids[n.Name] = n.PID()
	}
	if e.redis != nil {
		m.pids["redis"] = e.redis.PID()
	}
	for k, pid := range m.pids {
		if s, err := cpuSeconds(pid); err == nil {
			m.start[k] = s
		}
	}
	return m
}

// shares returns, per process, the CPU seconds used per second of elapsed time
// (1.0 is one core busy).
func (m *cpuMeter) shares(elapsed float64) map[string]float64 {
	out := map[string]float64{}
	for k, pid := range m.pids {
		s0, ok := m.start[k]
		if !ok {
			continue
		}
		if s, err := cpuSeconds(pid); err == nil && elapsed > 0 {
			out[k] = (s - s0) / elapsed
		}
	}
	return out
}
