package socketio

import (
	"encoding/json"
	"errors"
)

// Errors returned by this package.
var (
	// ErrDisconnected is returned when emitting to, or waiting for the ack of, a
	// socket that is disconnected.
	ErrDisconnected = errors.New("socketio: socket disconnected")
	// ErrReservedEvent is returned when emitting an event whose name has a meaning
	// of its own ("connect", "connect_error", "disconnect", "disconnecting",
	// "newListener", "removeListener").
	ErrReservedEvent = errors.New("socketio: reserved event name")
	// ErrNoAck is returned by Event.Ack when the sender asked for no ack.
	ErrNoAck = errors.New("socketio: event has no ack")
	// ErrAckSent is returned by Event.Ack when the ack was already sent.
	ErrAckSent = errors.New("socketio: ack already sent")
	// ErrMissingArgument is returned by Bind when there are fewer arguments than
	// destinations.
	ErrMissingArgument = errors.New("socketio: missing argument")
	// ErrBadArgument is returned by Bind when an argument does not decode into
	// its destination.
	ErrBadArgument = errors.New("socketio: bad argument")
	// ErrAckTimeout is returned (wrapping the context's error) when an ack did not
	// arrive in time.
	ErrAckTimeout = errors.New("socketio: ack timeout")
	// ErrAdapter is returned, wrapping the cause, when a namespace has no adapter
	// because the adapter factory failed.
	ErrAdapter = errors.New("socketio: namespace adapter unavailable")
	// ErrServerClosed is returned by operations after Close or Shutdown.
	ErrServerClosed = errors.New("socketio: server closed")
	// errRemoved: the namespace was removed as empty while a client joined it.
	errRemoved = errors.New("socketio: namespace removed")
	// errTooManyNamespaces is why a client asking for a new dynamic namespace
	// is refused (with CONNECT_ERROR "Too many namespaces", and a warning)
	// when Options.MaxChildNamespaces exist already.
	errTooManyNamespaces = errors.New("socketio: too many namespaces")
)

// ConnectError refuses a connection from a middleware: the client receives a
// CONNECT_ERROR packet {"message": Message, "data": Data}. Any other error from a
// middleware is sent as {"message": err.Error()}.
type ConnectError struct {
	Message string
	Data    any
}

func (e *ConnectError) Error() string { return e.Message }

// connectErrorPayload builds the CONNECT_ERROR payload for err.
func connectErrorPayload(err error) json.RawMessage {
	payload := struct {
		Message string `json:"message"`
		Data    any    `json:"data,omitempty"`
	}{Message: err.Error()}
	var ce *ConnectError
	if errors.As(err, &ce) {
		payload.Message, payload.Data = ce.Message, ce.Data
	}
	b, mErr := json.Marshal(payload)
	if mErr != nil {
		// Data could not be marshalled: send the message alone rather than nothing.
		msg, qErr := json.Marshal(payload.Message)
		if qErr != nil {
			msg = []byte(`"connection refused"`)
		}
		b = append(append([]byte(`{"message":`), msg...), '}')
	}
	return b
}
