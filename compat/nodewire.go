package compat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf16"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/parser"
)

// opKind is what a message of the Node dialect asks for, whichever of the two
// wire forms (classic or sharded) carried it.
type opKind uint8

const (
	opNone opKind = iota
	opBroadcast
	opAckRequest // a broadcast whose recipients' acks go back to the requester
	opJoin
	opLeave
	opDisconnect
	opFetch
	opServerEmit
	opSockets  // classic SOCKETS: the ids of the matching sockets
	opAllRooms // classic ALL_ROOMS
	// answers
	opFetchResponse
	opEmitResponse
	opAckCount
	opAckReply
	opSocketsResponse
	opRoomsResponse
	opDone // classic answer to a single-socket join/leave/disconnect
)

var opNames = [...]string{"none", "broadcast", "broadcast-with-ack", "sockets-join", "sockets-leave",
	"disconnect-sockets", "fetch-sockets", "server-side-emit", "sockets", "all-rooms", "fetch-response",
	"server-side-emit-response", "client-count", "ack", "sockets-response", "rooms-response", "done"}

func (k opKind) String() string {
	if int(k) < len(opNames) {
		return opNames[k]
	}
	return "op-" + strconv.Itoa(int(k))
}

func (k opKind) isAnswer() bool { return k >= opFetchResponse }

// op is one message of the Node dialect, decoded.
type op struct {
	kind      opKind
	uid       string // the sender's adapter uid; "emitter" for @socket.io/redis-emitter, "" when absent
	nsp       string
	requestID string

	rooms, except []string // which sockets (opts.rooms, opts.except)
	flags         *value   // opts.flags as sent
	packet        *value   // {type, data, nsp}
	target        []string // rooms to join or leave
	close         bool
	sid, room     string // classic single-socket requests
	data          *value // server-side emit: [event, ...args]; answers: the argument
	sockets       *value // fetch answer
	count         int    // client count
	// from names the replying socket (ack) or node (server-side emit) when a
	// durasock node answers; Node's answers do not say.
	from string
}

// Request types of the classic form (RequestType of @socket.io/redis-adapter).
const (
	classicSockets          = 0
	classicAllRooms         = 1
	classicJoin             = 2
	classicLeave            = 3
	classicDisconnect       = 4
	classicFetch            = 5
	classicServerEmit       = 6
	classicBroadcast        = 7
	classicBroadcastCount   = 8
	classicBroadcastAckType = 9
)

// Message types of the sharded form (MessageType of socket.io-adapter's
// ClusterAdapter).
const (
	shardedInitialHeartbeat = 1
	shardedHeartbeat        = 2
	shardedBroadcast        = 3
	shardedJoin             = 4
	shardedLeave            = 5
	shardedDisconnect       = 6
	shardedFetch            = 7
	shardedFetchResponse    = 8
	shardedServerEmit       = 9
	shardedEmitResponse     = 10
	shardedClientCount      = 11
	shardedAck              = 12
	shardedClose            = 13
)

// emitterUID is the uid @socket.io/redis-emitter sends.
const emitterUID = "emitter"

var errMalformed = errors.New("compat: malformed message")

// decodeAny decodes a message that is JSON when it starts with '{' and
// msgpack otherwise, as the Node adapters do.
func decodeAny(b []byte) (*value, error) {
	if len(b) > 0 && b[0] == '{' {
		return decodeJSON(b)
	}
	return decodeMsgpack(b)
}

// encodeAny writes v as JSON, or as msgpack when it holds binary (JSON
// cannot carry it), as the sharded adapter does.
func encodeAny(v *value) ([]byte, error) {
	if v.hasBinary() {
		return encodeMsgpack(v)
	}
	return appendJSON(nil, v, nil)
}

func readOpts(o *op, opts *value) {
	o.rooms = opts.get("rooms").strings()
	o.except = opts.get("except").strings()
	o.flags = opts.get("flags")
}

// ---- classic ----

// decodeClassicBroadcast decodes what a classic adapter or the emitter
// publishes on the broadcast channels: msgpack [uid, packet, opts].
func decodeClassicBroadcast(b []byte) (*op, error) {
	v, err := decodeMsgpack(b)
	if err != nil {
		return nil, err
	}
	if v.kind != kArr || len(v.arr) < 3 || v.arr[1].kind != kObj || v.arr[2].kind != kObj {
		return nil, fmt.Errorf("%w: broadcast is not [uid, packet, opts]", errMalformed)
	}
	o := &op{kind: opBroadcast, packet: v.arr[1]}
	if v.arr[0].kind == kStr {
		o.uid = v.arr[0].str
	}
	o.nsp = o.packet.getStr("nsp")
	if o.nsp == "" {
		o.nsp = "/"
	}
	readOpts(o, v.arr[2])
	return o, nil
}

// decodeClassicRequest decodes a message of the request channel.
func decodeClassicRequest(b []byte) (*op, error) {
	v, err := decodeAny(b)
	if err != nil {
		return nil, err
	}
	if v.kind != kObj {
		return nil, fmt.Errorf("%w: request is not an object", errMalformed)
	}
	t, ok := v.getInt("type")
	if !ok {
		return nil, fmt.Errorf("%w: request without a type", errMalformed)
	}
	o := &op{uid: v.getStr("uid"), requestID: v.getStr("requestId")}
	opts := v.get("opts")
	switch t {
	case classicSockets:
		o.kind = opSockets
		o.rooms = v.get("rooms").strings()
	case classicAllRooms:
		o.kind = opAllRooms
	case classicJoin, classicLeave, classicDisconnect:
		o.kind = map[int64]opKind{classicJoin: opJoin, classicLeave: opLeave, classicDisconnect: opDisconnect}[t]
		if opts.isNull() {
			// The single-socket form of earlier versions.
			o.sid, o.room = v.getStr("sid"), v.getStr("room")
		} else {
			readOpts(o, opts)
			o.target = v.get("rooms").strings()
		}
		if c := v.get("close"); c != nil && c.kind == kBool {
			o.close = c.b
		}
	case classicFetch:
		o.kind = opFetch
		readOpts(o, opts)
	case classicServerEmit:
		o.kind = opServerEmit
		o.data = v.get("data")
	case classicBroadcast:
		o.kind = opAckRequest
		o.packet = v.get("packet")
		readOpts(o, opts)
		if o.packet == nil || o.packet.kind != kObj {
			return nil, fmt.Errorf("%w: broadcast request without a packet", errMalformed)
		}
	default:
		return nil, fmt.Errorf("%w: request type %d", errMalformed, t)
	}
	return o, nil
}

// decodeClassicResponse decodes a message of the response channels. Their
// kind follows from the request they answer; the type field is there only
// for some of them.
func decodeClassicResponse(b []byte) (*op, error) {
	v, err := decodeAny(b)
	if err != nil {
		return nil, err
	}
	if v.kind != kObj {
		return nil, fmt.Errorf("%w: response is not an object", errMalformed)
	}
	o := &op{requestID: v.getStr("requestId"), from: v.getStr("from")}
	t, _ := v.getInt("type")
	switch {
	case t == classicServerEmit:
		o.kind, o.data = opEmitResponse, v.get("data")
	case t == classicBroadcastCount:
		n, _ := v.getInt("clientCount")
		o.kind, o.count = opAckCount, int(n)
		o.target = v.get("sids").strings()
	case t == classicBroadcastAckType:
		o.kind, o.data = opAckReply, v.get("packet")
	case v.get("sockets") != nil:
		o.kind, o.sockets = opFetchResponse, v.get("sockets")
	case v.get("rooms") != nil:
		o.kind, o.target = opRoomsResponse, v.get("rooms").strings()
	default:
		o.kind = opDone
	}
	return o, nil
}

// classicRequest encodes a request or answer of the classic form: JSON, or
// msgpack when it holds binary or is a broadcast (the form Node reads).
func classicMessage(v *value, msgpackAlways bool) ([]byte, error) {
	if msgpackAlways {
		return encodeMsgpack(v)
	}
	return encodeAny(v)
}

// ---- sharded ----

// decodeSharded decodes a message of the sharded form: {uid, nsp, type, data}.
func decodeSharded(b []byte) (*op, error) {
	v, err := decodeAny(b)
	if err != nil {
		return nil, err
	}
	if v.kind != kObj {
		return nil, fmt.Errorf("%w: message is not an object", errMalformed)
	}
	t, ok := v.getInt("type")
	if !ok {
		return nil, fmt.Errorf("%w: message without a type", errMalformed)
	}
	o := &op{uid: v.getStr("uid"), nsp: v.getStr("nsp")}
	data := v.get("data")
	o.requestID = data.getStr("requestId")
	o.from = data.getStr("from")
	switch t {
	case shardedInitialHeartbeat, shardedHeartbeat, shardedClose:
		o.kind = opNone
	case shardedBroadcast:
		o.kind = opBroadcast
		if o.requestID != "" {
			o.kind = opAckRequest
		}
		o.packet = data.get("packet")
		readOpts(o, data.get("opts"))
		if o.packet == nil || o.packet.kind != kObj {
			return nil, fmt.Errorf("%w: broadcast without a packet", errMalformed)
		}
	case shardedJoin, shardedLeave:
		o.kind = opJoin
		if t == shardedLeave {
			o.kind = opLeave
		}
		readOpts(o, data.get("opts"))
		o.target = data.get("rooms").strings()
	case shardedDisconnect:
		o.kind = opDisconnect
		readOpts(o, data.get("opts"))
		if c := data.get("close"); c != nil && c.kind == kBool {
			o.close = c.b
		}
	case shardedFetch:
		o.kind = opFetch
		readOpts(o, data.get("opts"))
	case shardedFetchResponse:
		o.kind, o.sockets = opFetchResponse, data.get("sockets")
	case shardedServerEmit:
		o.kind, o.data = opServerEmit, data.get("packet")
	case shardedEmitResponse:
		o.kind, o.data = opEmitResponse, data.get("packet")
	case shardedClientCount:
		n, _ := data.getInt("clientCount")
		o.kind, o.count = opAckCount, int(n)
		o.target = data.get("sids").strings()
	case shardedAck:
		o.kind, o.data = opAckReply, data.get("packet")
	default:
		return nil, fmt.Errorf("%w: message type %d", errMalformed, t)
	}
	return o, nil
}

func shardedMessage(uid, nsp string, t int, data *value) *value {
	m := object().set("uid", str(uid)).set("nsp", str(nsp)).set("type", integer(int64(t)))
	if data != nil {
		m.set("data", data)
	}
	return m
}

// ---- conversions between the Node forms and durasock's ----

// optsValue is the opts object of a broadcast: {rooms, except, flags}.
func optsValue(o adapter.Options, timeout time.Duration) *value {
	flags := object()
	if o.Volatile {
		flags.set("volatile", boolean(true))
	}
	if o.NoCompress {
		flags.set("compress", boolean(false)) // Node compresses unless compress is false
	}
	if timeout > 0 {
		flags.set("timeout", integer(timeout.Milliseconds()))
	}
	return object().set("rooms", strArray(o.Rooms)).set("except", strArray(o.Except)).set("flags", flags)
}

// selectorValue is the opts object of a socket operation: {rooms, except}.
func selectorValue(o adapter.Options) *value {
	return object().set("rooms", strArray(o.Rooms)).set("except", strArray(o.Except))
}

func strArray(ss []string) *value {
	v := &value{kind: kArr, arr: make([]*value, len(ss))}
	for i, s := range ss {
		v.arr[i] = str(s)
	}
	return v
}

// options is the selection of o as durasock's adapter.Options.
func (o *op) options() adapter.Options {
	opts := adapter.Options{Rooms: o.rooms, Except: o.except}
	if f := o.flags.get("volatile"); f != nil && f.kind == kBool && f.b {
		opts.Volatile = true
	}
	if f := o.flags.get("compress"); f != nil && f.kind == kBool && !f.b {
		opts.NoCompress = true
	}
	return opts
}

// timeout is the ack timeout a broadcast request carries (flags.timeout), or 0.
func (o *op) timeout() time.Duration {
	if ms, ok := o.flags.getInt("timeout"); ok && ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	return 0
}

// toPacket turns a Node packet {type, data, nsp} into an EVENT (or
// BINARY_EVENT) of namespace nsp. Binary values become attachments.
func toPacket(pv *value, nsp string) (*parser.Packet, error) {
	data := pv.get("data")
	if data == nil || data.kind != kArr || len(data.arr) == 0 || data.arr[0].kind != kStr {
		return nil, fmt.Errorf("%w: packet data is not [event, ...args]", errMalformed)
	}
	t, _ := pv.getInt("type")
	if t != int64(parser.Event) && t != int64(parser.BinaryEvent) {
		return nil, fmt.Errorf("%w: packet type %d is not an event", errMalformed, t)
	}
	var atts [][]byte
	raw, err := rawJSON(data, &atts)
	if err != nil {
		return nil, err
	}
	p := &parser.Packet{Type: parser.Event, Namespace: nsp, Data: raw}
	if len(atts) > 0 {
		p.Type, p.Attachments = parser.BinaryEvent, atts
	}
	return p, nil
}

// packetValue is p as Node holds a packet to broadcast: type EVENT, binary
// inline (the Socket.IO encoder of each Node node splits it out again).
func packetValue(p *parser.Packet, nsp string) (*value, error) {
	data, err := fromRaw(p.Data, p.Attachments)
	if err != nil {
		return nil, err
	}
	return object().set("type", integer(int64(parser.Event))).set("data", data).set("nsp", str(nsp)), nil
}

// eventArgs splits [event, ...args] into durasock's form; binary args keep
// their bytes as base64 strings, the JSON form of a Buffer's bytes being
// lossy in JavaScript too.
func eventArgs(v *value) (string, []json.RawMessage, error) {
	if v == nil || v.kind != kArr || len(v.arr) == 0 || v.arr[0].kind != kStr {
		return "", nil, fmt.Errorf("%w: server-side emit data is not [event, ...args]", errMalformed)
	}
	args := make([]json.RawMessage, 0, len(v.arr)-1)
	for _, a := range v.arr[1:] {
		r, err := plainJSON(a)
		if err != nil {
			return "", nil, err
		}
		args = append(args, r)
	}
	return v.arr[0].str, args, nil
}

// plainJSON writes v as JSON with binary as base64 strings (what
// encoding/json does with []byte).
func plainJSON(v *value) (json.RawMessage, error) {
	var atts [][]byte
	raw, err := rawJSON(v, &atts)
	if err != nil || len(atts) == 0 {
		return raw, err
	}
	// Placeholders back to base64 strings.
	b64 := make([][]byte, len(atts))
	for i, a := range atts {
		q, err := json.Marshal(a)
		if err != nil {
			return nil, err
		}
		b64[i] = q
	}
	tree, err := decodeJSON(raw)
	if err != nil {
		return nil, err
	}
	return appendJSON(nil, replacePlaceholders(tree, b64), nil)
}

func replacePlaceholders(v *value, quoted [][]byte) *value {
	switch v.kind {
	case kArr:
		for i, x := range v.arr {
			v.arr[i] = replacePlaceholders(x, quoted)
		}
	case kObj:
		if ph := v.get("_placeholder"); ph != nil && ph.kind == kBool && ph.b {
			if n, ok := v.getInt("num"); ok && n >= 0 && n < int64(len(quoted)) {
				var s string
				if json.Unmarshal(quoted[n], &s) == nil {
					return str(s)
				}
			}
		}
		for i, x := range v.vals {
			v.vals[i] = replacePlaceholders(x, quoted)
		}
	}
	return v
}

// argsValue is [event, ...args] from durasock's form.
func argsValue(event string, args []json.RawMessage) (*value, error) {
	v := array(str(event))
	for _, a := range args {
		x, err := fromRaw(a, nil)
		if err != nil {
			return nil, err
		}
		v.arr = append(v.arr, x)
	}
	return v, nil
}

// firstArg is the one argument Node carries in an answer (an ack or a
// server-side emit reply): the first, or null.
func firstArg(args []json.RawMessage) (*value, error) {
	if len(args) == 0 {
		return null(), nil
	}
	return fromRaw(args[0], nil)
}

// jsLength is the length JavaScript gives s (UTF-16 code units).
func jsLength(s string) int {
	n := 0
	for _, r := range s {
		n += max(utf16.RuneLen(r), 1)
	}
	return n
}

// looksLikeASocketID is the sharded adapter's test for a room that is a
// socket's own (20 characters): broadcasts to such a room go to the main
// channel, not to a channel of the room.
func looksLikeASocketID(room string) bool { return jsLength(room) == 20 }

// socketValue describes a socket as a Node node does in a fetch answer:
// {id, handshake, rooms, data}, the handshake in Node's form.
func socketValue(in adapter.SocketInfo) (*value, error) {
	h := in.Handshake
	headers := object()
	for _, k := range sortedKeys(h.Headers) {
		vs := h.Headers[k]
		name := lower(k)
		if name == "set-cookie" {
			headers.set(name, strArray(vs))
			continue
		}
		headers.set(name, str(joinComma(vs)))
	}
	query := object()
	for _, k := range sortedKeys(h.Query) {
		vs := h.Query[k]
		if len(vs) == 1 {
			query.set(k, str(vs[0]))
		} else {
			query.set(k, strArray(vs))
		}
	}
	auth, err := fromRaw(h.Auth, nil)
	if err != nil {
		return nil, fmt.Errorf("compat: handshake auth of %s: %w", in.ID, err)
	}
	if auth.isNull() {
		auth = object()
	}
	hv := object().set("headers", headers).
		set("time", str(jsDateString(h.Time))).
		set("address", str(h.Address)).
		set("xdomain", boolean(false)).
		set("secure", boolean(h.Secure)).
		set("issued", integer(h.Time.UnixMilli())).
		set("url", str(h.URL)).
		set("query", query).
		set("auth", auth)
	v := object().set("id", str(in.ID)).set("handshake", hv).set("rooms", strArray(in.Rooms))
	if len(in.Data) > 0 {
		data, err := fromRaw(in.Data, nil)
		if err != nil {
			return nil, fmt.Errorf("compat: data of %s: %w", in.ID, err)
		}
		v.set("data", data)
	}
	return v, nil
}

// socketInfo reads a socket of a fetch answer.
func socketInfo(v *value, node string) (adapter.SocketInfo, error) {
	if v == nil || v.kind != kObj || v.getStr("id") == "" {
		return adapter.SocketInfo{}, fmt.Errorf("%w: socket without an id", errMalformed)
	}
	in := adapter.SocketInfo{ID: v.getStr("id"), Node: node, Rooms: v.get("rooms").strings()}
	if d := v.get("data"); d != nil {
		raw, err := plainJSON(d)
		if err != nil {
			return in, err
		}
		in.Data = raw
	}
	h := v.get("handshake")
	in.Handshake.Address = h.getStr("address")
	in.Handshake.URL = h.getStr("url")
	if s := h.get("secure"); s != nil && s.kind == kBool {
		in.Handshake.Secure = s.b
	}
	if ms, ok := h.getInt("issued"); ok {
		in.Handshake.Time = time.UnixMilli(ms).UTC()
	}
	in.Handshake.Headers = stringLists(h.get("headers"), true)
	in.Handshake.Query = stringLists(h.get("query"), false)
	if a := h.get("auth"); a != nil {
		raw, err := plainJSON(a)
		if err != nil {
			return in, err
		}
		in.Handshake.Auth = raw
	}
	return in, nil
}

// stringLists reads Node's headers or query object: string values, or arrays
// of strings.
func stringLists(v *value, header bool) map[string][]string {
	if v == nil || v.kind != kObj {
		return nil
	}
	out := make(map[string][]string, len(v.keys))
	for i, k := range v.keys {
		if header {
			k = canonicalHeader(k)
		}
		switch x := v.vals[i]; x.kind {
		case kStr:
			out[k] = append(out[k], x.str)
		case kNum:
			out[k] = append(out[k], x.num)
		case kArr:
			out[k] = append(out[k], x.strings()...)
		}
	}
	return out
}

// jsDateString is Date.prototype.toString in UTC, as Node writes handshake.time.
func jsDateString(t time.Time) string {
	return t.UTC().Format("Mon Jan 02 2006 15:04:05") + " GMT+0000 (Coordinated Universal Time)"
}
