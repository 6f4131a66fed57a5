package sioclient

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/parser"
)

// Emit sends an event with args, marshalled as parser.EventPacket does: a
// json.RawMessage argument is sent byte for byte (it must be valid JSON), a
// []byte becomes a binary attachment (at any depth), anything else is
// marshalled with encoding/json. ctx bounds the write.
func (c *Client) Emit(ctx context.Context, event string, args ...any) error {
	return c.writeEvent(ctx, 0, false, event, args)
}

// EmitWithAck sends an event and waits, within ctx, for the server's
// acknowledgement.
func (c *Client) EmitWithAck(ctx context.Context, event string, args ...any) (Ack, error) {
	pa := &pendingAck{ch: make(chan ackResult, 1)}
	id, err := c.addAck(pa, 0)
	if err != nil {
		return Ack{}, err
	}
	if err := c.writeEvent(ctx, id, true, event, args); err != nil {
		c.takeAck(id)
		return Ack{}, err
	}
	select {
	case r := <-pa.ch:
		return r.ack, r.err
	case <-ctx.Done():
		if c.takeAck(id) == nil {
			r := <-pa.ch // answered at the same moment
			return r.ack, r.err
		}
		return Ack{}, ctx.Err()
	}
}

// EmitAck sends an event and calls fn once with the server's acknowledgement, or
// with an error: ErrAckTimeout after Options.AckTimeout, or why the client
// stopped. fn runs on the read goroutine (the Ack is valid only during the call)
// or on a timer goroutine; it must not block. When EmitAck returns an error, fn is
// not called.
func (c *Client) EmitAck(ctx context.Context, event string, fn func(Ack, error), args ...any) error {
	if fn == nil {
		return fmt.Errorf("%w: nil ack callback", ErrInvalidArgument)
	}
	id, err := c.addAck(&pendingAck{fn: fn}, c.opts.AckTimeout)
	if err != nil {
		return err
	}
	if err := c.writeEvent(ctx, id, true, event, args); err != nil {
		if pa := c.takeAck(id); pa != nil {
			pa.timer.Stop()
			return err
		}
		return nil // already answered, timed out or failed: fn has been called
	}
	return nil
}

// PendingAcks is the number of acknowledgements waiting.
func (c *Client) PendingAcks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acks)
}

type ackResult struct {
	ack Ack
	err error
}

type pendingAck struct {
	ch    chan ackResult // EmitWithAck; capacity 1, never blocks
	fn    func(Ack, error)
	timer *time.Timer
}

func (c *Client) addAck(pa *pendingAck, timeout time.Duration) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return 0, c.err
	}
	if len(c.acks) >= c.opts.MaxPendingAcks {
		return 0, fmt.Errorf("%w: %d waiting", ErrTooManyAcks, len(c.acks))
	}
	id := c.nextAck
	c.nextAck++
	c.acks[id] = pa
	if timeout > 0 {
		pa.timer = time.AfterFunc(timeout, func() {
			if c.takeAck(id) != nil {
				pa.fn(Ack{}, ErrAckTimeout)
			}
		})
	}
	return id, nil
}

// takeAck removes a pending ack; whoever takes it answers it.
func (c *Client) takeAck(id uint64) *pendingAck {
	c.mu.Lock()
	defer c.mu.Unlock()
	pa := c.acks[id]
	delete(c.acks, id)
	return pa
}

// resolveAck runs on the read goroutine; a.Data aliases the read buffer.
func (c *Client) resolveAck(id uint64, a Ack) {
	pa := c.takeAck(id)
	if pa == nil {
		return // timed out or abandoned already
	}
	if pa.fn != nil {
		pa.timer.Stop()
		pa.fn(a, nil)
		return
	}
	a.Data = append(json.RawMessage(nil), a.Data...)
	pa.ch <- ackResult{ack: a}
}

// failAcks answers every pending ack with err and refuses new ones.
func (c *Client) failAcks(err error) {
	c.mu.Lock()
	c.stopped = true
	acks := c.acks
	c.acks = make(map[uint64]*pendingAck)
	c.mu.Unlock()
	for _, pa := range acks {
		if pa.fn != nil {
			pa.timer.Stop()
			pa.fn(Ack{}, err)
		} else {
			pa.ch <- ackResult{err: err}
		}
	}
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// writeEvent encodes an EVENT, with ack id when hasID, and writes it.
func (c *Client) writeEvent(ctx context.Context, id uint64, hasID bool, event string, args []any) error {
	p, err := parser.EventPacket(c.opts.Namespace, event, args...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	p.ID, p.HasID = id, hasID
	return c.writePacket(ctx, p)
}

// writePacket writes p, encoded by the parser, with its attachments.
func (c *Client) writePacket(ctx context.Context, p *parser.Packet) error {
	e := parser.Encode(p)
	fp := bufPool.Get().(*[]byte)
	defer bufPool.Put(fp)
	f := append(append((*fp)[:0], '4'), e.Text...) // an Engine.IO message
	*fp = f
	return c.send(ctx, f, e.Attachments)
}

// send writes one text frame and its attachments without interleaving with other
// writers.
func (c *Client) send(ctx context.Context, frame []byte, atts [][]byte) error {
	if err := c.acquire(ctx); err != nil {
		return err
	}
	defer c.release()
	err := c.ws.Write(ctx, websocket.MessageText, frame)
	for i := 0; err == nil && i < len(atts); i++ {
		err = c.ws.Write(ctx, websocket.MessageBinary, atts[i])
	}
	if err != nil {
		select {
		case <-c.closing:
			return c.err
		default:
		}
		return fmt.Errorf("sioclient: write: %w", err)
	}
	return nil
}
