// Package bus is the reliability core of the durasock cluster bus, independent of
// any broker: the Bus interface and its contract, the bounded outbox, reconnect
// backoff, connection state, per-origin sequencing and de-duplication, and liveness
// probes. Package redisbus provides the Redis transports.
//
// Start with Bus.
package bus
