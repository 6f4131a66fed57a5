package cluster

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Answers to other nodes leave through two lanes, each a bounded queue with
// goroutines of its own, so that neither waits behind the other:
//
//   - control: confirmations of socket operations (applied), answers to hellos,
//     fetch answers and unknown-namespace answers. Each is one message computed
//     at once when the request arrives.
//   - replies: what a request's work produces later: the count and the replies
//     of a broadcast with acks (which may trickle in for as long as the
//     requester waits), and the replies of server-side emit handlers. The
//     answers of a broadcast with acks wait in its relay, which waits in a
//     ready list at most once; so they need no room in the queue and are not
//     dropped (MaxRelays bounds them).
//
// Nothing waits in a lane's goroutines but the bus's Send of one message: a
// relay of a broadcast with acks holds no goroutine while its sockets have not
// replied (see relay).
const (
	controlWorkers = 2
	replyWorkers   = 4
)

// Lane names, also the value of the lane label of the dropped-answers metric.
const (
	laneControl = "control"
	laneReplies = "replies"
)

// outgoing is one answer waiting in a lane: m, or the result of build, which
// the lane's goroutine runs (for answers whose encoding is costly).
type outgoing struct {
	to    string
	m     *message
	build func() *message
}

// lane is a bounded queue of answers and the goroutines that send them.
type lane struct {
	name    string
	q       chan outgoing
	relays  <-chan struct{} // replies lane: a relay has answers to send
	dropped atomic.Uint64
	metric  prometheus.Counter
}

func newLane(name string, size int) *lane {
	return &lane{name: name, q: make(chan outgoing, size)}
}

// start runs n goroutines that send the lane's answers until ctx is done.
func (c *Cluster) startLane(ctx context.Context, l *lane, n int) {
	for range n {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case o := <-l.q:
					if o.build != nil {
						o.m = o.build()
					}
					c.reply(ctx, o.to, o.m)
				case <-l.relays:
					for r := c.nextReady(); r != nil; r = c.nextReady() {
						r.flush(ctx)
					}
				}
			}
		}()
	}
}

// queue hands an answer to lane l without waiting. When the lane is full the
// answer is dropped, counted and logged: its requester names this node (or the
// socket) as missing.
func (c *Cluster) queue(l *lane, to string, m *message) {
	c.queueOut(l, m.kind, outgoing{to: to, m: m})
}

func (c *Cluster) queueOut(l *lane, k kind, o outgoing) {
	select {
	case l.q <- o:
		return
	default:
	}
	l.dropped.Add(1)
	c.stats.dropped.Add(1)
	l.metric.Inc()
	c.logLimited("cluster: answer to another node dropped: too many waiting to be sent (MaxServing)",
		slog.String("lane", l.name), slog.String("to", o.to), slog.String("kind", k.String()),
		slog.Uint64("dropped", l.dropped.Load()))
}

// control queues an answer on the control lane.
func (c *Cluster) control(to string, m *message) { c.queue(c.controlLane, to, m) }

// replyLater queues an answer on the replies lane.
func (c *Cluster) replyLater(to string, m *message) { c.queue(c.replyLane, to, m) }
