// Package bench runs the scenarios behind durasock's published numbers: node
// processes on a redis-server of their own, real Socket.IO clients, and counts of
// what was lost, duplicated or reordered next to rates, latencies, CPU and memory.
// The command is bench/cmd/loadgen; bench/README.md says what each number means.
package bench
