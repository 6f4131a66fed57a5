package socketio

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/durasock/durasock/adapter"
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

// attachmentsKey starts the extra last argument that carries the attachments
// of arguments through interfaces that take JSON only (adapter acks and
// server-side events): {"_durasock_attachments":["<base64>",...]}. It crosses a
// cluster as JSON, and unpackArgs turns it back into binary.
const attachmentsKey = `{"_durasock_attachments":`

// packArgs returns args with atts as an extra last argument, or args as they
// are when there are no attachments.
func packArgs(args []json.RawMessage, atts [][]byte) []json.RawMessage {
	if len(atts) == 0 {
		return args
	}
	n := len(attachmentsKey) + 2
	for _, a := range atts {
		n += base64.StdEncoding.EncodedLen(len(a)) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, attachmentsKey...)
	b = append(b, '[')
	for i, a := range atts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, a)
		b = append(b, '"')
	}
	b = append(b, ']', '}')
	return append(slices.Clip(args), b)
}

// unpackArgs undoes packArgs.
func unpackArgs(args []json.RawMessage) Args {
	if len(args) == 0 {
		return Args{JSON: args}
	}
	last := args[len(args)-1]
	if !bytes.HasPrefix(last, []byte(attachmentsKey)) {
		return Args{JSON: args}
	}
	var env struct {
		Attachments [][]byte `json:"_durasock_attachments"`
	}
	if err := json.Unmarshal(last, &env); err != nil {
		return Args{JSON: args}
	}
	return Args{JSON: args[:len(args)-1], Attachments: env.Attachments}
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
