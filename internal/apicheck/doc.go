// Package apicheck holds two tests that keep the module's shape deliberate.
//
// TestAPISnapshot lists the exported API of every public package (declarations
// only: functions, methods, types with their exported fields, constants and
// variables) and compares it with the snapshot in docs/api. A change of the public
// API fails the test until the snapshot is regenerated, so that it is reviewed
// with the change:
//
//	go test ./internal/apicheck -run TestAPISnapshot -update
//
// TestLayering checks which package may import which (the table in layering.go):
// protocol and transport packages at the bottom, the server and the cluster above
// them, commands, examples and tests on top.
package apicheck
