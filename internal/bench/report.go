package bench

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
)

// PrintBroadcast writes the broadcast results as a table.
func PrintBroadcast(w io.Writer, rs []BroadcastResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tserver\ttarget/s\tsent\tper-sub/s\ttotal/s\tlost\tdup\treord\tp50 ms\tp99 ms\tmax ms\tCPU cores loadgen/node0/node1/redis\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED: %s\t\n", r.Transport, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%d\t%.0f\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%s\t\n", r.Transport, r.Server,
			r.TargetRate, r.Sent, r.PerSubscriber, r.Deliveries, r.Lost, r.Duplicated, r.Reordered, r.P50ms, r.P99ms, r.Maxms,
			fmt.Sprintf("%.2f/%.2f/%.2f/%.2f", r.CPU["loadgen"], r.CPU["node0"], r.CPU["node1"], r.CPU["redis"]))
	}
	return tw.Flush()
}

// PrintRooms writes the rooms results as a table, then each run's highest clean
// rate and its ratio to the best Node run.
func PrintRooms(w io.Writer, rs []RoomsResult, sum []RoomsSummary) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\ttransport\tnodes\ttarget/s\tsent\tper-sub/s\tlost\tdup\treord\tp50 ms\tp99 ms\tmax ms\tclean\tCPU cores loadgen/node0/node1/redis\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tFAILED: %s\t\n", r.Server, r.Transport, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%d\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%v\t%s\t\n", r.Server, r.Transport, r.Nodes,
			r.TargetRate, r.Sent, r.PerSubscriber, r.Lost, r.Duplicated, r.Reordered, r.P50ms, r.P99ms, r.Maxms, r.Clean,
			fmt.Sprintf("%.2f/%.2f/%.2f/%.2f", r.CPU["loadgen"], r.CPU["node0"], r.CPU["node1"], r.CPU["redis"]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var bestNode float64
	for _, s := range sum {
		if s.Server == ServerNode {
			bestNode = max(bestNode, s.CleanRate)
		}
	}
	for _, s := range sum {
		line := fmt.Sprintf("highest clean rate %s %s: %.0f events/s", s.Server, s.Transport, s.CleanRate)
		if s.Server != ServerNode && bestNode > 0 {
			line += fmt.Sprintf(" (%.1f× Node's best)", s.CleanRate/bestNode)
		}
		fmt.Fprintln(w, line)
	}
	return nil
}

// PrintRedisKill writes the redis-kill results as a table.
func PrintRedisKill(w io.Writer, rs []RedisKillResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "transport\tserver\trate/s\tpubs\tsent\trejected\trefused at node\tin outage\tdeliveries\tlost\tlost beyond refused\tdup\treord\tclients cut (per node)\tserver cuts queue-full/slow\tgaps reported\tsame-node max lat ms\tsame-node max gap ms\tremote catch-up ms\tremote first ms\tredis start ms\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\tFAILED: %s\t\n", r.Transport, r.Error)
			continue
		}
		cut := fmt.Sprintf("%d %v", r.ClientsCut, r.CutByNode)
		if r.SlowClients > 0 {
			cut += fmt.Sprintf(" + slow ended %d/%d", r.SlowCut, r.SlowClients)
		}
		pubs := fmt.Sprint(r.Publishers)
		if r.StopAtKill {
			pubs += " (stop at kill)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%d/%d\t%d\t%.1f\t%.1f\t%.0f\t%.0f\t%.0f\t\n", r.Transport, r.Server,
			r.Rate, pubs, r.Sent, r.Rejected, r.RefusedAtNode, r.SentDuringOutage, r.Expected, r.Lost, r.LostBeyondRefused, r.Duplicated, r.Reordered, cut, r.ServerCutQueueFull, r.ServerCutSlow,
			r.GapMessages, r.SameNodeMaxLatencyMs, r.SameNodeMaxGapMs, r.RemoteCatchUpMs, r.RemoteFirstMs, r.RedisStartMs)
	}
	return tw.Flush()
}

// PrintIdle writes the idle-memory results as a table, one row per step.
func PrintIdle(w io.Writer, rs []IdleResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tconns\tsource addrs\tRSS B/conn\tRSS at dial B/conn\theap+stack B/conn\theap B/conn\tstack B/conn\t"+
		"goroutines\tping s\theartbeats/s\tidle CPU cores\tCPU µs/heartbeat\tmachine CPU cores\tsoftirq cores\tloadgen RSS B/conn\tdial s\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%g\t%.0f\t%.3f\t%.1f\t%.3f\t%.3f\t%.0f\t%.1f\t\n", r.Server, r.Conns, r.SourceAddrs,
			r.RSSPerConn, r.RSSDialPerConn, r.HeapStackPerConn, r.HeapPerConn, r.StackPerConn, r.Goroutines,
			r.PingInterval.Seconds(), r.HeartbeatsPerSec, r.IdleCPU, r.CPUPerHeartbeatUs, r.MachineCPU, r.SoftirqCPU, r.LoadgenRSSPerConn, r.DialSeconds)
	}
	return tw.Flush()
}

// LoadAverage returns /proc/loadavg's first three fields, or "" where there is
// none: the numbers of a run mean little on a busy machine.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// PrintScale writes the scale results as a table.
func PrintScale(w io.Writer, rs []ScaleResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(rs) > 0 && rs[0].Routing {
		fmt.Fprintln(w, "interest routing on")
	}
	fmt.Fprintln(tw, "nodes\ttarget/s\tsent\tdeliveries/s\tlost\tdup\treord\tp50 ms\tp99 ms\t"+
		"CPU/node mean\tmax\tnodes total\tredis\tloadgen\t"+
		"node CPU µs/delivery\tredis CPU µs/delivery\tredis ops/delivery\tredis B in/delivery\tredis B out/delivery\tbus msgs read/event\t")
	for _, r := range rs {
		if r.Error != "" {
			fmt.Fprintf(tw, "%d\tFAILED: %s\t\n", r.Nodes, r.Error)
			continue
		}
		fmt.Fprintf(tw, "%d\t%.0f\t%d\t%.0f\t%d\t%d\t%d\t%.1f\t%.1f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.2f\t%.0f\t%.0f\t%.2f\t\n",
			r.Nodes, r.TargetRate, r.Sent, r.Deliveries, r.Lost, r.Duplicated, r.Reordered, r.P50ms, r.P99ms,
			r.NodeCPUMean, r.NodeCPUMax, r.NodeCPUTotal, r.RedisCPU, r.CPU["loadgen"],
			r.NodeCPUPerDelivery, r.RedisCPUPerDelivery, r.RedisOpsPerDelivery, r.RedisInPerDelivery, r.RedisOutPerDelivery, r.ReadPerEvent)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "Redis calls per event published, by command:")
	for _, r := range rs {
		cmds := make([]string, 0, len(r.RedisCallsPerEvent))
		for k := range r.RedisCallsPerEvent {
			cmds = append(cmds, k)
		}
		slices.SortFunc(cmds, func(a, b string) int { return cmp.Compare(r.RedisCallsPerEvent[b], r.RedisCallsPerEvent[a]) })
		parts := make([]string, len(cmds))
		for i, k := range cmds {
			parts[i] = fmt.Sprintf("%s %.3f", k, r.RedisCallsPerEvent[k])
		}
		fmt.Fprintf(w, "  %d nodes: %s\n", r.Nodes, strings.Join(parts, ", "))
	}
	return nil
}
