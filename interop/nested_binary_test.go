package interop

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/durasock/durasock/socketio"
)

// TestClientNestedBinary runs js/nested-binary.mjs: binary nested in objects
// travels as Buffers between two official clients through the server, and a Go
// value with []byte fields reaches the client with Buffers in their place.
func TestClientNestedBinary(t *testing.T) {
	node := requireNode(t)
	srv := socketio.NewServer(nil)
	errs := make(chan error, 16)
	report := func(err error) {
		if err != nil && !errors.Is(err, socketio.ErrDisconnected) {
			select {
			case errs <- err:
			default:
			}
		}
	}
	type file struct {
		Name  string            `json:"name"`
		Data  []byte            `json:"data"`
		Parts map[string][]byte `json:"parts"`
		List  [][]byte          `json:"list"`
	}
	srv.OnConnection(func(s *socketio.Socket) {
		s.On("join", func(e *socketio.Event) {
			var room string
			report(e.Bind(&room))
			s.Join(room)
			report(e.Ack(room))
		})
		s.On("forward", func(e *socketio.Event) {
			// Forward everything after the room name to the others in the room.
			var room string
			report(e.Bind(&room))
			report(s.To(room).Emit(context.Background(), "forwarded", e.Values()[1:]...))
			report(e.Ack("sent"))
		})
		s.On("go-value", func(e *socketio.Event) {
			report(e.Ack(file{
				Name:  "go",
				Data:  []byte{1, 2, 3},
				Parts: map[string][]byte{"p": {4}},
				List:  [][]byte{{5}, {6, 7}},
			}))
		})
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", srv)
	url := startHTTP(t, mux, srv.Close)
	for _, transport := range []string{"polling", "websocket"} {
		t.Run(transport, func(t *testing.T) {
			runScenario(t, scenarioTimeout, url, node, "js/nested-binary.mjs", transport)
		})
	}
	close(errs)
	for err := range errs {
		t.Errorf("server handler: %v", err)
	}
}
