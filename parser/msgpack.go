package parser

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/vmihailenco/msgpack/v5"
)

// Msgpack is the parser of the npm package socket.io-msgpack-parser (3.x): each
// packet is one binary Engine.IO message holding a MessagePack map
// {type, nsp, data, id}, with binary inline as MessagePack bin (no separate
// attachments, no BINARY_EVENT type). Give it to a server with
// socketio.Options.Parser, and to the clients with
//
//	io(url, { parser: require("socket.io-msgpack-parser") })
//
// Arguments reach handlers as they would from a JSON client: maps as JSON
// objects, binary as []byte (Event.Bind, Event.Values), an undefined array
// element as null, a Date as its ISO 8601 string, as JSON.stringify writes them.
// Binary is accepted in events and acks only, as in the JSON form: a CONNECT
// whose auth holds a bin value is refused with ErrIllegalAttachments.
// Outgoing packets are translated from their JSON form once per packet, not
// once per connection.
var Msgpack Parser = msgpackParser{}

type msgpackParser struct{}

func (msgpackParser) Frames(e *Encoded) ([]Frame, error) {
	if f := e.msgpack.Load(); f != nil {
		return f.frames, f.err
	}
	b, err := EncodeMsgpack(e)
	f := &altFrames{err: err}
	if err == nil {
		f.frames = []Frame{{Data: b, Binary: true}}
	}
	// Two connections racing make the same bytes: either may be kept.
	e.msgpack.CompareAndSwap(nil, f)
	f = e.msgpack.Load()
	return f.frames, f.err
}

func (msgpackParser) NewDecoder(maxAttachments int) FrameDecoder {
	if maxAttachments <= 0 {
		maxAttachments = DefaultMaxAttachments
	}
	return &msgpackDecoder{maxAttachments: maxAttachments}
}

// EncodeMsgpack returns the packet e in the format of socket.io-msgpack-parser:
// a map with the keys type, nsp, data (when the packet has data) and id (when
// it has an ack id). Binary placeholders of the JSON form become bin values.
func EncodeMsgpack(e *Encoded) ([]byte, error) {
	p, n, err := Decode(e.Text)
	if err != nil {
		return nil, err
	}
	if n != len(e.Attachments) {
		return nil, fmt.Errorf("%w: %d attachments announced, %d given", ErrIllegalAttachments, n, len(e.Attachments))
	}
	t := p.Type
	switch t {
	case BinaryEvent:
		t = Event
	case BinaryAck:
		t = Ack
	}
	var buf bytes.Buffer
	buf.Grow(len(e.Text) + 16)
	for _, a := range e.Attachments {
		buf.Grow(len(a) + 5)
	}
	enc := msgpack.NewEncoder(&buf)
	w := jsonToMsgpack{enc: enc, atts: e.Attachments}
	fields := 2
	if p.Data != nil {
		fields++
	}
	if p.HasID {
		fields++
	}
	if err := w.err(enc.EncodeMapLen(fields)); err != nil {
		return nil, err
	}
	w.str("type")
	w.err(enc.EncodeUint(uint64(t)))
	w.str("nsp")
	w.str(p.Namespace)
	if p.Data != nil {
		w.str("data")
		w.value(p.Data, 0)
	}
	if p.HasID {
		w.str("id")
		w.err(enc.EncodeUint(p.ID))
	}
	if w.failed != nil {
		return nil, w.failed
	}
	return buf.Bytes(), nil
}

// jsonToMsgpack writes valid JSON as MessagePack, the way notepack.io would
// write the value JSON.parse gives: integers as the smallest int or uint,
// other numbers as float 64, objects as maps in key order.
type jsonToMsgpack struct {
	enc    *msgpack.Encoder
	atts   [][]byte
	failed error
}

func (w *jsonToMsgpack) err(err error) error {
	if err != nil && w.failed == nil {
		w.failed = err
	}
	return w.failed
}

func (w *jsonToMsgpack) str(s string) { w.err(w.enc.EncodeString(s)) }

// value writes the JSON value at b[i:] and returns the index after it.
func (w *jsonToMsgpack) value(b []byte, i int) int {
	i = skipSpace(b, i)
	if i >= len(b) || w.failed != nil {
		w.err(fmt.Errorf("%w: truncated JSON", ErrInvalidPayload))
		return len(b)
	}
	switch c := b[i]; {
	case c == '{':
		end := valueEnd(b, i)
		obj := b[i:end]
		if n, ok := PlaceholderIndex(obj); ok {
			if n >= len(w.atts) {
				w.err(ErrIllegalAttachments)
				return end
			}
			w.err(w.enc.EncodeBytes(w.atts[n]))
			return end
		}
		w.err(w.enc.EncodeMapLen(countElements(b, i)))
		i = skipSpace(b, i+1)
		for i < len(b) && b[i] != '}' && w.failed == nil {
			i = w.value(b, i) // the key, a string
			i = skipSpace(b, i)
			if i >= len(b) || b[i] != ':' {
				w.err(fmt.Errorf("%w: malformed JSON object", ErrInvalidPayload))
				return len(b)
			}
			i = w.value(b, i+1)
			i = skipSpace(b, i)
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
		return end
	case c == '[':
		end := valueEnd(b, i)
		w.err(w.enc.EncodeArrayLen(countElements(b, i)))
		i = skipSpace(b, i+1)
		for i < len(b) && b[i] != ']' && w.failed == nil {
			i = skipSpace(b, w.value(b, i))
			if i < len(b) && b[i] == ',' {
				i = skipSpace(b, i+1)
			}
		}
		return end
	case c == '"':
		end := valueEnd(b, i)
		if s, plain := plainString(b[i:end]); plain {
			w.str(s)
			return end
		}
		var s string
		if err := json.Unmarshal(b[i:end], &s); err != nil {
			w.err(fmt.Errorf("%w: %w", ErrInvalidPayload, err))
			return end
		}
		w.str(s)
		return end
	case c == 't':
		w.err(w.enc.EncodeBool(true))
		return i + 4
	case c == 'f':
		w.err(w.enc.EncodeBool(false))
		return i + 5
	case c == 'n':
		w.err(w.enc.EncodeNil())
		return i + 4
	default:
		end := i
		integer := true
		for end < len(b) && bytes.IndexByte([]byte("+-0123456789.eE"), b[end]) >= 0 {
			if b[end] == '.' || b[end] == 'e' || b[end] == 'E' {
				integer = false
			}
			end++
		}
		num := string(b[i:end])
		if integer {
			if v, err := strconv.ParseInt(num, 10, 64); err == nil {
				w.err(w.enc.EncodeInt(v))
				return end
			}
			if v, err := strconv.ParseUint(num, 10, 64); err == nil {
				w.err(w.enc.EncodeUint(v))
				return end
			}
		}
		f, err := strconv.ParseFloat(num, 64)
		if err != nil && !math.IsInf(f, 0) {
			w.err(fmt.Errorf("%w: number %q", ErrInvalidPayload, num))
			return end
		}
		w.err(w.enc.EncodeFloat64(f))
		return end
	}
}

// valueEnd returns the index after the string, object or array starting at
// b[i], in valid JSON.
func valueEnd(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			i++
			for i < len(b) && b[i] != '"' {
				if b[i] == '\\' {
					i++
				}
				i++
			}
			if depth == 0 {
				return i + 1
			}
		case '[', '{':
			depth++
		case ']', '}':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(b)
}

// countElements counts the elements of the array, or the members of the
// object, starting at b[i], in valid JSON.
func countElements(b []byte, i int) int {
	j := skipSpace(b, i+1)
	if j < len(b) && (b[j] == ']' || b[j] == '}') {
		return 0
	}
	n := 1
	depth := 0
	for i < len(b) {
		switch b[i] {
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
			depth--
			if depth == 0 {
				return n
			}
		case ',':
			if depth == 1 {
				n++
			}
		}
		i++
	}
	return n
}
