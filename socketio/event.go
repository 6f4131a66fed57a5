package socketio

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/internal/argpack"
	"github.com/durasock/durasock/parser"
)

// Event is an event a client (or, for server-side events, another server)
// sent.
type Event struct {
	// Name is the event name.
	Name string
	// Args are the arguments after the name, as JSON exactly as sent. A binary
	// argument is a placeholder {"_placeholder":true,"num":N} naming one of
	// Attachments; Bind and Values resolve it.
	Args []json.RawMessage
	// Attachments are the binary attachments of the event.
	Attachments [][]byte

	socket *Socket
	ack    func(args []any) error // nil when no ack was asked for
	acked  atomic.Bool
}

// Socket returns the socket the event came from, or nil for a server-side event.
func (e *Event) Socket() *Socket { return e.socket }

// Bind decodes the arguments into dst, in order: dst[i] receives Args[i] as
// encoding/json.Unmarshal would. A binary argument decodes into a *[]byte (and,
// nested, into any []byte field). A nil destination skips its argument; extra
// arguments are ignored. Fewer arguments than destinations is ErrMissingArgument.
func (e *Event) Bind(dst ...any) error {
	return bindArgs(e.Args, e.Attachments, dst)
}

// HasAck reports whether the sender asked for an acknowledgement.
func (e *Event) HasAck() bool { return e.ack != nil }

// Ack answers the event with args, marshalled as by Socket.Emit. It may be called
// once, from any goroutine. It returns ErrNoAck when the sender asked for no ack
// and ErrAckSent on a second call.
func (e *Event) Ack(args ...any) error {
	if e.ack == nil {
		return ErrNoAck
	}
	if !e.acked.CompareAndSwap(false, true) {
		return ErrAckSent
	}
	return e.ack(args)
}

// Values returns the arguments ready to emit again: a binary argument as its
// []byte, an argument with binary nested inside as a RawArg (so that emitting it
// sends the binary as binary attachments again), any other as its
// json.RawMessage. Forwarding an event is s.Emit(e.Name, e.Values()...).
func (e *Event) Values() []any { return valuesOf(e.Args, e.Attachments) }

// Context returns the context of the socket the event came from (see
// Socket.Context), or context.Background() for a server-side event.
func (e *Event) Context() context.Context {
	if e.socket == nil {
		return context.Background()
	}
	return e.socket.Context()
}

func valuesOf(args []json.RawMessage, atts [][]byte) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if len(atts) > 0 {
			if n, ok := parser.PlaceholderIndex(a); ok && n < len(atts) {
				out[i] = atts[n]
				continue
			}
			if bytes.Contains(a, placeholderKey) {
				out[i] = RawArg{JSON: a, Attachments: atts}
				continue
			}
		}
		out[i] = a
	}
	return out
}

// RawArg is an argument with binary nested inside, as Event.Values returns it:
// its JSON with placeholders and the attachments they name (see parser.RawArg).
type RawArg = parser.RawArg

var placeholderKey = []byte(`"_placeholder"`)

// Args are the arguments of an acknowledgement, as Event has them: JSON with a
// placeholder for each binary argument, and the attachments.
type Args struct {
	// JSON are the arguments as sent. A binary argument is a placeholder
	// {"_placeholder":true,"num":N} naming one of Attachments; Bind and Values
	// resolve it.
	JSON []json.RawMessage
	// Attachments are the binary attachments of the acknowledgement.
	Attachments [][]byte
}

// Bind decodes the arguments into dst as Event.Bind does: a binary argument
// decodes into a *[]byte (and, nested, into any []byte field).
func (a Args) Bind(dst ...any) error { return bindArgs(a.JSON, a.Attachments, dst) }

// Len returns the number of arguments.
func (a Args) Len() int { return len(a.JSON) }

// Values returns the arguments ready to emit again, as Event.Values does.
func (a Args) Values() []any { return valuesOf(a.JSON, a.Attachments) }

// Reply is one acknowledgement collected by EmitWithAck of a broadcast, or by
// ServerSideEmitWithAck.
type Reply struct {
	// From is the replying socket (a broadcast) or server (a server-side emit).
	From string
	Args Args
}

// replies converts the replies of an adapter.
func replies(rs []adapter.Reply) []Reply {
	if rs == nil {
		return nil
	}
	out := make([]Reply, len(rs))
	for i, r := range rs {
		out[i] = Reply{From: r.From, Args: unpackArgs(r.Args)}
	}
	return out
}

// unpackArgs returns the arguments of an adapter ack or server-side event with
// their attachments (see argpack).
func unpackArgs(args []json.RawMessage) Args {
	a, atts := argpack.Unpack(args)
	return Args{JSON: a, Attachments: atts}
}

func bindArgs(args []json.RawMessage, atts [][]byte, dst []any) error {
	for i, d := range dst {
		if i >= len(args) {
			return fmt.Errorf("%w: %d destinations, %d arguments", ErrMissingArgument, len(dst), len(args))
		}
		if d == nil {
			continue
		}
		if err := bindArg(args[i], atts, d); err != nil {
			return fmt.Errorf("%w %d: %w", ErrBadArgument, i, err)
		}
	}
	return nil
}

func bindArg(arg json.RawMessage, atts [][]byte, dst any) error {
	if len(atts) > 0 {
		if b, ok := dst.(*[]byte); ok {
			if n, ok := parser.PlaceholderIndex(arg); ok && n < len(atts) {
				*b = atts[n]
				return nil
			}
		}
		r, err := parser.ResolveBinary(arg, atts)
		if err != nil {
			return err
		}
		arg = r
	}
	return json.Unmarshal(arg, dst)
}
