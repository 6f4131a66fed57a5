package parser

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/durasock/durasock/internal/jsonx"
)

// Errors returned by Decode and Decoder. Every decoding error wraps ErrInvalid, so
// callers can tell bad input from other failures with errors.Is(err, ErrInvalid).
var (
	ErrInvalid            = errors.New("parser: invalid packet")
	ErrUnknownType        = fmt.Errorf("%w: unknown packet type", ErrInvalid)
	ErrIllegalAttachments = fmt.Errorf("%w: illegal attachments", ErrInvalid)
	ErrInvalidAckID       = fmt.Errorf("%w: invalid ack id", ErrInvalid)
	ErrInvalidPayload     = fmt.Errorf("%w: invalid payload", ErrInvalid)
	ErrTooManyAttachments = fmt.Errorf("%w: too many attachments", ErrInvalid)
	// ErrAttachmentsTooLarge: the attachments of one packet exceed
	// Decoder.MaxAttachmentBytes.
	ErrAttachmentsTooLarge = fmt.Errorf("%w: attachments too large", ErrInvalid)
	// ErrInvalidUTF8: a text message that is not valid UTF-8. Engine.IO
	// refuses such messages before they reach the parser; Decode checks again
	// so that no path forwards them.
	ErrInvalidUTF8      = fmt.Errorf("%w: not valid UTF-8", ErrInvalid)
	ErrUnexpectedBinary = fmt.Errorf("%w: binary data when not reconstructing a packet", ErrInvalid)
	ErrUnexpectedText   = fmt.Errorf("%w: plaintext data when reconstructing a packet", ErrInvalid)
)

// reservedEvents may not be sent by a client: they have a meaning of their own.
var reservedEvents = [...]string{
	"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
}

// maxAttachmentDigits bounds the attachment count field so it cannot overflow.
const maxAttachmentDigits = 9

// Decode parses one text message. For BINARY_EVENT and BINARY_ACK the returned
// count is the number of binary messages that must follow; Decoder collects them.
// Data aliases text.
//
// Validation follows the reference parser: an unknown type, a malformed attachment
// count, a malformed ack id or a payload of the wrong shape is an error. EVENT (and
// BINARY_EVENT) data must be a JSON array whose first element is a string that is not
// a reserved event name (or a number); ACK data must be an array (it may be absent,
// meaning no arguments); CONNECT data, when present, an object; CONNECT_ERROR data
// an object or a string; DISCONNECT carries none.
func Decode(text []byte) (*Packet, int, error) {
	if len(text) == 0 {
		return nil, 0, fmt.Errorf("%w: empty message", ErrInvalid)
	}
	c := text[0]
	if c < '0' || c > '6' {
		return nil, 0, ErrUnknownType
	}
	if !utf8.Valid(text) {
		return nil, 0, ErrInvalidUTF8
	}
	p := &Packet{Type: Type(c - '0'), Namespace: "/"}
	i := 1
	attachments := 0
	if p.Type == BinaryEvent || p.Type == BinaryAck {
		start := i
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			i++
		}
		if i == start || i-start > maxAttachmentDigits || i >= len(text) || text[i] != '-' {
			return nil, 0, ErrIllegalAttachments
		}
		for _, d := range text[start:i] {
			attachments = attachments*10 + int(d-'0')
		}
		i++ // '-'
	}
	if i < len(text) && text[i] == '/' {
		end := bytes.IndexByte(text[i:], ',')
		if end < 0 {
			p.Namespace = string(text[i:])
			i = len(text)
		} else {
			p.Namespace = string(text[i : i+end])
			i += end + 1
		}
	}
	if i < len(text) && text[i] >= '0' && text[i] <= '9' {
		var id uint64
		for i < len(text) && text[i] >= '0' && text[i] <= '9' {
			d := uint64(text[i] - '0')
			if id > (1<<64-1-d)/10 {
				return nil, 0, ErrInvalidAckID
			}
			id = id*10 + d
			i++
		}
		p.ID, p.HasID = id, true
	}
	if i < len(text) {
		p.Data = json.RawMessage(text[i:])
	}
	if err := validate(p); err != nil {
		return nil, 0, err
	}
	return p, attachments, nil
}

func validate(p *Packet) error {
	if p.Data != nil && !json.Valid(p.Data) {
		return fmt.Errorf("%w: malformed JSON", ErrInvalidPayload)
	}
	switch p.Type {
	case Connect:
		if p.HasID {
			return ErrInvalidAckID
		}
		if p.Data != nil && jsonx.FirstByte(p.Data) != '{' {
			return fmt.Errorf("%w: CONNECT payload must be an object", ErrInvalidPayload)
		}
	case Disconnect:
		if p.HasID {
			return ErrInvalidAckID
		}
		if p.Data != nil {
			return fmt.Errorf("%w: DISCONNECT carries no payload", ErrInvalidPayload)
		}
	case ConnectError:
		if p.HasID {
			return ErrInvalidAckID
		}
		if p.Data != nil {
			if b := jsonx.FirstByte(p.Data); b != '{' && b != '"' {
				return fmt.Errorf("%w: CONNECT_ERROR payload must be an object or a string", ErrInvalidPayload)
			}
		}
	case Event, BinaryEvent:
		if p.Data == nil {
			return fmt.Errorf("%w: EVENT without payload", ErrInvalidPayload)
		}
		if _, err := EventName(p.Data); err != nil {
			return err
		}
	case Ack, BinaryAck:
		if !p.HasID {
			return fmt.Errorf("%w: ACK without id", ErrInvalidAckID)
		}
		if p.Data != nil && jsonx.FirstByte(p.Data) != '[' {
			return fmt.Errorf("%w: ACK payload must be an array", ErrInvalidPayload)
		}
	}
	return nil
}

// EventName returns the event name of an EVENT payload (a JSON array whose first
// element is the name). A numeric first element is accepted, as by the reference
// parser, and returned as its JSON text.
func EventName(data json.RawMessage) (string, error) {
	if jsonx.FirstByte(data) != '[' {
		return "", fmt.Errorf("%w: EVENT payload must be an array", ErrInvalidPayload)
	}
	first, _, ok := nextElement(data, skipSpace(data, skipSpace(data, 0)+1))
	if !ok {
		return "", fmt.Errorf("%w: EVENT payload must start with the event name", ErrInvalidPayload)
	}
	switch c := first[0]; {
	case c == '"':
		if name, plain := plainString(first); plain {
			for _, r := range reservedEvents {
				if name == r {
					return "", fmt.Errorf("%w: reserved event name %q", ErrInvalidPayload, name)
				}
			}
			return name, nil
		}
		var name string
		if err := json.Unmarshal(first, &name); err != nil {
			return "", fmt.Errorf("%w: event name: %w", ErrInvalidPayload, err)
		}
		for _, r := range reservedEvents {
			if name == r {
				return "", fmt.Errorf("%w: reserved event name %q", ErrInvalidPayload, name)
			}
		}
		return name, nil
	case c == '-' || (c >= '0' && c <= '9'):
		return string(first), nil
	default:
		return "", fmt.Errorf("%w: event name must be a string", ErrInvalidPayload)
	}
}

// plainString returns the content of a JSON string token without escapes or
// control characters, which needs no decoding.
func plainString(tok []byte) (string, bool) {
	if len(tok) < 2 || tok[0] != '"' || tok[len(tok)-1] != '"' {
		return "", false
	}
	body := tok[1 : len(tok)-1]
	for _, c := range body {
		if c == '\\' || c == '"' || c < 0x20 {
			return "", false
		}
	}
	if !utf8.Valid(body) {
		return "", false
	}
	return string(body), true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// nextElement returns the JSON value starting at b[i] (b must be valid JSON, i at a
// value inside an array) and the index after the separator that follows it. ok is
// false at the end of the array.
func nextElement(b []byte, i int) (value []byte, next int, ok bool) {
	if i >= len(b) || b[i] == ']' {
		return nil, i, false
	}
	start := i
	depth := 0
	for i < len(b) {
		c := b[i]
		switch c {
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
		case '[', '{':
			depth++
		case ']', '}':
			if depth == 0 {
				return trimSpaceRight(b[start:i]), i, true
			}
			depth--
		case ',':
			if depth == 0 {
				return trimSpaceRight(b[start:i]), skipSpace(b, i+1), true
			}
		}
		i++
	}
	return trimSpaceRight(b[start:]), i, true
}

func trimSpaceRight(b []byte) []byte {
	for len(b) > 0 {
		switch b[len(b)-1] {
		case ' ', '\t', '\n', '\r':
			b = b[:len(b)-1]
		default:
			return b
		}
	}
	return b
}

// SplitArray returns the elements of a JSON array without copying: each element
// aliases data. It returns ErrInvalidPayload when data is not a valid JSON array.
// A nil or empty data gives no elements.
func SplitArray(data json.RawMessage) ([]json.RawMessage, error) {
	if len(data) == 0 {
		return nil, nil
	}
	if jsonx.FirstByte(data) != '[' || !json.Valid(data) {
		return nil, fmt.Errorf("%w: not a JSON array", ErrInvalidPayload)
	}
	return splitValid(data), nil
}

// SplitValid is SplitArray for data already validated, such as the Data of a
// packet returned by Decode or a Decoder: it skips the validation pass. On
// invalid JSON it returns meaningless elements but never panics.
func SplitValid(data json.RawMessage) []json.RawMessage {
	if len(data) == 0 || jsonx.FirstByte(data) != '[' {
		return nil
	}
	return splitValid(data)
}

// splitValid splits an array already known to be valid JSON.
func splitValid(data []byte) []json.RawMessage {
	i := skipSpace(data, skipSpace(data, 0)+1)
	n := bytes.Count(data, []byte{','}) + 1
	if n > 16 {
		n = 16
	}
	out := make([]json.RawMessage, 0, n)
	for {
		v, next, ok := nextElement(data, i)
		if !ok {
			return out
		}
		out = append(out, json.RawMessage(v))
		i = next
	}
}
