package parser

import "strconv"

// Encode writes p in the compact wire format
//
//	<type>[<attachments>-][<namespace>,][<ack id>]<data>
//
// The namespace is omitted when it is "/" (or empty), and Data is copied byte for
// byte. An EVENT or ACK that carries attachments is sent as BINARY_EVENT or
// BINARY_ACK, as the reference encoder does. The result shares p.Attachments; the
// caller must not modify them afterwards.
func Encode(p *Packet) *Encoded {
	t := p.Type
	if len(p.Attachments) > 0 {
		switch t {
		case Event:
			t = BinaryEvent
		case Ack:
			t = BinaryAck
		}
	}
	n := 1 + len(p.Data)
	if t == BinaryEvent || t == BinaryAck {
		n += 4
	}
	if p.Namespace != "" && p.Namespace != "/" {
		n += len(p.Namespace) + 1
	}
	if p.HasID {
		n += 20
	}
	b := make([]byte, 0, n)
	b = append(b, '0'+byte(t))
	if t == BinaryEvent || t == BinaryAck {
		b = strconv.AppendInt(b, int64(len(p.Attachments)), 10)
		b = append(b, '-')
	}
	if p.Namespace != "" && p.Namespace != "/" {
		b = append(b, p.Namespace...)
		b = append(b, ',')
	}
	if p.HasID {
		b = strconv.AppendUint(b, p.ID, 10)
	}
	b = append(b, p.Data...)
	return &Encoded{Text: b, Attachments: p.Attachments}
}
