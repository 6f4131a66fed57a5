package parser

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/durasock/durasock/internal/jsonx"
)

// ErrInvalidArgument is returned when an argument cannot be marshalled to JSON.
var ErrInvalidArgument = errors.New("parser: invalid argument")

var placeholderKey = []byte(`"_placeholder"`)

// EventPacket builds an EVENT packet of namespace nsp. Each argument is marshalled
// once: a json.RawMessage is copied byte for byte (it must be valid JSON), a []byte
// becomes a binary attachment referenced by a placeholder, a RawArg keeps its
// binary as attachments, and any other value is marshalled with encoding/json
// except that a byte slice nested at any depth (struct field, map value, slice
// element) becomes a binary attachment too, as with the reference server. The
// types that cannot hold a byte slice are told apart once per type, so a value
// without binary costs nothing more than encoding/json.
func EventPacket(nsp, event string, args ...any) (*Packet, error) {
	b := make([]byte, 0, 32+len(event))
	b = append(b, '[')
	name, err := json.Marshal(event)
	if err != nil {
		return nil, fmt.Errorf("%w: event name: %w", ErrInvalidArgument, err)
	}
	b = append(b, name...)
	b, atts, err := appendArgs(b, true, nil, args)
	if err != nil {
		return nil, err
	}
	return &Packet{Type: Event, Namespace: nsp, Data: b, Attachments: atts}, nil
}

// AckPacket builds the ACK packet answering ack id with args, marshalled as by
// EventPacket.
func AckPacket(nsp string, id uint64, args ...any) (*Packet, error) {
	b := make([]byte, 0, 32)
	b = append(b, '[')
	b, atts, err := appendArgs(b, false, nil, args)
	if err != nil {
		return nil, err
	}
	return &Packet{Type: Ack, Namespace: nsp, ID: id, HasID: true, Data: b, Attachments: atts}, nil
}

// MarshalArgs marshals args as EventPacket does, without the event name, and
// returns the JSON array and the attachments.
func MarshalArgs(args ...any) (json.RawMessage, [][]byte, error) {
	b, atts, err := appendArgs([]byte{'['}, false, nil, args)
	return b, atts, err
}

func appendArgs(b []byte, comma bool, atts [][]byte, args []any) ([]byte, [][]byte, error) {
	start := len(b)
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
			b = appendPlaceholder(b, len(atts))
			atts = append(atts, v)
		case RawArg:
			var err error
			if b, atts, err = appendRawArg(b, atts, v); err != nil {
				return nil, nil, fmt.Errorf("argument %d: %w", i, err)
			}
		case *RawArg:
			if v == nil {
				b = append(b, "null"...)
				continue
			}
			var err error
			if b, atts, err = appendRawArg(b, atts, *v); err != nil {
				return nil, nil, fmt.Errorf("argument %d: %w", i, err)
			}
		case string:
			q, err := json.Marshal(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: argument %d: %w", ErrInvalidArgument, i, err)
			}
			b = append(b, q...)
		case nil:
			b = append(b, "null"...)
		default:
			if mayHoldBytes(v) {
				var err error
				if b, atts, err = marshalBinary(b, atts, v); err != nil {
					return nil, nil, fmt.Errorf("%w: argument %d: %w", ErrInvalidArgument, i, err)
				}
				continue
			}
			m, err := json.Marshal(v)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: argument %d: %w", ErrInvalidArgument, i, err)
			}
			b = append(b, m...)
		}
	}
	// encoding/json writes valid UTF-8 for strings, but copies a
	// json.RawMessage, a RawArg or the output of a MarshalJSON method as it
	// is: text that is not UTF-8 must not reach clients, which drop their
	// connection over it.
	if !utf8.Valid(b[start:]) {
		return nil, nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalidArgument)
	}
	b = append(b, ']')
	return b, atts, nil
}

func appendPlaceholder(b []byte, n int) []byte {
	b = append(b, `{"_placeholder":true,"num":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	return append(b, '}')
}

// PlaceholderIndex reports whether v is exactly a binary placeholder
// {"_placeholder":true,"num":N} and returns N.
func PlaceholderIndex(v json.RawMessage) (int, bool) {
	if jsonx.FirstByte(v) != '{' || !bytes.Contains(v, placeholderKey) {
		return 0, false
	}
	var ph struct {
		Placeholder *bool    `json:"_placeholder"`
		Num         *float64 `json:"num"`
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	if err := dec.Decode(&ph); err != nil || ph.Placeholder == nil || !*ph.Placeholder || ph.Num == nil {
		return 0, false
	}
	n := *ph.Num
	if n < 0 || n != float64(int(n)) {
		return 0, false
	}
	return int(n), true
}

// ResolveBinary returns v with every binary placeholder replaced by the base64
// string of its attachment, so that encoding/json decodes it into a []byte field at
// any depth. v is returned unchanged when it holds no placeholder.
func ResolveBinary(v json.RawMessage, attachments [][]byte) (json.RawMessage, error) {
	if !bytes.Contains(v, placeholderKey) {
		return v, nil
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	tree, err := replacePlaceholders(tree, attachments, true)
	if err != nil {
		return nil, err
	}
	out, err := json.Marshal(tree)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	return out, nil
}

// checkPlaceholders verifies that every placeholder of p names one of its
// attachments.
func checkPlaceholders(p *Packet) error {
	if !bytes.Contains(p.Data, placeholderKey) {
		return nil
	}
	var tree any
	dec := json.NewDecoder(bytes.NewReader(p.Data))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidPayload, err)
	}
	_, err := replacePlaceholders(tree, p.Attachments, false)
	return err
}

func replacePlaceholders(v any, atts [][]byte, replace bool) (any, error) {
	switch t := v.(type) {
	case []any:
		for i, e := range t {
			r, err := replacePlaceholders(e, atts, replace)
			if err != nil {
				return nil, err
			}
			t[i] = r
		}
	case map[string]any:
		if ph, ok := t["_placeholder"].(bool); ok && ph {
			num, ok := t["num"].(json.Number)
			if !ok {
				return nil, ErrIllegalAttachments
			}
			n, err := strconv.Atoi(string(num))
			if err != nil || n < 0 || n >= len(atts) {
				return nil, ErrIllegalAttachments
			}
			if replace {
				return base64.StdEncoding.EncodeToString(atts[n]), nil
			}
			return v, nil
		}
		for k, e := range t {
			r, err := replacePlaceholders(e, atts, replace)
			if err != nil {
				return nil, err
			}
			t[k] = r
		}
	}
	return v, nil
}
