package sioclient

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/durasock/durasock/parser"
)

// Event is an event the server emitted.
type Event struct {
	Name string
	// Data is the whole JSON array of the packet, the name first, byte for byte as
	// it arrived; binary arguments appear as placeholders resolved by Bind.
	Data        json.RawMessage
	Attachments [][]byte

	ackID  uint64
	hasAck bool
	c      *Client
}

// Args returns the arguments after the event name.
func (e *Event) Args() ([]json.RawMessage, error) {
	all, err := parser.SplitArray(e.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return all[1:], nil
}

// Bind decodes the arguments after the event name into dst, in order; binary
// attachments decode into []byte fields.
func (e *Event) Bind(dst ...any) error {
	args, err := e.Args()
	if err != nil {
		return err
	}
	return bindArgs(args, e.Attachments, dst)
}

// HasAck reports whether the server waits for an acknowledgement.
func (e *Event) HasAck() bool { return e.hasAck }

// Ack answers the event with args. An Event copied out of OnEvent may be acked
// later, from any goroutine.
func (e *Event) Ack(ctx context.Context, args ...any) error {
	if !e.hasAck {
		return fmt.Errorf("%w: event %q was sent without an ack", ErrInvalidArgument, e.Name)
	}
	p, err := parser.AckPacket(e.c.opts.Namespace, e.ackID, args...)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidArgument, err)
	}
	return e.c.writePacket(ctx, p)
}

// Ack is the server's answer to an emit with an acknowledgement.
type Ack struct {
	Data        json.RawMessage // the JSON array of the arguments
	Attachments [][]byte
}

// Args returns the arguments of the acknowledgement.
func (a Ack) Args() ([]json.RawMessage, error) {
	args, err := parser.SplitArray(a.Data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return args, nil
}

// Bind decodes the arguments of the acknowledgement into dst, in order.
func (a Ack) Bind(dst ...any) error {
	args, err := a.Args()
	if err != nil {
		return err
	}
	return bindArgs(args, a.Attachments, dst)
}

func bindArgs(args []json.RawMessage, atts [][]byte, dst []any) error {
	if len(dst) > len(args) {
		return fmt.Errorf("%w: %d arguments, %d destinations", ErrInvalidArgument, len(args), len(dst))
	}
	for i, d := range dst {
		v, err := parser.ResolveBinary(args[i], atts)
		if err != nil {
			return fmt.Errorf("%w: argument %d: %w", ErrProtocol, i, err)
		}
		if err := json.Unmarshal(v, d); err != nil {
			return fmt.Errorf("%w: argument %d: %w", ErrInvalidArgument, i, err)
		}
	}
	return nil
}
