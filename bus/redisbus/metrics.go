package redisbus

import (
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// warnEvery bounds the Warn lines of one kind: one per interval, with the
// count of the ones left out.
const warnEvery = 10 * time.Second

// streamStats are the counts of the streams transport, exported as
// durasock_redisbus_* metrics on Options.Bus.Registerer.
type streamStats struct {
	log *slog.Logger
	// capTrimmed: entries XTRIM MAXLEN removed (the length cap, not time).
	capTrimmed atomic.Uint64
	// behindTrim: reads that found entries after their position trimmed.
	behindTrim atomic.Uint64
	// trimmedUnread: entries trimmed before this node read them.
	trimmedUnread atomic.Uint64
	// skipped: entries skipped because reading them failed repeatedly.
	skipped atomic.Uint64
	// readFailures: reads that failed while Redis kept answering.
	readFailures atomic.Uint64
	// rewinds: positions read again from the last entry in common after the
	// server's history turned out to differ (a failover).
	rewinds atomic.Uint64
	// resets: positions moved back because the stream's last id was below
	// them (a stream lost with a Redis restart, or deleted).
	resets atomic.Uint64
	// askFollowed, movedFollowed: commands of a batch sent again to the node
	// a Cluster redirection named (a slot migration, a resharding).
	askFollowed, movedFollowed atomic.Uint64

	capLog, behindLog, skipLog, rewindLog, resetLog rateLog

	// Per partition, as the readers last saw it: the stream's length and the
	// time between its first and its last id (the history it holds).
	mu     sync.Mutex
	length map[int]int64
	window map[int]time.Duration
}

// observe records what a reader's check saw of partition p.
func (st *streamStats) observe(p int, info streamState) {
	first, ok1 := idMillis(info.first)
	last, ok2 := idMillis(info.lastID)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.length == nil {
		st.length, st.window = map[int]int64{}, map[int]time.Duration{}
	}
	st.length[p] = info.length
	st.window[p] = 0
	if ok1 && ok2 && last >= first && info.length > 0 {
		st.window[p] = time.Duration(last-first) * time.Millisecond
	}
}

// rateLog lets one line through per warnEvery.
type rateLog struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

func (st *streamStats) warn(rl *rateLog, msg string, args ...any) {
	rl.mu.Lock()
	now := time.Now()
	if !rl.last.IsZero() && now.Sub(rl.last) < warnEvery {
		rl.suppressed++
		rl.mu.Unlock()
		return
	}
	n := rl.suppressed
	rl.last, rl.suppressed = now, 0
	rl.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	st.log.Warn(msg, args...)
}

// collector exports streamStats.
type statsCollector struct {
	st                                           *streamStats
	capTrimmed, behindTrim, skipped, readFailure *prometheus.Desc
	trimmedUnread, length, window                *prometheus.Desc
	rewinds, resets                              *prometheus.Desc
	askFollowed, movedFollowed                   *prometheus.Desc
}

func newStatsCollector(st *streamStats) *statsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("durasock_redisbus_"+name, help, labels, nil)
	}
	return &statsCollector{
		st:            st,
		capTrimmed:    d("stream_cap_trimmed_total", "Stream entries removed by the length cap (StreamMaxLen) rather than by the retention time."),
		behindTrim:    d("reader_behind_trim_total", "Stream reads that found entries after the reader's position already trimmed (the bus reports the missing seqs as gaps)."),
		trimmedUnread: d("trimmed_unread_total", "Stream entries trimmed (retention time or length cap) before this node read them."),
		length:        d("stream_entries", "Entries in the partition's stream, as this node's reader last saw it (at most every second while reading).", "partition"),
		window:        d("stream_window_seconds", "Time between the first and the last entry of the partition's stream: the history it holds now.", "partition"),
		skipped:       d("read_skipped_total", "Stream entries skipped because every read of them failed while Redis kept answering (the bus reports them as gaps)."),
		readFailure:   d("read_failures_total", "Stream reads that failed while Redis kept answering (for example an entry above the client output buffer limit)."),
		rewinds:       d("reader_rewinds_total", "Times a reader found the last entry it read missing on the server (a failover to a primary with another history) and read again from the last entry in common."),
		askFollowed:   d("cluster_ask_followed_total", "Commands sent again, after ASKING, to the node importing their slot (a Redis Cluster slot migration in progress) instead of failing: those of published batches and AwaitReplicas' markers."),
		movedFollowed: d("cluster_moved_followed_total", "Commands sent again to a slot's new primary after a resharding (MOVED from a node still primary), without the bus republishing anything: those of published batches and AwaitReplicas' markers."),
		resets:        d("reader_resets_total", "Times a reader found the stream's last id below its position (Redis restarted without its data, the stream deleted) and read again from the last entry in common or the stream's start (the bus reports what was lost as gaps)."),
	}
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.capTrimmed
	ch <- c.behindTrim
	ch <- c.skipped
	ch <- c.readFailure
	ch <- c.trimmedUnread
	ch <- c.length
	ch <- c.window
	ch <- c.rewinds
	ch <- c.resets
	ch <- c.askFollowed
	ch <- c.movedFollowed
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range []struct {
		d *prometheus.Desc
		v *atomic.Uint64
	}{{c.capTrimmed, &c.st.capTrimmed}, {c.behindTrim, &c.st.behindTrim}, {c.skipped, &c.st.skipped}, {c.readFailure, &c.st.readFailures}, {c.trimmedUnread, &c.st.trimmedUnread}, {c.rewinds, &c.st.rewinds}, {c.resets, &c.st.resets}, {c.askFollowed, &c.st.askFollowed}, {c.movedFollowed, &c.st.movedFollowed}} {
		ch <- prometheus.MustNewConstMetric(m.d, prometheus.CounterValue, float64(m.v.Load()))
	}
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	for p, n := range c.st.length {
		label := strconv.Itoa(p)
		ch <- prometheus.MustNewConstMetric(c.length, prometheus.GaugeValue, float64(n), label)
		ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, c.st.window[p].Seconds(), label)
	}
}
