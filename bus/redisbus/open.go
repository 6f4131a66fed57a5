package redisbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/durasock/durasock/bus"
)

// Open returns the reliable bus (package bus: outbox, backoff, sequencing,
// de-duplication, probes, metrics) over a Redis transport for url, configured
// by opts (nil means all defaults; opts.Bus configures the reliable core). url,
// when not empty, replaces opts.URL.
//
// Open does not wait for Redis: a bus opened while Redis is down accepts
// Publish into its outbox and connects when Redis appears. It fails only for a
// bad URL or options, unreadable TLS files, or a ctx already done. Close the bus
// to release the connections.
func Open(ctx context.Context, url string, opts *Options) (*bus.Reliable, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if url != "" {
		o.URL = url
	}
	if o.URL == "" {
		return nil, &URLError{Reason: "empty URL"}
	}
	t, err := NewTransport(&o)
	if err != nil {
		return nil, err
	}
	b, err := bus.New(t, &o.Bus)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("redisbus: %w", err), t.Close())
	}
	return b, nil
}
