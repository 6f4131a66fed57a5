package parser

import (
	"bytes"
	"crypto/rand"
	"encoding"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
)

// RawArg is a JSON argument whose binary placeholders {"_placeholder":true,
// "num":N} name Attachments[N]. EventPacket and AckPacket send it as it came:
// its JSON byte for byte except for the placeholders, renumbered for the new
// packet, and the attachments it references as binary attachments. Event.Values
// of package socketio returns one for every argument with binary nested inside,
// so forwarding an event keeps its binary as binary.
//
// Nested inside another Go value, a RawArg marshals with encoding/json as its
// JSON with each placeholder replaced by the base64 string of its attachment.
type RawArg struct {
	JSON        json.RawMessage
	Attachments [][]byte
}

// MarshalJSON returns the JSON with binary resolved to base64 strings.
func (r RawArg) MarshalJSON() ([]byte, error) {
	if len(r.JSON) == 0 {
		return []byte("null"), nil
	}
	return ResolveBinary(r.JSON, r.Attachments)
}

var (
	marshalerType     = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// holdsBytes caches, per type, whether a value of the type can hold a byte
// slice that encoding/json would write as base64: a type whose values never do
// is marshalled by encoding/json at no extra cost.
var holdsBytes sync.Map // reflect.Type -> bool

func typeHoldsBytes(t reflect.Type) bool {
	if v, ok := holdsBytes.Load(t); ok {
		return v.(bool)
	}
	r := computeHoldsBytes(t, make(map[reflect.Type]bool))
	holdsBytes.Store(t, r)
	return r
}

// opaque reports whether encoding/json writes t through a method of its own,
// whose output no byte slice inside can change.
func opaque(t reflect.Type) bool {
	if t.Kind() == reflect.Interface {
		return false
	}
	return t.Implements(marshalerType) || t.Implements(textMarshalerType) ||
		reflect.PointerTo(t).Implements(marshalerType) || reflect.PointerTo(t).Implements(textMarshalerType)
}

// isBytes reports whether encoding/json writes t as a base64 string.
func isBytes(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && !opaque(t.Elem()) && !opaque(t)
}

func computeHoldsBytes(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return false // a cycle adds nothing the other fields do not
	}
	seen[t] = true
	if opaque(t) {
		return false
	}
	switch t.Kind() {
	case reflect.Interface:
		return true
	case reflect.Slice:
		return isBytes(t) || computeHoldsBytes(t.Elem(), seen)
	case reflect.Array, reflect.Pointer, reflect.Map:
		return computeHoldsBytes(t.Elem(), seen)
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if (f.IsExported() || f.Anonymous) && f.Tag.Get("json") != "-" && computeHoldsBytes(f.Type, seen) {
				return true
			}
		}
	}
	return false
}

// mayHoldBytes reports whether marshalling v could write a byte slice. It looks
// into the generic containers of decoded JSON without reflection, and otherwise
// answers from the cached analysis of v's type, followed by a look at the value
// only when the type has interfaces inside.
func mayHoldBytes(v any) bool {
	switch t := v.(type) {
	case nil, string, bool, float64, float32, int, int64, int32, uint, uint64, uint32, json.Number, json.RawMessage:
		return false
	case []byte:
		return true
	case map[string]any:
		for _, e := range t {
			if mayHoldBytes(e) {
				return true
			}
		}
		return false
	case []any:
		for _, e := range t {
			if mayHoldBytes(e) {
				return true
			}
		}
		return false
	}
	return typeHoldsBytes(reflect.TypeOf(v))
}

// maxRewriteDepth bounds the walk of a value; encoding/json reports the cycle
// of a value deeper than this.
const maxRewriteDepth = 1000

// binaryMarshaller marshals a value with every byte slice inside it, at any
// depth, written as a binary placeholder, as the reference server does.
//
// It copies the path from the value to each byte slice, with the slice replaced
// by a marker of random bytes, marshals the copy with encoding/json (so every
// rule of encoding/json applies: field names, omitempty, embedding, methods) and
// replaces the base64 string of each marker by a placeholder. The value itself
// is not modified.
type binaryMarshaller struct {
	nonce  [12]byte
	prefix string // base64 of nonce: every marker's base64 starts with it
	found  [][]byte
}

func (m *binaryMarshaller) marker(b []byte) []byte {
	if m.prefix == "" {
		// Made on the first byte slice: a value with none costs no random bytes.
		rand.Read(m.nonce[:])
		m.prefix = base64.StdEncoding.EncodeToString(m.nonce[:])
	}
	mk := make([]byte, 18)
	copy(mk, m.nonce[:])
	binary.BigEndian.PutUint32(mk[12:], uint32(len(m.found)))
	m.found = append(m.found, b)
	return mk
}

// marshal appends v to out, its byte slices as placeholders numbered from
// len(atts), and returns the attachments with the new ones appended.
func marshalBinary(out []byte, atts [][]byte, v any) ([]byte, [][]byte, error) {
	var m binaryMarshaller
	rv := reflect.ValueOf(v)
	cp, changed := m.rewrite(rv, 0)
	if changed {
		v = cp.Interface()
	}
	js, err := json.Marshal(v)
	if err != nil {
		return nil, nil, err
	}
	if len(m.found) == 0 {
		return append(out, js...), atts, nil
	}
	// Markers appear as "<prefix><8 base64 chars>" strings; the 96 random bits
	// make a clash with an application string unrealistic.
	quoted := `"` + m.prefix
	for {
		i := bytes.Index(js, []byte(quoted))
		if i < 0 {
			break
		}
		end := i + len(quoted) + 8
		if end >= len(js) || js[end] != '"' {
			out = append(out, js[:i+1]...)
			js = js[i+1:]
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(m.prefix + string(js[i+len(quoted):end]))
		if err != nil || len(raw) != 18 {
			out = append(out, js[:i+1]...)
			js = js[i+1:]
			continue
		}
		k := binary.BigEndian.Uint32(raw[12:])
		if int(k) >= len(m.found) {
			out = append(out, js[:i+1]...)
			js = js[i+1:]
			continue
		}
		out = append(out, js[:i]...)
		out = appendPlaceholder(out, len(atts))
		atts = append(atts, m.found[k])
		js = js[end+1:]
	}
	return append(out, js...), atts, nil
}

// rewrite returns a copy of v with every byte slice replaced by a marker, and
// whether anything was replaced (v itself is returned when nothing was).
func (m *binaryMarshaller) rewrite(v reflect.Value, depth int) (reflect.Value, bool) {
	if !v.IsValid() || depth > maxRewriteDepth {
		return v, false
	}
	t := v.Type()
	if opaque(t) {
		return v, false
	}
	switch t.Kind() {
	case reflect.Interface:
		return m.rewriteInterface(v, depth)
	case reflect.Pointer:
		return m.rewritePointer(v, depth)
	case reflect.Slice:
		return m.rewriteSlice(v, depth)
	case reflect.Array:
		if !typeHoldsBytes(t) {
			return v, false
		}
		return m.rewriteElems(v, depth, func() reflect.Value {
			cp := reflect.New(t).Elem()
			cp.Set(v)
			return cp
		})
	case reflect.Map:
		return m.rewriteMap(v, depth)
	case reflect.Struct:
		return m.rewriteStruct(v, depth)
	}
	return v, false
}

func (m *binaryMarshaller) rewriteInterface(v reflect.Value, depth int) (reflect.Value, bool) {
	// The dynamic value is looked at first without reflection: decoded JSON
	// (maps, slices, scalars) or a type known to hold no byte slice.
	if v.IsNil() || !v.CanInterface() || !mayHoldBytes(v.Interface()) {
		return v, false
	}
	e, changed := m.rewrite(v.Elem(), depth+1)
	if !changed {
		return v, false
	}
	cp := reflect.New(v.Type()).Elem()
	cp.Set(e)
	return cp, true
}

func (m *binaryMarshaller) rewritePointer(v reflect.Value, depth int) (reflect.Value, bool) {
	t := v.Type()
	if v.IsNil() || !typeHoldsBytes(t) {
		return v, false
	}
	e, changed := m.rewrite(v.Elem(), depth+1)
	if !changed {
		return v, false
	}
	p := reflect.New(t.Elem())
	p.Elem().Set(e)
	return p, true
}

func (m *binaryMarshaller) rewriteSlice(v reflect.Value, depth int) (reflect.Value, bool) {
	t := v.Type()
	if v.IsNil() {
		return v, false
	}
	if isBytes(t) {
		return reflect.ValueOf(m.marker(v.Bytes())).Convert(t), true
	}
	if !typeHoldsBytes(t) {
		return v, false
	}
	return m.rewriteElems(v, depth, func() reflect.Value {
		cp := reflect.MakeSlice(t, v.Len(), v.Len())
		reflect.Copy(cp, v)
		return cp
	})
}

// rewriteElems rewrites the elements of the slice or array v into a copy
// that newCopy makes at the first element that changes.
func (m *binaryMarshaller) rewriteElems(v reflect.Value, depth int, newCopy func() reflect.Value) (reflect.Value, bool) {
	var cp reflect.Value
	for i := range v.Len() {
		e, changed := m.rewrite(v.Index(i), depth+1)
		if !changed {
			continue
		}
		if !cp.IsValid() {
			cp = newCopy()
		}
		cp.Index(i).Set(e)
	}
	return cp, cp.IsValid()
}

func (m *binaryMarshaller) rewriteMap(v reflect.Value, depth int) (reflect.Value, bool) {
	t := v.Type()
	if v.IsNil() || !typeHoldsBytes(t) {
		return v, false
	}
	var cp reflect.Value
	iter := v.MapRange()
	for iter.Next() {
		e, changed := m.rewrite(iter.Value(), depth+1)
		if !changed {
			continue
		}
		if !cp.IsValid() {
			cp = reflect.MakeMapWithSize(t, v.Len())
			for _, k := range v.MapKeys() {
				cp.SetMapIndex(k, v.MapIndex(k))
			}
		}
		cp.SetMapIndex(iter.Key(), e)
	}
	return cp, cp.IsValid()
}

func (m *binaryMarshaller) rewriteStruct(v reflect.Value, depth int) (reflect.Value, bool) {
	t := v.Type()
	if !typeHoldsBytes(t) {
		return v, false
	}
	var cp reflect.Value
	for i := range t.NumField() {
		fv, ok := marshaledField(t.Field(i), v.Field(i))
		if !ok {
			continue
		}
		e, changed := m.rewrite(fv, depth+1)
		if !changed {
			continue
		}
		if !cp.IsValid() {
			cp = reflect.New(t).Elem()
			cp.Set(v)
		}
		cp.Field(i).Set(e)
	}
	return cp, cp.IsValid()
}

// marshaledField returns the value fv of struct field f and whether
// encoding/json writes it and rewrite may replace it.
func marshaledField(f reflect.StructField, fv reflect.Value) (reflect.Value, bool) {
	if !f.IsExported() && !f.Anonymous {
		return fv, false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return fv, false
	}
	if !fv.CanInterface() {
		return fv, false // an unexported embedded field cannot be copied into
	}
	if isBytes(f.Type) && fv.Len() == 0 && hasOption(tag, "omitempty") {
		return fv, false // omitted: an empty marker must not bring it back
	}
	return fv, true
}

func hasOption(tag, opt string) bool {
	_, opts, _ := strings.Cut(tag, ",")
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		if o == opt {
			return true
		}
	}
	return false
}

// appendRawArg appends the JSON of r with its placeholders renumbered after
// atts, and the attachments they reference.
func appendRawArg(b []byte, atts [][]byte, r RawArg) ([]byte, [][]byte, error) {
	if len(r.JSON) == 0 {
		return append(b, "null"...), atts, nil
	}
	if !json.Valid(r.JSON) {
		return nil, nil, fmt.Errorf("%w: RawArg is not valid JSON", ErrInvalidArgument)
	}
	if !bytes.Contains(r.JSON, placeholderKey) {
		return append(b, r.JSON...), atts, nil
	}
	seen := make(map[int]int) // index in r.Attachments -> index in atts
	b, err := rewritePlaceholders(b, r.JSON, func(n int) (int, error) {
		if n >= len(r.Attachments) {
			return 0, fmt.Errorf("%w: RawArg placeholder %d of %d attachments", ErrInvalidArgument, n, len(r.Attachments))
		}
		if k, ok := seen[n]; ok {
			return k, nil
		}
		seen[n] = len(atts)
		atts = append(atts, r.Attachments[n])
		return seen[n], nil
	})
	if err != nil {
		return nil, nil, err
	}
	return b, atts, nil
}

// phObject is the state of one JSON object while rewritePlaceholders scans it.
type phObject struct {
	start int  // offset of '{' in the output
	key   int  // 0 outside a member value, 1 after "_placeholder", 2 after "num"
	isKey bool // the next string is a key
	flag  bool // the last "_placeholder" member was true
	num   int
	numOK bool
}

// rewritePlaceholders copies the valid JSON src to dst, replacing each
// placeholder object {"_placeholder":true,"num":N} (an object whose last
// "_placeholder" member is true and whose last "num" member is an integer, as
// ResolveBinary sees them) by a placeholder numbered renumber(N). It is one pass
// over src.
func rewritePlaceholders(dst, src []byte, renumber func(int) (int, error)) ([]byte, error) {
	w := phRewriter{dst: dst, renumber: renumber}
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '"':
			j := stringEnd(src, i)
			w.str(src[i:j])
			i = j
		case c == '{' || c == '[':
			w.open(c)
			i++
		case c == '}' || c == ']':
			if err := w.close(c); err != nil {
				return nil, err
			}
			i++
		case c == ',':
			w.comma()
			i++
		case c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r':
			w.dst = append(w.dst, c)
			i++
		default: // a literal or a number
			j := literalEnd(src, i)
			w.literal(src[i:j])
			i = j
		}
	}
	return w.dst, nil
}

// phRewriter is the output of rewritePlaceholders and the objects it is in.
type phRewriter struct {
	dst      []byte
	stack    []phObject
	renumber func(int) (int, error)
}

// top returns the innermost object or array, or nil at the top level.
func (w *phRewriter) top() *phObject {
	if len(w.stack) == 0 {
		return nil
	}
	return &w.stack[len(w.stack)-1]
}

// str copies a string token: a member name, or a member's value.
func (w *phRewriter) str(tok []byte) {
	w.dst = append(w.dst, tok...)
	o := w.top()
	switch {
	case o == nil:
	case o.isKey:
		o.isKey = false
		o.key = memberKey(tok)
	case o.key != 0:
		o.setValue(tok)
	}
}

// memberKey tells the member names that make a placeholder: 1 for
// "_placeholder", 2 for "num", 0 for any other.
func memberKey(tok []byte) int {
	var name string
	if s, plain := plainString(tok); plain {
		name = s
	} else if err := json.Unmarshal(tok, &name); err != nil {
		name = ""
	}
	switch name {
	case "_placeholder":
		return 1
	case "num":
		return 2
	}
	return 0
}

// open starts an object or an array; either is a member's value that is not a
// placeholder's.
func (w *phRewriter) open(c byte) {
	if o := w.top(); o != nil && o.key != 0 {
		o.setValue(nil)
	}
	if c == '{' {
		w.stack = append(w.stack, phObject{start: len(w.dst), isKey: true})
	} else {
		// An array inside an object: its elements are not members.
		w.stack = append(w.stack, phObject{start: -1})
	}
	w.dst = append(w.dst, c)
}

// close ends an object or an array, and replaces an object that was a
// placeholder by the renumbered one.
func (w *phRewriter) close(c byte) error {
	w.dst = append(w.dst, c)
	if len(w.stack) == 0 {
		return nil
	}
	o := w.stack[len(w.stack)-1]
	w.stack = w.stack[:len(w.stack)-1]
	if c == '}' && o.flag && o.numOK && o.start >= 0 {
		k, err := w.renumber(o.num)
		if err != nil {
			return err
		}
		w.dst = appendPlaceholder(w.dst[:o.start], k)
	}
	return nil
}

// comma ends a member: a name comes next.
func (w *phRewriter) comma() {
	if o := w.top(); o != nil && o.start >= 0 {
		o.isKey = true
		o.key = 0
	}
	w.dst = append(w.dst, ',')
}

// literal copies a number, true, false or null.
func (w *phRewriter) literal(tok []byte) {
	w.dst = append(w.dst, tok...)
	if o := w.top(); o != nil && o.key != 0 {
		o.setValue(tok)
	}
}

// stringEnd returns the offset just past the string that starts at src[i],
// or len(src) when it is not closed.
func stringEnd(src []byte, i int) int {
	j := i + 1
	for j < len(src) && src[j] != '"' {
		if src[j] == '\\' {
			j++
		}
		j++
	}
	return min(j+1, len(src)) // past the closing quote
}

// literalEnd returns the offset just past the literal or number at src[i].
func literalEnd(src []byte, i int) int {
	for i < len(src) && !endsLiteral(src[i]) {
		i++
	}
	return i
}

// setValue records the value of a "_placeholder" or "num" member; tok is nil
// for an object or array.
func (o *phObject) setValue(tok []byte) {
	switch o.key {
	case 1:
		o.flag = string(tok) == "true"
	case 2:
		n, err := strconv.Atoi(string(tok))
		o.num, o.numOK = n, err == nil && n >= 0
	}
	o.key = 0
}

func endsLiteral(c byte) bool {
	switch c {
	case ',', ']', '}', ':', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}
