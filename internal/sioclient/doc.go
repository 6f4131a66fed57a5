// Package sioclient is a small Socket.IO v5 client over WebSocket, built for load
// generation and for tests that need many real clients.
//
// Start with Dial, which opens an Engine.IO v4 WebSocket session, connects to one
// namespace (with an optional auth payload) and returns a connected Client:
//
//	c, err := sioclient.Dial(ctx, "http://127.0.0.1:3000/socket.io/", &sioclient.Options{
//		OnEvent: func(e *sioclient.Event) { fmt.Println(e.Name, string(e.Data)) },
//	})
//	if err != nil { ... }
//	defer c.Close()
//	err = c.Emit(ctx, "chat", map[string]string{"text": "hi"})
//
// Incoming events go to Options.OnEvent, called on the client's one read goroutine
// in the order they arrived; Event.Data aliases the read buffer and is valid only
// during the call (copy what you keep). With no OnEvent, events are copied into the
// bounded channel Client.Events instead. Either way a client that does not keep up
// stops reading, and the server's bounded send queue decides what happens next —
// nothing grows without bound here.
//
// Acknowledgements work both ways: EmitWithAck waits for the server's answer within
// a ctx, EmitAck calls a callback (bounded by Options.AckTimeout), and Event.Ack
// answers an event the server emitted with an ack. The number of acks waiting at
// once is bounded by Options.MaxPendingAcks.
//
// The client answers the server's Engine.IO pings and closes the connection when
// the server goes silent for longer than pingInterval+pingTimeout. Close is
// idempotent; Done and Err tell why a client stopped.
//
// Binary attachments are received (Event.Attachments) and sent ([]byte arguments).
// Only the WebSocket transport is implemented; there is no reconnection: a load
// generator wants to see every disconnect.
package sioclient
