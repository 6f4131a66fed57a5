package parser

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// maxMsgpackDepth bounds the nesting of a msgpack payload, as encoding/json
// bounds that of a JSON one.
const maxMsgpackDepth = 10000

// Errors of the msgpack decoder that the JSON decoder does not have.
var (
	ErrInvalidNamespace = fmt.Errorf("%w: invalid namespace", ErrInvalid)
	ErrUnexpectedFormat = fmt.Errorf("%w: message is not in the connection's format", ErrInvalid)
)

// msgpackDecoder decodes the binary messages of a socket.io-msgpack-parser
// client, one packet per message.
type msgpackDecoder struct {
	maxAttachments int
	r              bytes.Reader
	dec            *msgpack.Decoder // from the library's pool while decoding
}

func (d *msgpackDecoder) Reset() {}

func (d *msgpackDecoder) Add(data []byte, binary bool) (*Packet, error) {
	if !binary {
		return nil, fmt.Errorf("%w: text message on a msgpack connection", ErrUnexpectedFormat)
	}
	d.r.Reset(data)
	d.dec = msgpack.GetDecoder()
	d.dec.Reset(&d.r)
	p, err := d.packet()
	d.dec.Reset(nil)
	msgpack.PutDecoder(d.dec)
	d.dec = nil
	d.r.Reset(nil)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// DecodeMsgpack decodes one message of a socket.io-msgpack-parser peer. The
// packet's Data is its JSON form, with each bin value as an attachment
// referenced by a placeholder, as the JSON Decoder returns it.
func DecodeMsgpack(data []byte, maxAttachments int) (*Packet, error) {
	return Msgpack.NewDecoder(maxAttachments).Add(data, true)
}

func (d *msgpackDecoder) packet() (*Packet, error) {
	dec := d.dec
	code, err := dec.PeekCode()
	if err != nil {
		return nil, fmt.Errorf("%w: empty message", ErrInvalid)
	}
	if !msgpcode.IsFixedMap(code) && code != msgpcode.Map16 && code != msgpcode.Map32 {
		return nil, fmt.Errorf("%w: packet is not a map", ErrUnknownType)
	}
	n, err := dec.DecodeMapLen()
	if err != nil {
		return nil, invalid(err)
	}
	var (
		typ     = -1
		nsp     string
		hasNsp  bool
		data    *toJSON
		id      uint64
		hasID   bool
		discard = toJSON{dec: dec, r: &d.r, max: math.MaxInt}
	)
	for range n {
		code, err := dec.PeekCode()
		if err != nil {
			return nil, invalid(err)
		}
		if !isStr(code) {
			// Not one of the packet's keys: skip the key and its value.
			discard.reset()
			if err := discard.value(0); err != nil {
				return nil, err
			}
			discard.reset()
			if err := discard.value(0); err != nil {
				return nil, err
			}
			continue
		}
		key, err := readString(dec, &d.r)
		if err != nil {
			return nil, err
		}
		switch key {
		case "type":
			v, ok, err := d.integer()
			if err != nil {
				return nil, err
			}
			typ = -1
			if ok && v <= uint64(ConnectError) {
				typ = int(v)
			}
		case "nsp":
			code, err := dec.PeekCode()
			if err != nil {
				return nil, invalid(err)
			}
			hasNsp = isStr(code)
			if !hasNsp {
				discard.reset()
				if err := discard.value(0); err != nil {
					return nil, err
				}
				continue
			}
			if nsp, err = readString(dec, &d.r); err != nil {
				return nil, err
			}
			if !utf8.ValidString(nsp) {
				return nil, ErrInvalidUTF8 // strings in data become U+FFFD; a name cannot
			}
		case "data":
			data = &toJSON{dec: dec, r: &d.r, max: d.maxAttachments}
			if err := data.value(0); err != nil {
				return nil, err
			}
			if data.undefined {
				data = nil
			}
		case "id":
			code, err := dec.PeekCode()
			if err != nil {
				return nil, invalid(err)
			}
			if code == msgpcode.FixExt1 {
				// undefined, as notepack writes it: no id.
				discard.reset()
				if err := discard.value(0); err != nil {
					return nil, err
				}
				if !discard.undefined {
					return nil, ErrInvalidAckID
				}
				hasID = false
				continue
			}
			v, ok, err := d.integer()
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, ErrInvalidAckID
			}
			id, hasID = v, true
		default:
			discard.reset()
			if err := discard.value(0); err != nil {
				return nil, err
			}
		}
	}
	if d.r.Len() > 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrInvalid, d.r.Len())
	}
	if typ < 0 {
		return nil, ErrUnknownType
	}
	// A name the JSON form cannot carry (every name a JSON client can send
	// starts with "/" and has no comma) would not reach the adapters intact.
	if !hasNsp || !strings.HasPrefix(nsp, "/") || strings.ContainsRune(nsp, ',') {
		return nil, ErrInvalidNamespace
	}
	p := &Packet{Type: Type(typ), Namespace: nsp, ID: id, HasID: hasID}
	if data != nil {
		p.Data = data.out
		p.Attachments = data.atts
	}
	if len(p.Attachments) > 0 {
		switch p.Type {
		case Event:
			p.Type = BinaryEvent
		case Ack:
			p.Type = BinaryAck
		default:
			// The JSON form carries binary only in events and acks, and so
			// does every handler downstream: a CONNECT whose auth holds a
			// bin value cannot be passed on intact.
			return nil, fmt.Errorf("%w: binary data in a packet of type %d", ErrIllegalAttachments, p.Type)
		}
	}
	if err := validate(p); err != nil {
		return nil, err
	}
	// A map shaped like a placeholder would be taken for one downstream: it
	// must at least name an attachment of this packet.
	if err := checkPlaceholders(p); err != nil {
		return nil, err
	}
	return p, nil
}

// integer decodes a number that is a non-negative integer, as Number.isInteger
// accepts it: ok is false for any other value, which is consumed.
func (d *msgpackDecoder) integer() (uint64, bool, error) {
	dec := d.dec
	code, err := dec.PeekCode()
	if err != nil {
		return 0, false, invalid(err)
	}
	switch {
	case msgpcode.IsFixedNum(code) || code == msgpcode.Int8 || code == msgpcode.Int16 ||
		code == msgpcode.Int32 || code == msgpcode.Int64:
		v, err := dec.DecodeInt64()
		if err != nil {
			return 0, false, invalid(err)
		}
		return uint64(v), v >= 0, nil
	case code == msgpcode.Uint8 || code == msgpcode.Uint16 || code == msgpcode.Uint32 || code == msgpcode.Uint64:
		v, err := dec.DecodeUint64()
		return v, err == nil, invalid(err)
	case code == msgpcode.Float || code == msgpcode.Double:
		f, err := dec.DecodeFloat64()
		if err != nil {
			return 0, false, invalid(err)
		}
		if f < 0 || f >= 1<<64 || f != math.Trunc(f) {
			return 0, false, nil
		}
		return uint64(f), true, nil
	}
	t := toJSON{dec: dec, r: &d.r, max: math.MaxInt}
	return 0, false, t.value(0)
}

func isStr(code byte) bool {
	return msgpcode.IsFixedString(code) || code == msgpcode.Str8 || code == msgpcode.Str16 || code == msgpcode.Str32
}

// readBytes reads a str or bin value. Its length is checked against what the
// message holds before anything is allocated: the library would allocate a
// 4 GiB bin that a 6-byte message announces.
func readBytes(dec *msgpack.Decoder, r *bytes.Reader) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, invalid(err)
	}
	if n < 0 || n > r.Len() {
		return nil, fmt.Errorf("%w: a value longer than the message", ErrInvalidPayload)
	}
	b := make([]byte, n)
	if err := dec.ReadFull(b); err != nil {
		return nil, invalid(err)
	}
	return b, nil
}

func readString(dec *msgpack.Decoder, r *bytes.Reader) (string, error) {
	b, err := readBytes(dec, r)
	return string(b), err
}

// invalid wraps an error of the msgpack library (truncated input, a length
// past the end) so that it reads as bad input.
func invalid(err error) error {
	if err == nil || errors.Is(err, ErrInvalid) {
		return err
	}
	return fmt.Errorf("%w: malformed msgpack: %w", ErrInvalidPayload, err)
}

// toJSON writes a msgpack value as JSON, the value that JSON.stringify gives
// for what notepack.io decodes: bin (and ArrayBuffer, ext type 0) become
// attachments referenced by placeholders.
type toJSON struct {
	dec       *msgpack.Decoder
	r         *bytes.Reader // what dec reads, to bound lengths by what is left
	out       []byte
	atts      [][]byte
	max       int
	undefined bool // the last top-level value was undefined
}

func (t *toJSON) reset() { t.out, t.atts, t.undefined = t.out[:0], t.atts[:0], false }

func (t *toJSON) attach(b []byte) error {
	if len(t.atts) >= t.max {
		return fmt.Errorf("%w: more than %d binary values", ErrTooManyAttachments, t.max)
	}
	t.out = appendPlaceholder(t.out, len(t.atts))
	t.atts = append(t.atts, b)
	return nil
}

// value writes the next value. An undefined value writes null and sets
// t.undefined, so that a map member can be left out as JSON.stringify does.
func (t *toJSON) value(depth int) error {
	if depth > maxMsgpackDepth {
		return fmt.Errorf("%w: nested deeper than %d", ErrInvalidPayload, maxMsgpackDepth)
	}
	t.undefined = false
	dec := t.dec
	code, err := dec.PeekCode()
	if err != nil {
		return invalid(err)
	}
	switch {
	case code == msgpcode.Nil:
		if err := dec.DecodeNil(); err != nil {
			return invalid(err)
		}
		t.out = append(t.out, "null"...)
	case code == msgpcode.True || code == msgpcode.False:
		v, err := dec.DecodeBool()
		if err != nil {
			return invalid(err)
		}
		t.out = strconv.AppendBool(t.out, v)
	case msgpcode.IsFixedNum(code) && int8(code) < 0, code == msgpcode.Int8, code == msgpcode.Int16,
		code == msgpcode.Int32, code == msgpcode.Int64:
		v, err := dec.DecodeInt64()
		if err != nil {
			return invalid(err)
		}
		t.out = strconv.AppendInt(t.out, v, 10)
	case msgpcode.IsFixedNum(code), code == msgpcode.Uint8, code == msgpcode.Uint16,
		code == msgpcode.Uint32, code == msgpcode.Uint64:
		v, err := dec.DecodeUint64()
		if err != nil {
			return invalid(err)
		}
		t.out = strconv.AppendUint(t.out, v, 10)
	case code == msgpcode.Float || code == msgpcode.Double:
		v, err := dec.DecodeFloat64()
		if err != nil {
			return invalid(err)
		}
		t.out = appendJSONNumber(t.out, v)
	case isStr(code):
		s, err := readString(dec, t.r)
		if err != nil {
			return err
		}
		t.out = appendJSONString(t.out, s)
	case code == msgpcode.Bin8 || code == msgpcode.Bin16 || code == msgpcode.Bin32:
		b, err := readBytes(dec, t.r)
		if err != nil {
			return err
		}
		return t.attach(b)
	case msgpcode.IsFixedArray(code) || code == msgpcode.Array16 || code == msgpcode.Array32:
		n, err := dec.DecodeArrayLen()
		if err != nil {
			return invalid(err)
		}
		t.out = append(t.out, '[')
		for i := range n {
			if i > 0 {
				t.out = append(t.out, ',')
			}
			if err := t.value(depth + 1); err != nil {
				return err
			}
		}
		t.out = append(t.out, ']')
		t.undefined = false
	case msgpcode.IsFixedMap(code) || code == msgpcode.Map16 || code == msgpcode.Map32:
		return t.object(depth)
	case code == msgpcode.FixExt1 || code == msgpcode.FixExt2 || code == msgpcode.FixExt4 ||
		code == msgpcode.FixExt8 || code == msgpcode.FixExt16 ||
		code == msgpcode.Ext8 || code == msgpcode.Ext16 || code == msgpcode.Ext32:
		return t.ext(code)
	default:
		return fmt.Errorf("%w: unknown msgpack code 0x%x", ErrInvalidPayload, code)
	}
	return nil
}

func (t *toJSON) object(depth int) error {
	dec := t.dec
	n, err := dec.DecodeMapLen()
	if err != nil {
		return invalid(err)
	}
	t.out = append(t.out, '{')
	first := true
	for range n {
		start := len(t.out)
		if !first {
			t.out = append(t.out, ',')
		}
		if err := t.key(); err != nil {
			return err
		}
		t.out = append(t.out, ':')
		if err := t.value(depth + 1); err != nil {
			return err
		}
		if t.undefined {
			t.out = t.out[:start] // JSON.stringify leaves out an undefined member
			continue
		}
		first = false
	}
	t.out = append(t.out, '}')
	t.undefined = false
	return nil
}

// key writes a map key as a JSON string: notepack.io makes a property name of
// any key, so a number, a boolean or nil is written as JavaScript prints it.
func (t *toJSON) key() error {
	dec := t.dec
	code, err := dec.PeekCode()
	if err != nil {
		return invalid(err)
	}
	if isStr(code) {
		s, err := readString(dec, t.r)
		if err != nil {
			return err
		}
		t.out = appendJSONString(t.out, s)
		return nil
	}
	switch {
	case msgpcode.IsFixedNum(code), code == msgpcode.Nil, code == msgpcode.True, code == msgpcode.False,
		code >= msgpcode.Uint8 && code <= msgpcode.Int64, code == msgpcode.Float, code == msgpcode.Double:
		inner := toJSON{dec: dec, r: t.r, max: math.MaxInt}
		if err := inner.value(0); err != nil {
			return err
		}
		t.out = appendJSONString(t.out, string(inner.out))
		return nil
	}
	return fmt.Errorf("%w: map key of msgpack code 0x%x", ErrInvalidPayload, code)
}

// ext decodes the extension types notepack.io writes: undefined (fixext 1,
// type 0), a Date (fixext 8, type 0: milliseconds since the epoch) and an
// ArrayBuffer or typed array (ext 8/16/32, type 0). Any other extension reads
// as notepack.io reads it, [type, binary].
func (t *toJSON) ext(code byte) error {
	dec := t.dec
	typ, n, err := dec.DecodeExtHeader()
	if err != nil {
		return invalid(err)
	}
	if n < 0 || n > t.r.Len() {
		return fmt.Errorf("%w: extension longer than the message", ErrInvalidPayload)
	}
	b := make([]byte, n)
	if err := dec.ReadFull(b); err != nil {
		return invalid(err)
	}
	switch {
	case typ == 0 && code == msgpcode.FixExt1:
		t.out = append(t.out, "null"...)
		t.undefined = true
		return nil
	case typ == 0 && code == msgpcode.FixExt8:
		ms := int64(uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
			uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7]))
		const maxDate = 8.64e15 // the range of a JavaScript Date
		if ms > maxDate || ms < -maxDate {
			t.out = append(t.out, "null"...) // an invalid Date: toJSON gives null
			return nil
		}
		t.out = appendJSONString(t.out, isoDate(ms))
		return nil
	case typ == 0 && (code == msgpcode.Ext8 || code == msgpcode.Ext16 || code == msgpcode.Ext32):
		return t.attach(b)
	}
	t.out = append(t.out, '[')
	t.out = strconv.AppendInt(t.out, int64(typ), 10)
	t.out = append(t.out, ',')
	if err := t.attach(b); err != nil {
		return err
	}
	t.out = append(t.out, ']')
	return nil
}

// isoDate formats as Date.prototype.toISOString does.
func isoDate(ms int64) string {
	tm := time.UnixMilli(ms).UTC()
	if y := tm.Year(); y < 0 || y > 9999 {
		s := tm.Format("-01-02T15:04:05.000Z")
		sign := "+"
		if y < 0 {
			sign, y = "-", -y
		}
		return sign + fmt.Sprintf("%06d", y) + s
	}
	return tm.Format("2006-01-02T15:04:05.000Z")
}

// appendJSONNumber writes a float as JSON; NaN and the infinities, which JSON
// cannot hold, as null, as JSON.stringify does.
func appendJSONNumber(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString writes s as a JSON string; invalid UTF-8 becomes U+FFFD, as
// encoding/json writes it.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\uFFFD"...)
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
