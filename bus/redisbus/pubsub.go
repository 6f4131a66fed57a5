package redisbus

import (
	"context"
	"fmt"

	"github.com/redis/rueidis"

	"github.com/durasock/durasock/bus"
)

// pubsub is the PubSub transport: PUBLISH/SUBSCRIBE on one channel per
// partition, SPUBLISH/SSUBSCRIBE on a Redis Cluster. Redis stores nothing: what
// is published while a subscription is down is lost, and the bus counts the gap.
type pubsub struct {
	*base
	channels []string
	chanPart map[string]int
}

var _ bus.Transport = (*pubsub)(nil)

func newPubSub(b *base) *pubsub {
	ps := &pubsub{base: b, chanPart: make(map[string]int, b.opts.Partitions)}
	for p := range b.opts.Partitions {
		ch := PartitionChannel(b.opts.Prefix, p)
		ps.channels = append(ps.channels, ch)
		ps.chanPart[ch] = p
	}
	return ps
}

// Publish sends every frame to its partition's channel in one pipeline.
// WaitReplicas does not apply: pub/sub messages are not stored.
func (ps *pubsub) Publish(ctx context.Context, frames []bus.Frame) error {
	if len(frames) == 0 {
		return nil
	}
	for _, f := range frames {
		if f.Partition < 0 || f.Partition >= len(ps.channels) {
			return fmt.Errorf("%w: %d of %d", ErrBadPartition, f.Partition, len(ps.channels))
		}
	}
	c, err := ps.client(ctx)
	if err != nil {
		return err
	}
	sharded := isCluster(c)
	cmds := make(rueidis.Commands, 0, len(frames))
	for _, f := range frames {
		ch, msg := ps.channels[f.Partition], rueidis.BinaryString(f.Data)
		if sharded {
			cmds = append(cmds, c.B().Spublish().Channel(ch).Message(msg).Build())
		} else {
			cmds = append(cmds, c.B().Publish().Channel(ch).Message(msg).Build())
		}
	}
	for _, r := range c.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return ps.wrap("publish", err)
		}
	}
	return nil
}

// Subscribe listens to every partition channel and the direct plane until ctx
// ends or the subscription fails. It does not resume: pub/sub keeps nothing.
func (ps *pubsub) Subscribe(ctx context.Context, nodeID string, deliver func(bus.Frame)) error {
	c, err := ps.client(ctx)
	if err != nil {
		return err
	}
	deliver = serial(deliver)
	onMessage := func(m rueidis.PubSubMessage) {
		p, ok := ps.chanPart[m.Channel]
		if !ok {
			p = -1 // a direct channel
		}
		deliver(bus.Frame{Partition: p, Data: []byte(m.Message)})
	}
	g := ps.subscribeGroup(ctx)
	if !isCluster(c) {
		ps.subscribeDirect(g, c, nodeID, ps.channels, onMessage)
		return g.wait()
	}
	// Sharded channels of different slots cannot share a subscription: one
	// per partition, and those of the direct plane.
	ps.subscribeDirect(g, c, nodeID, nil, onMessage)
	for _, ch := range ps.channels {
		g.run(func(ctx context.Context) error {
			return ps.receive(ctx, c, true, []string{ch}, onMessage)
		})
	}
	return g.wait()
}
