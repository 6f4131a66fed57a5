package sioclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/parser"
)

// Bounds of the read goroutine's caches.
const (
	maxInternedNames = 256      // event names kept so that Event.Name costs no allocation
	maxKeptBuffer    = 64 << 10 // a read buffer grown beyond this is not kept
)

// readerState is owned by the read goroutine.
type readerState struct {
	buf   []byte
	dec   parser.Decoder
	names map[string]string
	ev    Event
}

func (c *Client) readLoop() {
	c.fail(c.readMessages())
	c.pingTimer.Stop()
	err := c.err // written before closing was closed, by fail or Close
	c.failAcks(err)
	if c.events != nil {
		close(c.events)
	}
	if c.opts.OnDisconnect != nil {
		c.opts.OnDisconnect(err)
	}
	close(c.done)
}

func (c *Client) readMessages() error {
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return c.readError(err)
		}
		buf, err := readAll(r, c.reader.buf[:0])
		if cap(buf) <= maxKeptBuffer {
			c.reader.buf = buf
		} else {
			c.reader.buf = nil
		}
		if err != nil {
			return c.readError(err)
		}
		if typ == websocket.MessageBinary {
			err = c.handleBinary(bytes.Clone(buf))
		} else {
			err = c.handleText(buf)
		}
		if err != nil {
			return err
		}
	}
}

func (c *Client) readError(err error) error {
	select {
	case <-c.closing:
		return c.err
	default:
	}
	if websocket.CloseStatus(err) != -1 {
		return fmt.Errorf("%w: %w", ErrServerDisconnect, err)
	}
	return fmt.Errorf("sioclient: read: %w", err)
}

// readAll appends the rest of r to buf. The WebSocket read limit bounds it.
func readAll(r io.Reader, buf []byte) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// handleText handles one Engine.IO text packet.
func (c *Client) handleText(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty Engine.IO packet", ErrProtocol)
	}
	switch b[0] {
	case '4':
		p, err := c.reader.dec.AddText(b[1:])
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		if p == nil {
			return nil // attachments follow
		}
		return c.dispatch(p)
	case '2':
		c.pingTimer.Reset(c.pingWait)
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
		defer cancel()
		return c.send(ctx, pongFrame, nil)
	case '3', '6':
		return nil
	case '1':
		return fmt.Errorf("%w: Engine.IO close", ErrServerDisconnect)
	default:
		return fmt.Errorf("%w: unknown Engine.IO packet %.40q", ErrProtocol, b)
	}
}

// handleBinary takes an attachment; b is owned by the packet from now on.
func (c *Client) handleBinary(b []byte) error {
	p, err := c.reader.dec.AddBinary(b)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if p == nil {
		return nil
	}
	return c.dispatch(p)
}

func (c *Client) dispatch(p *parser.Packet) error {
	if p.Namespace != c.opts.Namespace {
		return nil // a namespace this client did not connect to
	}
	switch p.Type {
	case parser.Event, parser.BinaryEvent:
		name, err := c.eventName(p.Data)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return c.deliver(Event{Name: name, Data: p.Data, Attachments: p.Attachments,
			ackID: p.ID, hasAck: p.HasID, c: c})
	case parser.Ack, parser.BinaryAck:
		c.resolveAck(p.ID, Ack{Data: p.Data, Attachments: p.Attachments})
		return nil
	case parser.Disconnect:
		return fmt.Errorf("%w: namespace %s", ErrServerDisconnect, c.opts.Namespace)
	case parser.ConnectError:
		_, err := c.parseConnectReply(append([]byte{'4'}, p.Data...))
		return fmt.Errorf("%w: %w", ErrServerDisconnect, err)
	default:
		return nil // a repeated CONNECT changes nothing
	}
}

func (c *Client) deliver(ev Event) error {
	if c.opts.OnEvent != nil {
		c.reader.ev = ev
		c.opts.OnEvent(&c.reader.ev)
		c.reader.ev = Event{} // drop references to the read buffer
		return nil
	}
	ev.Data = bytes.Clone(ev.Data)
	select {
	case c.events <- ev:
		return nil
	case <-c.closing:
		return c.err
	}
}

// eventName returns the name of an EVENT without allocating for names seen
// before.
func (c *Client) eventName(data []byte) (string, error) {
	i := 1
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	if i < len(data) && data[i] == '"' {
		end := bytes.IndexByte(data[i+1:], '"')
		if end >= 0 {
			raw := data[i+1 : i+1+end]
			if bytes.IndexByte(raw, '\\') < 0 {
				if name, ok := c.reader.names[string(raw)]; ok {
					return name, nil
				}
				name := string(raw)
				if c.reader.names == nil {
					c.reader.names = make(map[string]string)
				}
				if len(c.reader.names) < maxInternedNames {
					c.reader.names[name] = name
				}
				return name, nil
			}
		}
	}
	return parser.EventName(data)
}
