// Package emitter publishes into a durasock cluster from any Go process that is
// not a Socket.IO server itself: a worker, a cron job, an HTTP backend.
//
// Start with New, giving it a bus on the cluster's Redis (redisbus.Open with the
// same URL, prefix and transport as the servers). Messages go through the bus's
// outbox like a server's own, so an emitter inherits the same contract: Emit is
// accepted into the outbox or fails at once, and what is accepted reaches every
// server in order, exactly once, also across Redis restarts.
//
//	b, err := redisbus.Open(ctx, "redis://127.0.0.1:6379", nil)
//	e := emitter.New(b)
//	err = e.Of("/").To("lobby").Emit(ctx, "news", map[string]string{"title": "hello"})
//	err = e.Sync(ctx)  // optional: wait until Redis holds it
//	err = b.Close(ctx) // before exiting: gives the outbox time to drain
//
// Emit returns once the message is in the outbox, in this process's memory. A
// process that exits without Close, or crashes, loses what the outbox still held;
// Sync waits until Redis holds everything emitted so far, for callers that must
// not answer their own clients before that.
package emitter
