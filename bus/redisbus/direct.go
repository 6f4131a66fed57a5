package redisbus

import (
	"context"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// NodeChannel is the direct-plane channel of one node: "{<prefix>:node:<id>}".
// The braces are a Redis Cluster hash tag of the node's own, so the direct
// frames to different nodes are spread over the primaries of a cluster. Nodes
// also listen on legacyNodeChannel, the name of earlier versions, and Send
// falls back to it for a node that does not listen on this one (see the
// package documentation, "Rolling upgrades").
func NodeChannel(prefix, nodeID string) string {
	return "{" + prefix + ":node:" + nodeID + "}"
}

// legacyNodeChannel is the direct-plane channel of one node in earlier
// versions, "{<prefix>}:node:<id>", in the slot of AllChannel. Nodes still
// listen on it, so that nodes of an earlier version reach them during a
// rolling upgrade.
func legacyNodeChannel(prefix, nodeID string) string {
	return "{" + prefix + "}:node:" + nodeID
}

// AllChannel is the direct-plane channel every node listens to: "{<prefix>}:all".
// A frame to every node is one publish on one channel, so it has one slot; it
// carries heartbeats, hellos and goodbyes, a few frames per node and heartbeat
// interval. It shares its hash tag with the legacy node channels, so on Redis
// Cluster one sharded subscription covers both.
func AllChannel(prefix string) string {
	return "{" + prefix + "}:all"
}

// Send publishes one direct frame to a node's channel or to the all channel.
// Nobody listening is not an error: the direct plane is best effort. A frame
// to a node goes to its NodeChannel; when nobody received it there (a node of
// an earlier version, or one not subscribed right now), Send publishes it on
// its legacyNodeChannel, and goes there directly for that node during
// legacyDirectFor. Nobody received the first publish, so a node never gets a
// frame twice.
func (b *base) Send(ctx context.Context, to string, data []byte) error {
	c, err := b.client(ctx)
	if err != nil {
		return err
	}
	msg := rueidis.BinaryString(data)
	if to == "" {
		return b.wrap("send", c.Do(ctx, publishCmd(c, b.all, msg)).Error())
	}
	if !b.legacy.has(to, time.Now()) {
		n, err := c.Do(ctx, publishCmd(c, NodeChannel(b.opts.Prefix, to), msg)).AsInt64()
		if err != nil {
			return b.wrap("send", err)
		}
		if n > 0 {
			return nil
		}
		b.legacy.add(to, time.Now())
	}
	return b.wrap("send", c.Do(ctx, publishCmd(c, legacyNodeChannel(b.opts.Prefix, to), msg)).Error())
}

// publishCmd is SPUBLISH on a Redis Cluster (a sharded channel: the message
// stays within the shard of its slot), PUBLISH otherwise.
func publishCmd(c rueidis.Client, ch, msg string) rueidis.Completed {
	if isCluster(c) {
		return c.B().Spublish().Channel(ch).Message(msg).Build()
	}
	return c.B().Publish().Channel(ch).Message(msg).Build()
}

// directChannels are the channels a node listens to on the direct plane, in
// groups of one slot each: its own channel, and its legacy channel with the all
// channel. On a single server or Sentinel one subscription takes them all.
func (b *base) directChannels(nodeID string) [][]string {
	return [][]string{
		{NodeChannel(b.opts.Prefix, nodeID)},
		{legacyNodeChannel(b.opts.Prefix, nodeID), b.all},
	}
}

// subscribeDirect runs, in g, the subscriptions of nodeID's direct plane: on a
// Redis Cluster one per slot (sharded channels of different slots cannot share
// a subscription), otherwise one for the direct channels and the extra ones.
func (b *base) subscribeDirect(g *group, c rueidis.Client, nodeID string, extra []string, fn func(rueidis.PubSubMessage)) {
	groups := b.directChannels(nodeID)
	if isCluster(c) {
		for _, channels := range groups {
			g.run(func(ctx context.Context) error { return b.receive(ctx, c, true, channels, fn) })
		}
		return
	}
	channels := append([]string(nil), extra...)
	for _, chs := range groups {
		channels = append(channels, chs...)
	}
	g.run(func(ctx context.Context) error { return b.receive(ctx, c, false, channels, fn) })
}

// legacyDirectFor is how long Send writes to the legacy channel of a node that
// received nothing on its own channel, before it tries that one again.
const legacyDirectFor = 5 * time.Second

// maxLegacyTargets bounds the memory of legacyTargets: node ids come and go.
const maxLegacyTargets = 4096

// legacyTargets are the nodes Send reaches on their legacy channel, until a
// time each.
type legacyTargets struct {
	ttl   time.Duration
	mu    sync.Mutex
	until map[string]time.Time
}

func newLegacyTargets(ttl time.Duration) *legacyTargets {
	return &legacyTargets{ttl: ttl, until: make(map[string]time.Time)}
}

func (l *legacyTargets) has(node string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	until, ok := l.until[node]
	if ok && !now.Before(until) {
		delete(l.until, node)
		return false
	}
	return ok
}

func (l *legacyTargets) add(node string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.until) >= maxLegacyTargets {
		for n, until := range l.until {
			if !now.Before(until) {
				delete(l.until, n)
			}
		}
		// Still full: forget any one. That node's next frame costs one
		// publish more, nothing else.
		for n := range l.until {
			if len(l.until) < maxLegacyTargets {
				break
			}
			delete(l.until, n)
		}
	}
	l.until[node] = now.Add(l.ttl)
}
