// Package redistest starts real Redis processes for tests: a standalone server, a
// Sentinel set (primary, one replica or more, three sentinels) and a Redis Cluster
// (three primaries, three replicas), plus a TCP fault proxy that cuts, blackholes or slows the
// link between a node and Redis.
//
// Start with Standalone:
//
//	func TestSomething(t *testing.T) {
//		srv := redistest.Standalone(t, redistest.WithAOF())
//		client := connect(srv.URL()) // redis://127.0.0.1:port
//		...
//		if err := srv.Kill(); err != nil { // crash it (SIGKILL)
//			t.Fatal(err)
//		}
//		if err := srv.Start(ctx); err != nil { // same port, same dir: the AOF is loaded
//			t.Fatal(err)
//		}
//	}
//
// Every process listens on a free port of 127.0.0.1, runs in a directory of its own
// (t.TempDir), and is stopped by PID when the test ends: SIGTERM, then SIGKILL after a
// bounded wait. On Linux the kernel also kills it if the test binary dies. When a test
// fails, the logs of its servers are printed. A missing redis-server fails the test
// with the command to install it (apt-get install redis-server); nothing is skipped.
//
// Options: WithAOF (appendfsync always), WithAOFPolicy (always, everysec or no),
// WithoutPersistence (the default), WithUser
// (ACL user, default user off), WithDefaultPassword, WithTLS (a CA, server and client
// certificates generated in the directory; Server.TLSConfig for clients), WithConfig
// (extra redis.conf lines), WithNodeTimeout, WithStartTimeout, WithReplicas (the
// replicas of a Sentinel set's primary).
//
// Server.Do sends admin commands (CONFIG SET, CLIENT KILL, DEBUG SLEEP ...) through a
// small RESP client of this package, so it does not depend on the client under test.
//
// Server.DoAll runs several commands on one connection; use it for WAIT after a
// write, since WAIT only counts acknowledgements of its own connection's writes.
//
// NewProxy puts a TCP proxy between a client and a server to simulate network faults:
//
//	proxy := redistest.NewProxy(t, srv.Addr())
//	client := connect("redis://" + proxy.Addr())
//	proxy.Blackhole() // partition: connections stay open, no byte flows
//	proxy.Restore()   // held bytes are delivered
//	proxy.Cut()       // connections closed, new ones reset until Restore
//	proxy.Slow(100 * time.Millisecond)
//
// Sentinel and Cluster start the high-availability topologies and drive failovers:
//
//	ss := redistest.Sentinel(t)           // ss.URL(): redis+sentinel://s1,s2,s3/mymaster
//	ss.KillPrimary()
//	newAddr, err := ss.WaitFailover(ctx)  // the replica is primary now
//
//	cs := redistest.Cluster(t)            // cs.URL(): redis+cluster://n1,...,n6
//	cs.KillPrimaryOf(ctx, "some-key")
//	err := cs.WaitHealthy(ctx)            // every slot served by a running primary
//
// A failover to a lagging replica, which lacks the primary's last writes:
// DetachReplica breaks a replica's replication link while both servers keep
// answering everyone else; then promote it.
//
//	ss := redistest.Sentinel(t, redistest.WithReplicas(2))
//	lagging := ss.Replicas()[0]
//	ss.PreferReplica(ctx, lagging)        // the sentinels will promote it
//	redistest.DetachReplica(ctx, ss.Primary(), lagging)
//	// ... writes only the primary gets ...
//	ss.KillPrimary()
//	ss.WaitFailover(ctx)                  // lagging is primary; the other replica follows it
//
//	reps, _ := cs.ReplicasOf(ctx, primary)
//	redistest.DetachReplica(ctx, primary, reps[0])
//	cs.Failover(ctx, reps[0], "TAKEOVER") // CLUSTER FAILOVER TAKEOVER; primary follows it
//
// Server.Suspend and Resume stop and continue a process (SIGSTOP, SIGCONT).
//
// Outside tests (benchmarks, tools) use NewStandalone, NewSentinel, NewCluster and
// StartProxy, and Close what they return.
package redistest
