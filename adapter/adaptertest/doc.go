// Package adaptertest is the conformance suite of adapter.Adapter and the test
// doubles it runs on.
//
// Start with Run: give it a Setup whose New returns the factories of a fresh
// cluster of adapters (one for a single-process adapter), and it checks the
// delivery contract of package adapter on every node — broadcasts to all, to
// rooms, with exceptions, local and volatile, binary attachments, order and
// exactly-once delivery, membership, socket operations across nodes, fetching
// sockets, broadcasts with acks (complete and timed out), server-side emits,
// and Close. It waits for conditions with a deadline and asserts counts, never
// speed.
//
// Namespace and Socket implement adapter.Namespace and adapter.Socket for tests:
// a Socket decodes and records every packet written to it, answers acks as its
// AckFunc says (ReplyID or Silent), and records disconnects; a Namespace records
// server-side emits and answers them as told by OnServerSideEmit.
package adaptertest
