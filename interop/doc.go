// Package interop proves that durasock interoperates with the official clients and
// passes the official protocol test suites. It has no API; everything is in its
// tests, which `go test ./interop/` runs:
//
//   - suites_test.go runs node:test ports of the socket.io repository's Engine.IO v4
//     and Socket.IO v5 protocol test suites (js/*-suite.test.mjs) against the server
//     of examples/protocol-suite, started in-process on a real TCP port;
//   - client_test.go runs scenarios of the official socket.io-client (js/*.mjs):
//     polling and upgrade, WebSocket only, namespaces, auth and middleware
//     rejection, binary, acks both ways, rooms and broadcasts to many clients, and a
//     server restart with automatic reconnection;
//   - python_test.go runs python-socketio's client (py/client.py) over both
//     transports;
//   - cluster_test.go runs the official client against two cmd/durasock processes
//     sharing one redis-server, and recovery_test.go its connection state
//     recovery behind a load balancer (a TCP proxy) when a node is stopped,
//     killed or restarted (js/recovery.mjs);
//   - mixed_test.go runs a cluster of two Node socket.io servers
//     (@socket.io/redis-adapter) and two durasock servers (package compat) on one
//     Redis, emitters_test.go the Node and Python emitters against a durasock
//     cluster on the streams bus, and compat_binary_test.go the binary's
//     -cluster-protocol and -emitters flags.
//
// The tests need Node.js with the npm packages of package.json installed in
// interop/node_modules, and /usr/bin/python3 with python3-socketio: scripts/test
// installs them. A missing tool fails the tests with that advice; nothing is skipped.
package interop
