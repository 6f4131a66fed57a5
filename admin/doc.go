// Package admin instruments a socketio.Server for the Socket.IO Admin UI
// (the npm package @socket.io/admin-ui, 0.5): it serves the UI's namespace,
// "/admin" by default, with the events the UI expects — the sockets of every
// namespace with their rooms and handshake, sockets connecting, leaving and
// joining rooms, per-server statistics every two seconds — and carries out
// what an operator does from the UI: emit to a namespace or room, make
// sockets join or leave a room, disconnect sockets.
//
// Start with New. On a cluster adapter every server process runs New with the
// same options: each one reports its own statistics and sockets, and actions
// from the UI act on the sockets of every process.
//
// The UI itself is a static build shipped in the npm package
// (node_modules/@socket.io/admin-ui/ui/dist); UIHandler serves it from a
// directory. It can also be used from https://admin.socket.io, pointed at the
// server.
package admin
