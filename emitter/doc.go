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
package emitter
