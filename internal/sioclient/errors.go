package sioclient

import (
	"encoding/json"
	"errors"
)

// Errors of the client. Every error a Client returns wraps one of these or an
// error of the WebSocket or network layer.
var (
	// ErrClosed: the client was closed by Close.
	ErrClosed = errors.New("sioclient: client closed")
	// ErrServerDisconnect: the server sent DISCONNECT for the namespace or closed
	// the Engine.IO session.
	ErrServerDisconnect = errors.New("sioclient: disconnected by server")
	// ErrPingTimeout: the server sent nothing for pingInterval+pingTimeout.
	ErrPingTimeout = errors.New("sioclient: ping timeout")
	// ErrProtocol: the server sent something this client cannot understand.
	ErrProtocol = errors.New("sioclient: protocol error")
	// ErrTooManyAcks: Options.MaxPendingAcks acknowledgements are already waiting.
	ErrTooManyAcks = errors.New("sioclient: too many pending acks")
	// ErrAckTimeout: the server did not answer an EmitAck within Options.AckTimeout.
	ErrAckTimeout = errors.New("sioclient: ack timeout")
	// ErrInvalidArgument: an argument could not be encoded, or a bad URL or option.
	ErrInvalidArgument = errors.New("sioclient: invalid argument")
)

// ConnectError is returned by Dial when the server refused the namespace
// (CONNECT_ERROR), for example from a middleware. Use errors.As to read it.
type ConnectError struct {
	Message string
	Data    json.RawMessage // the "data" field of the refusal, nil when absent
}

func (e *ConnectError) Error() string { return "sioclient: connect refused: " + e.Message }
