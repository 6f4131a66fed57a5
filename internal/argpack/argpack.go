// Package argpack carries the binary attachments of event arguments through
// interfaces that take JSON only (adapter acks and server-side events), so that
// package socketio and the emitter write them the same way.
//
// The attachments ride as an extra last argument,
// {"_durasock_attachments":["<base64>",...]}, next to the arguments that keep
// their placeholders. It crosses a cluster as JSON, and Unpack turns it back
// into binary.
package argpack

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
)

// key starts the extra last argument that carries the attachments.
const key = `{"_durasock_attachments":`

// Pack returns args with atts as an extra last argument, or args as they are
// when there are no attachments.
func Pack(args []json.RawMessage, atts [][]byte) []json.RawMessage {
	if len(atts) == 0 {
		return args
	}
	n := len(key) + 2
	for _, a := range atts {
		n += base64.StdEncoding.EncodedLen(len(a)) + 3
	}
	b := make([]byte, 0, n)
	b = append(b, key...)
	b = append(b, '[')
	for i, a := range atts {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, a)
		b = append(b, '"')
	}
	b = append(b, ']', '}')
	return append(slices.Clip(args), b)
}

// Unpack undoes Pack: it returns the arguments without the extra last one and
// the attachments it carried, or args as they are and nil when it has none.
func Unpack(args []json.RawMessage) ([]json.RawMessage, [][]byte) {
	if len(args) == 0 || !bytes.HasPrefix(args[len(args)-1], []byte(key)) {
		return args, nil
	}
	var env struct {
		Attachments [][]byte `json:"_durasock_attachments"`
	}
	if err := json.Unmarshal(args[len(args)-1], &env); err != nil {
		return args, nil
	}
	return args[:len(args)-1], env.Attachments
}
