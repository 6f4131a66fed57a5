package bus

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Envelope wire format, version 1 (copied to docs/PROTOCOL.md, "Envelope").
//
// Every frame of both planes is one envelope. Integers are big-endian; a uvarint is
// encoding/binary's unsigned varint (LEB128) in its shortest form.
//
//	offset      size      field
//	0           1         version   = 1
//	1           1         kind      1 data (Publish), 2 probe (liveness), 3 direct (Send),
//	                                4 data published again (republished)
//	2           1         n         length of origin, 1..255
//	3           n         origin    node id of the publisher (UTF-8)
//	3+n         8         instance  random per process start of the origin
//	11+n        1..3      partition uvarint, 0..65535 (0 for direct)
//	p           8         seq       uint64; data: 1, 2, 3, ... per (origin, instance,
//	                                partition); probe: the probe round (0: an
//	                                announcement of a node that does not
//	                                receive; 2^64-1: the final one, at Close);
//	                                direct: 0
//	p+8         8         time      int64, publish time in Unix nanoseconds
//	p+16        rest      payload   data, direct: opaque bytes; probe: empty,
//	                                8 bytes (last) or 16 bytes (last, first;
//	                                below)
//
// The smallest valid envelope is 29 bytes. A decoder rejects, with an error and
// without panicking: an empty or short frame, a version other than 1, an unknown
// kind, an origin length of 0, a partition above 65535 or not in shortest form, and
// a direct frame with a partition or seq, and a probe whose payload is not
// empty, 8 or 16 bytes.
//
// The payload of a probe is its announcement: last, a uint64, the highest seq of
// the probe's partition such that the writer's outbox has resolved every seq up
// to it: the broker acknowledged it, or a bound dropped it (reported by the
// writer as a drop). The writer reads it before it publishes the probe, so every
// data frame up to last precedes the probe in the partition, and a receiver that
// reads the probe with a high-water mark below last knows that the rest was lost.
// An empty probe payload (writers before this field) announces nothing.
//
// A probe on an inbox partition (see Inboxer) whose writer published there
// carries a second uint64 after last: first, the publish time (Unix
// nanoseconds, the writer's clock) of the writer's first message (seq 1) on
// that partition. A receiver that has no high-water mark for the stream yet,
// or one taken from whatever it saw first, and that has been reading the
// partition since well before first, knows that the stream starts at seq 1
// and reports what it missed of it (docs/RELIABILITY.md, "Baseline"). A
// decoder that knows only the 8-byte form rejects the 16-byte one; inboxes
// are new with it.
//
// Kind 4 is a data envelope that its writer publishes again, unchanged but for
// the kind, after its connection to the broker broke (the broker may have lost
// it): receivers treat it as data (their high-water mark drops it when they
// have it); a reader of the history knows the broker may hold it twice.
// Receivers drop a rejected frame, count it in durasock_bus_decode_errors_total and
// log it (rate-limited).
//
// Seq is fixed-width so that the publisher can encode a frame before it takes the
// outbox lock and write the sequence in place under it. Instance separates the
// sequence spaces of two runs of a node with a configured, stable node id: a
// receiver that sees a new instance of an origin takes its next message as the new
// baseline instead of dropping it as a duplicate.

// envelopeVersion is the version byte of envelopes this package writes.
const envelopeVersion = 1

// maxPartition is the largest partition number an envelope can carry: a
// transport has at most maxPartition+1 partitions.
const maxPartition = 1<<16 - 1

// envelopeMinLen is the length of an envelope with a one-byte origin, a one-byte
// partition and no payload.
const envelopeMinLen = 3 + 1 + 8 + 1 + 8 + 8

// errBadEnvelope is wrapped by every error of decodeEnvelope.
var errBadEnvelope = errors.New("bus: bad envelope")

// Kind is the kind of an envelope.
type frameKind uint8

// Envelope kinds.
const (
	// kindData is a reliable-plane message of Publish.
	kindData frameKind = 1
	// kindProbe is a liveness probe a node publishes and expects back.
	kindProbe frameKind = 2
	// kindDirect is a best-effort message of Send.
	kindDirect frameKind = 3
	// kindRepublished is, on the wire only, a data envelope published again
	// after the writer's connection broke (RetainConfig): decoded as kindData
	// with Republished set.
	kindRepublished frameKind = 4
)

func (k frameKind) String() string {
	switch k {
	case kindData:
		return "data"
	case kindProbe:
		return "probe"
	case kindDirect:
		return "direct"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// envelope is a decoded frame.
type envelope struct {
	Kind      frameKind
	Origin    string
	Instance  uint64
	Partition int
	Seq       uint64
	// Time is the publish time in Unix nanoseconds.
	Time    int64
	Payload []byte
	// Republished marks a data envelope written again after its writer's
	// connection broke (wire kind 4): the broker may hold it twice.
	Republished bool
}

func uvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// appendEnvelope appends the encoding of e to b.
func appendEnvelope(b []byte, e *envelope) ([]byte, error) {
	if err := e.validate(); err != nil {
		return b, err
	}
	kind := e.Kind
	if kind == kindData && e.Republished {
		kind = kindRepublished
	}
	b = append(b, envelopeVersion, byte(kind), byte(len(e.Origin)))
	b = append(b, e.Origin...)
	b = binary.BigEndian.AppendUint64(b, e.Instance)
	b = binary.AppendUvarint(b, uint64(e.Partition))
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time))
	return append(b, e.Payload...), nil
}

func (e *envelope) validate() error {
	switch {
	case len(e.Origin) == 0 || len(e.Origin) > 255:
		return fmt.Errorf("%w: origin length %d not in 1..255", errBadEnvelope, len(e.Origin))
	case e.Partition < 0 || e.Partition > maxPartition:
		return fmt.Errorf("%w: partition %d not in 0..%d", errBadEnvelope, e.Partition, maxPartition)
	}
	switch e.Kind {
	case kindData:
		if e.Seq == 0 {
			return fmt.Errorf("%w: data envelope with seq 0", errBadEnvelope)
		}
	case kindProbe:
		if n := len(e.Payload); n != 0 && n != probeLastLen && n != probeFirstLen && n != probeLiveLen {
			return fmt.Errorf("%w: probe envelope with a payload of %d bytes, want 0, %d, %d or %d", errBadEnvelope, n, probeLastLen, probeFirstLen, probeLiveLen)
		}
	case kindDirect:
		if e.Partition != 0 || e.Seq != 0 {
			return fmt.Errorf("%w: direct envelope with partition or seq", errBadEnvelope)
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", errBadEnvelope, uint8(e.Kind))
	}
	return nil
}

// decodeEnvelope decodes an envelope, with an optional interning of the origin (a
// receiver sees few origins and need not allocate one string per frame).
func decodeEnvelope(data []byte, intern func([]byte) string) (envelope, error) {
	var e envelope
	if len(data) < envelopeMinLen {
		return e, fmt.Errorf("%w: %d bytes, shorter than %d", errBadEnvelope, len(data), envelopeMinLen)
	}
	if data[0] != envelopeVersion {
		return e, fmt.Errorf("%w: version %d, want %d", errBadEnvelope, data[0], envelopeVersion)
	}
	e.Kind = frameKind(data[1])
	if e.Kind == kindRepublished {
		e.Kind, e.Republished = kindData, true
	}
	n := int(data[2])
	if n == 0 {
		return e, fmt.Errorf("%w: empty origin", errBadEnvelope)
	}
	rest := data[3:]
	if len(rest) < n+8 {
		return e, fmt.Errorf("%w: truncated origin", errBadEnvelope)
	}
	if intern != nil {
		e.Origin = intern(rest[:n])
	} else {
		e.Origin = string(rest[:n])
	}
	e.Instance = binary.BigEndian.Uint64(rest[n:])
	rest = rest[n+8:]
	p, k := binary.Uvarint(rest)
	if k <= 0 || k != uvarintLen(p) || p > maxPartition {
		return e, fmt.Errorf("%w: bad partition", errBadEnvelope)
	}
	e.Partition = int(p)
	rest = rest[k:]
	if len(rest) < 16 {
		return e, fmt.Errorf("%w: truncated header", errBadEnvelope)
	}
	e.Seq = binary.BigEndian.Uint64(rest)
	e.Time = int64(binary.BigEndian.Uint64(rest[8:]))
	if len(rest) > 16 {
		e.Payload = rest[16:]
	}
	if err := e.validate(); err != nil {
		return envelope{}, err
	}
	return e, nil
}

// probeLastLen is the length of a probe's payload that announces last, a
// uint64; probeFirstLen that of one that also carries first, an int64;
// probeLiveLen that of one that also carries live, an int64 duration.
const (
	probeLastLen  = 8
	probeFirstLen = 16
	probeLiveLen  = 24
)

// probeLast returns the announcement of a probe envelope: the last seq of its
// partition that its writer had resolved (acknowledged by the broker or dropped
// by a bound) when it wrote the probe. ok is false for any other envelope and for
// a probe without an announcement.
func (e *envelope) probeLast() (last uint64, ok bool) {
	if e.Kind != kindProbe || len(e.Payload) < probeLastLen {
		return 0, false
	}
	return binary.BigEndian.Uint64(e.Payload), true
}

// probeFirst returns the publish time (Unix nanoseconds) of the writer's
// first message on the probe's partition, which a probe on an inbox
// partition carries after last; ok is false for any other envelope.
func (e *envelope) probeFirst() (first int64, ok bool) {
	if e.Kind != kindProbe || len(e.Payload) < probeFirstLen {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(e.Payload[probeLastLen:])), true
}

// probeLive returns how long after this announcement its writer promises to
// announce on the partition again every ProbeInterval (it wrote there
// recently), which an announcement of a bus with inboxes carries after
// first; 0 for any other envelope. A receiver that hears nothing more of the
// writer within its liveness window, while that promise held, reports it
// gone (receiver.checkGone).
func (e *envelope) probeLive() time.Duration {
	if e.Kind != kindProbe || len(e.Payload) != probeLiveLen {
		return 0
	}
	return time.Duration(binary.BigEndian.Uint64(e.Payload[probeFirstLen:]))
}

// probePayload returns the payload of a probe that announces last.
func probePayload(last uint64) []byte { return binary.BigEndian.AppendUint64(nil, last) }

// probePayloadFirst returns the payload of a probe that announces last and
// the time of the first message, first.
func probePayloadFirst(last uint64, first int64) []byte {
	return binary.BigEndian.AppendUint64(probePayload(last), uint64(first))
}

// publishTime returns Time as a time.Time.
func (e *envelope) publishTime() time.Time { return time.Unix(0, e.Time) }
