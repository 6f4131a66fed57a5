// Package suiteserver is the server that the official protocol test suites of the
// socket.io repository (docs/engine.io-protocol/v4-test-suite and
// docs/socket.io-protocol/v5-test-suite) run against, built with durasock.
//
// Start with New: the returned Server is an http.Handler serving
//
//   - /engine.io/: plain Engine.IO that echoes every message, text or binary;
//   - /socket.io/: Socket.IO where "/" emits "auth" with the handshake auth object on
//     connect, answers "message" with "message-back" and acks "message-with-ack" with
//     the same arguments; "/custom" emits "auth" on connect; every other namespace is
//     refused.
//
// Both use pingInterval 300 ms, pingTimeout 200 ms and maxPayload 1000000, as the
// suites expect; Socket.IO also uses connectTimeout 1000 ms and CORS "*".
package suiteserver
