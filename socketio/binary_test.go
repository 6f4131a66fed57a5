package socketio

import (
	"context"
	"testing"
)

// TestNestedBinary checks that binary nested in an emitted Go value travels as an
// attachment, and that forwarding an event keeps nested binary as binary, as the
// reference server does.
func TestNestedBinary(t *testing.T) {
	forTransports(t, func(t *testing.T, tr string) {
		srv, url := newTestServer(t, nil)
		type file struct {
			Name  string            `json:"name"`
			Data  []byte            `json:"data"`
			Parts map[string][]byte `json:"parts"`
		}
		srv.OnConnection(func(s *Socket) {
			s.On("get", func(e *Event) {
				f := file{Name: "f", Data: []byte{1, 2}, Parts: map[string][]byte{"p": {3}}}
				if err := e.Ack(f); err != nil {
					t.Errorf("ack: %v", err)
				}
			})
			s.On("fwd", func(e *Event) {
				if err := s.Broadcast().Emit(context.Background(), e.Name, e.Values()...); err != nil {
					t.Errorf("broadcast: %v", err)
				}
			})
		})
		a := dial(t, url, tr)
		a.connect("/", "")
		b := dial(t, url, tr)
		b.connect("/", "")

		a.send(`21["get"]`)
		a.expect(`62-1[{"name":"f","data":{"_placeholder":true,"num":0},"parts":{"p":{"_placeholder":true,"num":1}}}]`)
		a.expectBinary([]byte{1, 2})
		a.expectBinary([]byte{3})

		// Placeholders are renumbered after the top-level attachment; the JSON
		// around them is kept byte for byte.
		a.send(`53-["fwd",{"_placeholder":true,"num":2},{"data": {"_placeholder":true,"num":0}, "list":[{"_placeholder":true,"num":1}]}]`, []byte{7}, []byte{8}, []byte{9})
		b.expect(`53-["fwd",{"_placeholder":true,"num":0},{"data": {"_placeholder":true,"num":1}, "list":[{"_placeholder":true,"num":2}]}]`)
		b.expectBinary([]byte{9})
		b.expectBinary([]byte{7})
		b.expectBinary([]byte{8})
	})
}
