package compat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Limits on what a decoder accepts from Redis, so that a hostile or broken
// publisher cannot make a node allocate without bound.
const (
	maxDepth   = 64
	maxMessage = 64 << 20
)

var (
	errTooDeep  = errors.New("compat: value nested too deep")
	errTooLarge = errors.New("compat: message too large")
)

// kind is the type of a value.
type kind uint8

const (
	kNull kind = iota
	kBool
	kNum // JSON number text in num
	kStr
	kBin
	kArr
	kObj
)

// value is a JSON value that may hold binary, as JavaScript objects do when
// Node encodes them with msgpack (notepack.io). It keeps the order of object
// keys, which Node keeps too and clients may see.
type value struct {
	kind kind
	b    bool
	num  string
	str  string
	bin  []byte
	arr  []*value
	keys []string
	vals []*value
}

func null() *value              { return &value{kind: kNull} }
func str(s string) *value       { return &value{kind: kStr, str: s} }
func boolean(b bool) *value     { return &value{kind: kBool, b: b} }
func integer(n int64) *value    { return &value{kind: kNum, num: strconv.FormatInt(n, 10)} }
func bin(b []byte) *value       { return &value{kind: kBin, bin: b} }
func array(vs ...*value) *value { return &value{kind: kArr, arr: vs} }
func object() *value            { return &value{kind: kObj} }
func (v *value) isNull() bool   { return v == nil || v.kind == kNull }
func (v *value) set(k string, x *value) *value {
	v.keys = append(v.keys, k)
	v.vals = append(v.vals, x)
	return v
}

// get returns the value of key k of an object, or nil.
func (v *value) get(k string) *value {
	if v == nil || v.kind != kObj {
		return nil
	}
	for i := len(v.keys) - 1; i >= 0; i-- { // the last one wins, as in JSON.parse
		if v.keys[i] == k {
			return v.vals[i]
		}
	}
	return nil
}

// getStr returns the string at key k, or "".
func (v *value) getStr(k string) string {
	if x := v.get(k); x != nil && x.kind == kStr {
		return x.str
	}
	return ""
}

// getInt returns the number at key k as an integer.
func (v *value) getInt(k string) (int64, bool) {
	x := v.get(k)
	if x == nil || x.kind != kNum {
		return 0, false
	}
	f, err := strconv.ParseFloat(x.num, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// strings returns the strings of an array value (numbers as their text, as
// JavaScript would name a room); other elements are skipped.
func (v *value) strings() []string {
	if v == nil || v.kind != kArr {
		return nil
	}
	out := make([]string, 0, len(v.arr))
	for _, e := range v.arr {
		switch e.kind {
		case kStr:
			out = append(out, e.str)
		case kNum:
			out = append(out, e.num)
		}
	}
	return out
}

// hasBinary reports whether v holds binary anywhere.
func (v *value) hasBinary() bool {
	switch v.kind {
	case kBin:
		return true
	case kArr:
		for _, e := range v.arr {
			if e.hasBinary() {
				return true
			}
		}
	case kObj:
		for _, e := range v.vals {
			if e.hasBinary() {
				return true
			}
		}
	}
	return false
}

// ---- msgpack ----

// decodeMsgpack reads one msgpack value (as notepack.io writes them) from b.
func decodeMsgpack(b []byte) (*value, error) {
	if len(b) > maxMessage {
		return nil, errTooLarge
	}
	r := bytes.NewReader(b)
	v, err := readMsgpack(&mpReader{d: msgpack.NewDecoder(r), r: r}, 0)
	if err != nil {
		return nil, fmt.Errorf("compat: msgpack: %w", err)
	}
	return v, nil
}

// mpReader reads msgpack from a bytes.Reader, whose remaining length bounds
// every length a header declares before anything is allocated for it.
type mpReader struct {
	d *msgpack.Decoder
	r *bytes.Reader
}

// take reads n bytes, refusing a length longer than what is left.
func (m *mpReader) take(n int) ([]byte, error) {
	if n < 0 || n > m.r.Len() {
		return nil, io.ErrUnexpectedEOF
	}
	b := make([]byte, n)
	if err := m.d.ReadFull(b); err != nil {
		return nil, err
	}
	return b, nil
}

func readMsgpack(m *mpReader, depth int) (*value, error) {
	d := m.d
	if depth > maxDepth {
		return nil, errTooDeep
	}
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case c == msgpcode.Nil:
		return null(), d.DecodeNil()
	case c == msgpcode.False || c == msgpcode.True:
		b, err := d.DecodeBool()
		return boolean(b), err
	case msgpcode.IsFixedNum(c) || c == msgpcode.Int8 || c == msgpcode.Int16 || c == msgpcode.Int32 || c == msgpcode.Int64:
		n, err := d.DecodeInt64()
		return integer(n), err
	case c == msgpcode.Uint8 || c == msgpcode.Uint16 || c == msgpcode.Uint32 || c == msgpcode.Uint64:
		n, err := d.DecodeUint64()
		return &value{kind: kNum, num: strconv.FormatUint(n, 10)}, err
	case c == msgpcode.Float || c == msgpcode.Double:
		f, err := d.DecodeFloat64()
		if err != nil {
			return nil, err
		}
		return number(f), nil
	case msgpcode.IsString(c) || msgpcode.IsBin(c):
		n, err := d.DecodeBytesLen()
		if err != nil {
			return nil, err
		}
		b, err := m.take(n)
		if err != nil {
			return nil, err
		}
		if msgpcode.IsBin(c) {
			return bin(b), nil
		}
		return str(string(b)), nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		v := &value{kind: kArr}
		if n > m.r.Len() {
			return nil, io.ErrUnexpectedEOF
		}
		for i := 0; i < n; i++ {
			e, err := readMsgpack(m, depth+1)
			if err != nil {
				return nil, err
			}
			v.arr = append(v.arr, e)
		}
		return v, nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		v := object()
		if n > m.r.Len() {
			return nil, io.ErrUnexpectedEOF
		}
		for i := 0; i < n; i++ {
			k, err := readMsgpack(m, depth+1)
			if err != nil {
				return nil, err
			}
			e, err := readMsgpack(m, depth+1)
			if err != nil {
				return nil, err
			}
			v.set(keyText(k), e)
		}
		return v, nil
	case msgpcode.IsExt(c):
		return readExt(m)
	}
	return nil, fmt.Errorf("unknown msgpack code 0x%02x", c)
}

// keyText names an object key that msgpack allows to be any value.
func keyText(k *value) string {
	switch k.kind {
	case kStr:
		return k.str
	case kNum:
		return k.num
	case kBool:
		return strconv.FormatBool(k.b)
	case kNull:
		return "null"
	}
	return "" // an array, object or binary key has no text in JavaScript either
}

// readExt reads the extension types notepack.io writes: undefined (fixext 1,
// type 0), ArrayBuffer (ext, type 0), and dates (type -1 timestamps, and the
// older fixext 8 type 0). A date becomes the string JSON.stringify gives it.
func readExt(m *mpReader) (*value, error) {
	code, err := m.d.PeekCode()
	if err != nil {
		return nil, err
	}
	fixed := msgpcode.IsFixedExt(code)
	id, n, err := m.d.DecodeExtHeader()
	if err != nil {
		return nil, err
	}
	data, err := m.take(n)
	if err != nil {
		return nil, err
	}
	switch {
	case id == 0 && fixed && n == 1:
		return null(), nil // undefined
	case id == 0 && fixed && n == 8:
		ms := int64(be64(data))
		return str(jsDate(time.UnixMilli(ms))), nil
	case id == 0:
		return bin(data), nil
	case id == -1 && n == 4:
		return str(jsDate(time.Unix(int64(be32(data)), 0))), nil
	case id == -1 && n == 8:
		x := be64(data)
		return str(jsDate(time.Unix(int64(x&(1<<34-1)), int64(x>>34)))), nil
	case id == -1 && n == 12:
		return str(jsDate(time.Unix(int64(be64(data[4:])), int64(be32(data))))), nil
	}
	// Another extension: [type, bytes], as notepack.io decodes it.
	return array(integer(int64(id)), bin(data)), nil
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}
func be64(b []byte) uint64 { return uint64(be32(b))<<32 | uint64(be32(b[4:])) }

// jsDate is Date.prototype.toJSON.
func jsDate(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// number is a float as JSON writes it; NaN and infinities become null, as
// with JSON.stringify.
func number(f float64) *value {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return null()
	}
	return &value{kind: kNum, num: strconv.FormatFloat(f, 'g', -1, 64)}
}

// encodeMsgpack writes v as notepack.io would write the JavaScript value.
func encodeMsgpack(v *value) ([]byte, error) {
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	if err := writeMsgpack(e, v); err != nil {
		return nil, fmt.Errorf("compat: msgpack: %w", err)
	}
	return buf.Bytes(), nil
}

func writeMsgpack(e *msgpack.Encoder, v *value) error {
	switch v.kind {
	case kNull:
		return e.EncodeNil()
	case kBool:
		return e.EncodeBool(v.b)
	case kNum:
		return writeNumber(e, v.num)
	case kStr:
		return e.EncodeString(v.str)
	case kBin:
		return e.EncodeBytes(v.bin)
	case kArr:
		if err := e.EncodeArrayLen(len(v.arr)); err != nil {
			return err
		}
		for _, x := range v.arr {
			if err := writeMsgpack(e, x); err != nil {
				return err
			}
		}
		return nil
	case kObj:
		if err := e.EncodeMapLen(len(v.keys)); err != nil {
			return err
		}
		for i, k := range v.keys {
			if err := e.EncodeString(k); err != nil {
				return err
			}
			if err := writeMsgpack(e, v.vals[i]); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("value of kind %d", v.kind)
}

// writeNumber writes a JSON number as JavaScript holds it: an integer as the
// smallest msgpack integer, anything else as a float64.
func writeNumber(e *msgpack.Encoder, num string) error {
	if n, err := strconv.ParseInt(num, 10, 64); err == nil && n >= -(1<<53) && n <= 1<<53 {
		return e.EncodeInt(n)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return fmt.Errorf("number %q: %w", num, err)
	}
	if f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return e.EncodeInt(int64(f))
	}
	return e.EncodeFloat64(f)
}

// ---- JSON ----

// decodeJSON reads one JSON value from b.
func decodeJSON(b []byte) (*value, error) {
	if len(b) > maxMessage {
		return nil, errTooLarge
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := readJSON(d, 0)
	if err != nil {
		return nil, fmt.Errorf("compat: json: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, errors.New("compat: json: data after the value")
	}
	return v, nil
}

func readJSON(d *json.Decoder, depth int) (*value, error) {
	if depth > maxDepth {
		return nil, errTooDeep
	}
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	return fromToken(d, t, depth)
}

func fromToken(d *json.Decoder, t json.Token, depth int) (*value, error) {
	switch x := t.(type) {
	case nil:
		return null(), nil
	case bool:
		return boolean(x), nil
	case json.Number:
		return &value{kind: kNum, num: x.String()}, nil
	case string:
		return str(x), nil
	case json.Delim:
		switch x {
		case '[':
			v := &value{kind: kArr}
			for d.More() {
				e, err := readJSON(d, depth+1)
				if err != nil {
					return nil, err
				}
				v.arr = append(v.arr, e)
			}
			_, err := d.Token()
			return v, err
		case '{':
			v := object()
			for d.More() {
				kt, err := d.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, errors.New("object key is not a string")
				}
				e, err := readJSON(d, depth+1)
				if err != nil {
					return nil, err
				}
				v.set(k, e)
			}
			_, err := d.Token()
			return v, err
		}
	}
	return nil, fmt.Errorf("unexpected token %v", t)
}

// appendJSON writes v as JSON. Binary becomes a Socket.IO placeholder whose
// bytes are appended to atts; with atts nil, binary is an error.
func appendJSON(b []byte, v *value, atts *[][]byte) ([]byte, error) {
	switch v.kind {
	case kNull:
		return append(b, "null"...), nil
	case kBool:
		return strconv.AppendBool(b, v.b), nil
	case kNum:
		return append(b, v.num...), nil
	case kStr:
		q, err := json.Marshal(v.str)
		if err != nil {
			return nil, err
		}
		return append(b, q...), nil
	case kBin:
		if atts == nil {
			return nil, errors.New("compat: binary where none is allowed")
		}
		b = append(b, `{"_placeholder":true,"num":`...)
		b = strconv.AppendInt(b, int64(len(*atts)), 10)
		*atts = append(*atts, v.bin)
		return append(b, '}'), nil
	case kArr:
		b = append(b, '[')
		for i, x := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendJSON(b, x, atts); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case kObj:
		b = append(b, '{')
		for i, k := range v.keys {
			if i > 0 {
				b = append(b, ',')
			}
			q, err := json.Marshal(k)
			if err != nil {
				return nil, err
			}
			b = append(append(b, q...), ':')
			if b, err = appendJSON(b, v.vals[i], atts); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("compat: value of kind %d", v.kind)
}

// rawJSON returns v as JSON; binary is carried as placeholders into atts.
func rawJSON(v *value, atts *[][]byte) (json.RawMessage, error) {
	if v == nil {
		return json.RawMessage("null"), nil
	}
	return appendJSON(nil, v, atts)
}

// withBinary returns v with every Socket.IO placeholder replaced by its
// attachment, as the reference parser reconstructs a packet.
func withBinary(v *value, atts [][]byte) (*value, error) {
	switch v.kind {
	case kArr:
		out := &value{kind: kArr, arr: make([]*value, len(v.arr))}
		for i, x := range v.arr {
			r, err := withBinary(x, atts)
			if err != nil {
				return nil, err
			}
			out.arr[i] = r
		}
		return out, nil
	case kObj:
		if ph := v.get("_placeholder"); ph != nil && ph.kind == kBool && ph.b {
			n, ok := v.getInt("num")
			if !ok || n < 0 || n >= int64(len(atts)) {
				return nil, errors.New("compat: placeholder without its attachment")
			}
			return bin(atts[n]), nil
		}
		out := object()
		for i, k := range v.keys {
			r, err := withBinary(v.vals[i], atts)
			if err != nil {
				return nil, err
			}
			out.set(k, r)
		}
		return out, nil
	}
	return v, nil
}

// fromRaw parses JSON with Socket.IO placeholders into a value holding the
// attachments as binary.
func fromRaw(raw json.RawMessage, atts [][]byte) (*value, error) {
	if len(raw) == 0 {
		return null(), nil
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	if len(atts) == 0 && !bytes.Contains(raw, []byte(`"_placeholder"`)) {
		return v, nil
	}
	return withBinary(v, atts)
}
