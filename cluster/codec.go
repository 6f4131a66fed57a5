package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/durasock/durasock/adapter"
	"github.com/durasock/durasock/internal/jsonx"
	"github.com/durasock/durasock/parser"
)

// Cluster messages are bus payloads in a compact binary framing (docs/PROTOCOL.md,
// "Cluster messages"):
//
//	message = version:byte kind:byte body
//
// Integers are unsigned varints, strings and byte strings a varint length followed
// by the bytes, lists a varint count followed by the items. JSON arguments and
// binary attachments are carried byte for byte.

// codecVersion is the version byte of every cluster message.
const codecVersion = 1

// kind is the type of a cluster message.
type kind byte

// Message kinds. The numbers are part of the wire format.
const (
	kindBroadcast       kind = 1  // reliable: packet to matching sockets
	kindAddSockets      kind = 2  // reliable: matching sockets join rooms
	kindDelSockets      kind = 3  // reliable: matching sockets leave rooms
	kindDisconnect      kind = 4  // reliable: matching sockets disconnect
	kindServerEmit      kind = 5  // reliable: server-side emit without replies
	kindFetchRequest    kind = 6  // reliable: describe matching sockets
	kindFetchResponse   kind = 7  // direct: sockets of one node
	kindEmitRequest     kind = 8  // reliable: server-side emit that wants replies
	kindEmitResponse    kind = 9  // direct: one node's reply
	kindAckRequest      kind = 10 // reliable: broadcast with acks
	kindAckCount        kind = 11 // direct: how many sockets of a node got it
	kindAckReply        kind = 12 // direct: one socket's reply
	kindHeartbeat       kind = 13 // direct: node is alive
	kindGoodbye         kind = 14 // direct: node leaves
	kindUnknownNsp      kind = 15 // direct: the namespace of a request is not served here
	kindApplied         kind = 16 // direct: a reliable socket operation was applied
	kindInterest        kind = 17 // direct: the rooms of a node's sockets (interest.go)
	kindInterestApplied kind = 18 // direct: the interest version a node applied of the addressee (interest.go)
	kindPeers           kind = 19 // direct: the interests a node holds of the other live nodes (peers.go)
	kindCut             kind = 20 // direct: a restoring node's interest, asking for each node's cut (handoff.go)
	kindCutAnswer       kind = 21 // direct: one node's cut, to the restoring node (handoff.go)
	kindMax                  = kindCutAnswer
	flagVolatile        byte = 1 << 0
	flagNoCompress      byte = 1 << 1
	flagCloseConn       byte = 1 << 2
	flagHello           byte = 1 << 3 // heartbeat: answer with a heartbeat at once
	flagRecoverable     byte = 1 << 4 // broadcast: clients get a recovery offset (recovery.go)
	flagAnswer          byte = 1 << 5 // interest: answer with interest-applied (AwaitRouting)
	flagFlushed         byte = 1 << 6 // cut-answer: the outbox reached the broker up to the cut (handoff.go)
	knownFlags               = flagVolatile | flagNoCompress | flagCloseConn | flagHello | flagRecoverable | flagAnswer | flagFlushed
	maxCodecListEntries      = 1 << 20
)

func (k kind) String() string {
	names := [...]string{"invalid", "broadcast", "add-sockets", "del-sockets", "disconnect",
		"server-emit", "fetch-request", "fetch-response", "emit-request", "emit-response",
		"ack-request", "ack-count", "ack-reply", "heartbeat", "goodbye", "unknown-namespace", "applied",
		"interest", "interest-applied", "peers", "cut", "cut-answer"}
	if int(k) < len(names) {
		return names[k]
	}
	return fmt.Sprintf("kind(%d)", byte(k))
}

// Codec errors. Every decoding error wraps errMalformed.
var (
	// errMalformed is wrapped by every error of decoding a cluster message.
	errMalformed = errors.New("cluster: malformed message")
	// errVersion is returned for a message of an unsupported codec version.
	errVersion = fmt.Errorf("%w: unsupported version", errMalformed)
	// errKind is returned for a message of an unknown kind.
	errKind = fmt.Errorf("%w: unknown kind", errMalformed)
)

// message is a decoded cluster message. Which fields are set depends on kind; the
// codec writes and reads exactly the fields of the kind.
type message struct {
	kind  kind
	nsp   string
	reqID uint64
	flags byte

	// selector (broadcast, add/del/disconnect, fetch, ack request)
	rooms  []string
	except []string

	// packet (broadcast, ack request)
	ptype       parser.Type
	data        []byte
	attachments [][]byte

	target   []string // rooms to join or leave
	deadline uint64   // requests: the requester's deadline, Unix milliseconds

	event string   // server-side emit
	args  [][]byte // server-side emit, emit response, ack reply

	sockets []byte   // fetch response: JSON array of adapter.SocketInfo
	count   uint64   // ack count: how many sockets got the packet
	ids     []string // ack count: their ids, as far as known
	sid     string   // ack reply: the replying socket

	version  uint64        // interest: the announcement's version; interest-applied: the version applied
	instance uint64        // interest-applied: the bus instance of the addressee whose version it is (0 from a node of an earlier version)
	interest []nspInterest // interest, cut: one entry per namespace of the node
	peers    []peerReport  // peers: one entry per other live node whose interest the sender holds

	// cut: the inbox partition the restored client's offset names;
	// cut-answer: the answering node's last sequence numbers on that
	// partition and on the restoring node's inbox (instance: the restoring
	// node's instance).
	cutPart uint64
	cutOld  uint64
	cutNew  uint64

	// Where a reliable-plane message came from (set by receive, not encoded):
	// the bus position, origin instance and seq, and the partition.
	pos  string
	inst uint64
	seq  uint64
	part int
}

func (m *message) options() adapter.Options {
	return adapter.Options{
		Rooms:       m.rooms,
		Except:      m.except,
		Volatile:    m.flags&flagVolatile != 0,
		NoCompress:  m.flags&flagNoCompress != 0,
		Recoverable: m.flags&flagRecoverable != 0,
	}
}

func selectorFlags(o adapter.Options) byte {
	var f byte
	if o.Volatile {
		f |= flagVolatile
	}
	if o.NoCompress {
		f |= flagNoCompress
	}
	if o.Recoverable && !o.Volatile {
		f |= flagRecoverable
	}
	return f
}

func (m *message) hasSelector() bool {
	switch m.kind {
	case kindBroadcast, kindAddSockets, kindDelSockets, kindDisconnect, kindFetchRequest, kindAckRequest:
		return true
	}
	return false
}

// confirmable kinds are reliable socket operations; a request id other than 0
// asks every node to confirm that it applied the operation.
func (m *message) confirmable() bool { return m.kind.confirmable() }

func (k kind) confirmable() bool {
	return k == kindAddSockets || k == kindDelSockets || k == kindDisconnect
}

func (m *message) hasPacket() bool { return m.kind == kindBroadcast || m.kind == kindAckRequest }

// isRequest reports the kinds that ask every node for an answer. They travel on
// the reliable plane, in order with the origin's other messages of the
// namespace, and carry the requester's deadline.
func (k kind) isRequest() bool {
	return k == kindFetchRequest || k == kindEmitRequest || k == kindAckRequest
}

func (m *message) hasReqID() bool {
	switch m.kind {
	case kindAddSockets, kindDelSockets, kindDisconnect, kindApplied, kindFetchRequest, kindFetchResponse, kindEmitRequest, kindEmitResponse,
		kindAckRequest, kindAckCount, kindAckReply, kindUnknownNsp, kindCut, kindCutAnswer:
		return true
	}
	return false
}

// encode appends the wire form of m to b.
func (m *message) encode(b []byte) []byte {
	b = append(b, codecVersion, byte(m.kind), m.flags)
	b = appendString(b, m.nsp)
	if m.hasReqID() {
		b = binary.AppendUvarint(b, m.reqID)
	}
	if m.hasSelector() {
		b = appendStrings(b, m.rooms)
		b = appendStrings(b, m.except)
	}
	if m.hasPacket() {
		b = append(b, byte(m.ptype))
		b = appendBytes(b, m.data)
		b = binary.AppendUvarint(b, uint64(len(m.attachments)))
		for _, a := range m.attachments {
			b = appendBytes(b, a)
		}
	}
	switch m.kind {
	case kindAddSockets, kindDelSockets:
		b = appendStrings(b, m.target)
	case kindServerEmit, kindEmitRequest:
		b = appendString(b, m.event)
		b = appendByteList(b, m.args)
	case kindEmitResponse:
		b = appendByteList(b, m.args)
	case kindFetchResponse:
		b = appendBytes(b, m.sockets)
	case kindAckCount:
		b = binary.AppendUvarint(b, m.count)
		b = appendStrings(b, m.ids)
	case kindAckReply:
		b = appendString(b, m.sid)
		b = appendByteList(b, m.args)
	case kindInterestApplied:
		b = binary.AppendUvarint(b, m.version)
		b = binary.AppendUvarint(b, m.instance)
	case kindInterest, kindCut:
		b = binary.AppendUvarint(b, m.version)
		b = binary.AppendUvarint(b, uint64(len(m.interest)))
		for i := range m.interest {
			b = m.interest[i].encode(b)
		}
		if m.kind == kindCut {
			b = binary.AppendUvarint(b, m.cutPart)
		}
	case kindCutAnswer:
		b = binary.AppendUvarint(b, m.instance)
		b = binary.AppendUvarint(b, m.cutOld)
		b = binary.AppendUvarint(b, m.cutNew)
	case kindPeers:
		b = binary.AppendUvarint(b, uint64(len(m.peers)))
		for i := range m.peers {
			b = m.peers[i].encode(b)
		}
	}
	if m.kind.isRequest() {
		b = binary.AppendUvarint(b, m.deadline)
	}
	return b
}

func (m *message) size() int {
	n := 3 + 10 + len(m.nsp) + 10 + 10
	for _, s := range m.rooms {
		n += len(s) + 5
	}
	for _, s := range m.except {
		n += len(s) + 5
	}
	n += len(m.data) + 20
	for _, a := range m.attachments {
		n += len(a) + 5
	}
	for _, s := range m.target {
		n += len(s) + 5
	}
	n += len(m.event) + 10
	for _, a := range m.args {
		n += len(a) + 5
	}
	n += len(m.sockets) + 5
	for _, s := range m.ids {
		n += len(s) + 5
	}
	for i := range m.interest {
		n += len(m.interest[i].nsp) + 5 + 1 + 2 + interestBuckets/8 + 10
	}
	for i := range m.peers {
		n += len(m.peers[i].node) + 5 + 10 + 10 + 5
		for j := range m.peers[i].interest {
			n += len(m.peers[i].interest[j].nsp) + 5 + 1 + 2 + interestBuckets/8 + 10
		}
	}
	return n + len(m.sid) + 5 + 10 + 5 + 30
}

func (m *message) marshal() []byte { return m.encode(make([]byte, 0, m.size())) }

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendByteList(b []byte, bs [][]byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(bs)))
	for _, s := range bs {
		b = appendBytes(b, s)
	}
	return b
}

// decodeMessage parses one cluster message. Byte strings of the result alias buf.
// It never panics; every error wraps errMalformed.
func decodeMessage(buf []byte) (*message, error) {
	r := reader{b: buf}
	if len(buf) < 3 {
		return nil, fmt.Errorf("%w: %d bytes", errMalformed, len(buf))
	}
	if buf[0] != codecVersion {
		return nil, fmt.Errorf("%w %d", errVersion, buf[0])
	}
	m := &message{kind: kind(buf[1]), flags: buf[2]}
	if m.kind == 0 || m.kind > kindMax {
		return nil, fmt.Errorf("%w %d", errKind, buf[1])
	}
	if m.flags&^knownFlags != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", errMalformed, m.flags)
	}
	r.off = 3
	m.nsp = r.string()
	if m.hasReqID() {
		m.reqID = r.uvarint()
	}
	if m.hasSelector() {
		m.rooms = r.strings()
		m.except = r.strings()
	}
	if m.hasPacket() {
		m.ptype = parser.Type(r.byte())
		m.data = r.bytes()
		n := r.count()
		if n > 0 {
			m.attachments = make([][]byte, n)
			for i := range m.attachments {
				m.attachments[i] = r.bytes()
			}
		}
	}
	switch m.kind {
	case kindAddSockets, kindDelSockets:
		m.target = r.strings()
	case kindServerEmit, kindEmitRequest:
		m.event = r.string()
		m.args = r.byteList()
	case kindEmitResponse:
		m.args = r.byteList()
	case kindFetchResponse:
		m.sockets = r.bytes()
	case kindAckCount:
		m.count = r.uvarint()
		m.ids = r.strings()
	case kindAckReply:
		m.sid = r.string()
		m.args = r.byteList()
	case kindInterestApplied:
		m.version = r.uvarint()
		if r.off < len(buf) {
			// Absent from a node of an earlier version.
			m.instance = r.uvarint()
		}
	case kindInterest, kindCut:
		m.version = r.uvarint()
		if n := r.count(); n > maxInterestNamespaces {
			r.fail(errInterestCount)
		} else if n > 0 {
			// Appended as they are read: a count is bounded by the bytes
			// left, not by what an entry takes in memory.
			m.interest = make([]nspInterest, 0, min(n, 16))
			for range n {
				var e nspInterest
				e.decode(&r)
				if r.err != nil {
					break
				}
				m.interest = append(m.interest, e)
			}
		}
		if m.kind == kindCut {
			m.cutPart = r.uvarint()
		}
	case kindCutAnswer:
		m.instance = r.uvarint()
		m.cutOld = r.uvarint()
		m.cutNew = r.uvarint()
	case kindPeers:
		m.peers = decodePeers(&r)
	}
	if m.kind.isRequest() && r.off < len(buf) {
		// Absent in a request of a node of an earlier version (sent on the
		// direct plane without a deadline): served with this node's timeout.
		m.deadline = r.uvarint()
	}
	if r.err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errMalformed, m.kind, r.err)
	}
	if r.off != len(buf) {
		return nil, fmt.Errorf("%w: %s: %d trailing bytes", errMalformed, m.kind, len(buf)-r.off)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errMalformed, m.kind, err)
	}
	return m, nil
}

// validate checks what the framing cannot: a packet that sockets could be sent.
func (m *message) validate() error {
	if m.hasPacket() {
		switch m.ptype {
		case parser.Event, parser.BinaryEvent:
		default:
			return fmt.Errorf("packet type %d is not an event", m.ptype)
		}
		if len(m.data) == 0 || jsonx.FirstByte(m.data) != '[' {
			return errors.New("event data is not a JSON array")
		}
	}
	if m.hasReqID() && m.reqID == 0 && !m.confirmable() {
		return errors.New("request id 0")
	}
	return nil
}

var (
	errShort = errors.New("truncated")
	errCount = errors.New("list longer than the message")
)

// reader reads the framing primitives; after the first error every read returns
// a zero value and err keeps the first error.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.off = len(r.b)
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail(errShort)
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail(errShort)
		return 0
	}
	r.off += n
	return v
}

// count reads a list length; every item takes at least one byte, so a count above
// the bytes left is malformed (and cannot make us allocate much).
func (r *reader) count() int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)-r.off) || n > maxCodecListEntries {
		r.fail(errCount)
		return 0
	}
	return int(n)
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)-r.off) {
		r.fail(errShort)
		return nil
	}
	s := r.b[r.off : r.off+int(n) : r.off+int(n)]
	r.off += int(n)
	return s
}

func (r *reader) string() string { return string(r.bytes()) }

func (r *reader) strings() []string {
	n := r.count()
	if n == 0 {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = r.string()
	}
	return ss
}

func (r *reader) byteList() [][]byte {
	n := r.count()
	if n == 0 {
		return nil
	}
	bs := make([][]byte, n)
	for i := range bs {
		bs[i] = r.bytes()
	}
	return bs
}
