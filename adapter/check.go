package adapter

import (
	"fmt"

	"github.com/durasock/durasock/internal/jsonx"
	"github.com/durasock/durasock/parser"
)

// CheckPacket is the check every Adapter makes before it sends p through the
// adapter of namespace nsp: p must be an EVENT or BINARY_EVENT whose data is a
// JSON array, of namespace nsp (or none), and, unless withAck (BroadcastWithAck),
// without an ack id. Otherwise it returns an error wrapping ErrInvalidPacket. It
// returns p, or a copy of p with the namespace filled in when it was empty.
func CheckPacket(p *parser.Packet, nsp string, withAck bool) (*parser.Packet, error) {
	if p == nil {
		return nil, fmt.Errorf("%w: nil packet", ErrInvalidPacket)
	}
	if p.Type != parser.Event && p.Type != parser.BinaryEvent {
		return nil, fmt.Errorf("%w: packet type %d is not EVENT or BINARY_EVENT", ErrInvalidPacket, p.Type)
	}
	if !withAck && p.HasID {
		return nil, fmt.Errorf("%w: packet has an ack id; use BroadcastWithAck", ErrInvalidPacket)
	}
	if jsonx.FirstByte(p.Data) != '[' {
		return nil, fmt.Errorf("%w: event data is not a JSON array", ErrInvalidPacket)
	}
	switch p.Namespace {
	case nsp:
		return p, nil
	case "":
		q := *p
		q.Namespace = nsp
		return &q, nil
	}
	return nil, fmt.Errorf("%w: packet of namespace %q sent through the adapter of %q", ErrInvalidPacket, p.Namespace, nsp)
}

// CheckEvent is the check every Adapter makes of a ServerSideEmit event name:
// it returns an error wrapping ErrInvalidEvent for an empty name.
func CheckEvent(event string) error {
	if event == "" {
		return fmt.Errorf("%w: empty", ErrInvalidEvent)
	}
	return nil
}
