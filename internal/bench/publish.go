package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"
)

// publisher emits numbered events into a node. What publish queues leaves at
// the latest on flush.
type publisher interface {
	// publish sends event seq of the run; payload is its JSON argument.
	publish(ctx context.Context, seq int, payload []byte) (rejected bool, err error)
	flush() error
	close() error
}

// relayPublisher emits "pub" on its own Socket.IO connection; the relay node
// broadcasts it to every other socket. The emits of one burst leave in one
// write.
type relayPublisher struct {
	c     *wsClient
	event string // PublishEvent, PublishRoomEvent or PublishToEvent
	// rooms > 0 (with PublishToEvent): event seq goes to room roomName(seq % rooms).
	rooms int
	buf   []byte
}

func (p *relayPublisher) publish(_ context.Context, seq int, payload []byte) (bool, error) {
	if err := p.c.Err(); err != nil {
		return false, err
	}
	if p.rooms > 0 {
		p.buf = append(appendRoomName(append(p.buf[:0], '"'), seq%p.rooms), `",`...)
		p.buf = append(p.buf, payload...)
		p.c.emit(p.event, p.buf)
		return false, nil
	}
	p.c.emit(p.event, payload)
	return false, nil
}

// appendRoomName appends the name of room k of the scale scenario.
func appendRoomName(b []byte, k int) []byte {
	return strconv.AppendInt(append(b, 'r'), int64(k), 10)
}

func (p *relayPublisher) flush() error { return p.c.flush() }

func (p *relayPublisher) close() error { return p.c.Close() }

// httpPublisher posts to cmd/durasock's emit API, one request per event.
type httpPublisher struct {
	url    string
	client *http.Client
	buf    bytes.Buffer
}

func (p *httpPublisher) publish(ctx context.Context, _ int, payload []byte) (bool, error) {
	p.buf.Reset()
	p.buf.WriteString(`{"event":"` + RelayEvent + `","args":[`)
	p.buf.Write(payload)
	p.buf.WriteString(`]}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(p.buf.Bytes()))
	if err != nil {
		return false, fmt.Errorf("bench: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+emitToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("bench: emit API: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return false, fmt.Errorf("bench: emit API: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK:
		return false, nil
	case http.StatusServiceUnavailable:
		return true, nil // refused by the outbox bound: counted, not fatal
	default:
		return false, fmt.Errorf("bench: emit API: %s: %s", resp.Status, body)
	}
}

func (p *httpPublisher) flush() error { return nil }

func (p *httpPublisher) close() error {
	p.client.CloseIdleConnections()
	return nil
}

func newPublisher(ctx context.Context, n *Node, event string) (publisher, error) {
	if n.Server == ServerDurasock {
		return &httpPublisher{url: n.URL() + "/api/emit", client: &http.Client{
			Transport: &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true},
			Timeout:   10 * time.Second,
		}}, nil
	}
	c, err := dialWS(ctx, n.SocketURL(), nil, time.Now(), nil)
	if err != nil {
		return nil, err
	}
	return &relayPublisher{c: c, event: event}, nil
}

// paced is one publisher's run: ids, counts and pacing.
type paced struct {
	id       int
	pub      publisher
	rate     float64
	size     int
	sent     int
	rejected int
	base     time.Time
}

// run emits events at rate until dur has passed (or ctx is done), in bursts of
// what is due every millisecond. It returns the first fatal error.
func (p *paced) run(ctx context.Context, dur time.Duration) error {
	start := time.Now()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	buf := make([]byte, 0, 64+p.size)
	total := int(p.rate * dur.Seconds())
	// A publisher that fell behind (its goroutine or the machine stalled)
	// catches up at most maxBurst events per millisecond, twice its rate (at
	// least 1), so that a stall of the load generator does not reach the node
	// as a burst far above the rate measured: the node broadcasts its own
	// clients' events without waiting, so a burst lands whole in their send
	// queues (a floor of 4 a millisecond, 20 times a rate of 200/s, made the
	// smoke test's 16-message queue overflow after a 100 ms stall).
	maxBurst := max(1, int(math.Ceil(2*p.rate/1000)))
	for {
		el := time.Since(start)
		due := min(int(p.rate*el.Seconds()), total, p.sent+maxBurst)
		for p.sent < due {
			buf = appendPayload(buf[:0], p.id, p.sent, int64(time.Since(p.base)), p.size)
			rejected, err := p.pub.publish(ctx, p.sent, buf)
			if err != nil {
				return err
			}
			if rejected {
				p.rejected++
			}
			p.sent++
		}
		if err := p.pub.flush(); err != nil {
			return err
		}
		if p.sent >= total {
			return nil
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runAll runs the publishers concurrently and returns when all have finished.
func runAll(ctx context.Context, ps []*paced, dur time.Duration) error {
	errs := make(chan error, len(ps))
	for _, p := range ps {
		go func() { errs <- p.run(ctx, dur) }()
	}
	var all []error
	for range ps {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}
