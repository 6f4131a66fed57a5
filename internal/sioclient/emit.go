package sioclient

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// Emit sends an event with args. A json.RawMessage argument is sent byte for byte
// (it must be valid JSON), a []byte becomes a binary attachment, anything else is
// marshalled with encoding/json. ctx bounds the write.
func (c *Client) Emit(ctx context.Context, event string, args ...any) error {
	return c.writePacket(ctx, '2', 0, false, event, true, args)
}

// EmitWithAck sends an event and waits, within ctx, for the server's
// acknowledgement.
func (c *Client) EmitWithAck(ctx context.Context, event string, args ...any) (Ack, error) {
	pa := &pendingAck{ch: make(chan ackResult, 1)}
	id, err := c.addAck(pa, 0)
	if err != nil {
		return Ack{}, err
	}
	if err := c.writePacket(ctx, '2', id, true, event, true, args); err != nil {
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
	if err := c.writePacket(ctx, '2', id, true, event, true, args); err != nil {
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

// writePacket encodes an EVENT (kind '2', with the event name) or an ACK (kind
// '3') and writes it with its attachments.
func (c *Client) writePacket(ctx context.Context, kind byte, id uint64, hasID bool, event string, named bool, args []any) error {
	ap := bufPool.Get().(*[]byte)
	defer bufPool.Put(ap)
	body := append((*ap)[:0], '[')
	if named {
		body = appendJSONString(body, event)
	}
	body, atts, err := appendArgs(body, named, args)
	if err != nil {
		return err
	}
	body = append(body, ']')
	*ap = body

	fp := bufPool.Get().(*[]byte)
	defer bufPool.Put(fp)
	f := append((*fp)[:0], '4')
	if len(atts) > 0 {
		f = append(f, kind+3) // BINARY_EVENT 5, BINARY_ACK 6
		f = strconv.AppendInt(f, int64(len(atts)), 10)
		f = append(f, '-')
	} else {
		f = append(f, kind)
	}
	f = append(f, c.nspPrefix...)
	if hasID {
		f = strconv.AppendUint(f, id, 10)
	}
	f = append(f, body...)
	*fp = f
	return c.send(ctx, f, atts)
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

func appendArgs(b []byte, comma bool, args []any) ([]byte, [][]byte, error) {
	var atts [][]byte
	for i, a := range args {
		if comma {
			b = append(b, ',')
		}
		comma = true
		switch v := a.(type) {
		case json.RawMessage:
			if v == nil {
				b = append(b, "null"...)
				continue
			}
			if !json.Valid(v) {
				return nil, nil, fmt.Errorf("%w: argument %d: json.RawMessage is not valid JSON", ErrInvalidArgument, i)
			}
			b = append(b, v...)
		case []byte:
			b = append(b, `{"_placeholder":true,"num":`...)
			b = strconv.AppendInt(b, int64(len(atts)), 10)
			b = append(b, '}')
			atts = append(atts, v)
		case string:
			b = appendJSONString(b, v)
		case int:
			b = strconv.AppendInt(b, int64(v), 10)
		case int64:
			b = strconv.AppendInt(b, v, 10)
		case nil:
			b = append(b, "null"...)
		default:
			m, err := json.Marshal(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: argument %d: %w", ErrInvalidArgument, i, err)
			}
			b = append(b, m...)
		}
	}
	return b, atts, nil
}

// appendJSONString quotes s as JSON without allocating. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"
