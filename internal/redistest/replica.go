package redistest

import (
	"context"
	"fmt"
)

// detachedUser is the replication user of a detached replica: no server has it, so
// the replica's AUTH to its primary fails until AttachReplica.
const detachedUser = "redistest-detached"

// DetachReplica makes replica fall behind primary while both keep running and
// answering everyone else (Sentinel, the cluster bus, clients): replica's
// credentials for its primary are made wrong (masteruser, masterauth), then
// primary drops its replication links (CLIENT KILL TYPE replica). What primary
// acknowledges from then on never reaches replica, whose reconnects fail; other
// replicas reconnect at once and catch up. Promote replica (a failover) and it
// lacks those writes. AttachReplica undoes it.
func DetachReplica(ctx context.Context, primary, replica *Server) error {
	if _, err := replica.DoAll(ctx,
		[]string{"CONFIG", "SET", "masteruser", detachedUser},
		[]string{"CONFIG", "SET", "masterauth", detachedUser},
	); err != nil {
		return fmt.Errorf("redistest: detach %s: %w", replica.Addr(), err)
	}
	if _, err := primary.Do(ctx, "CLIENT", "KILL", "TYPE", "replica"); err != nil {
		return fmt.Errorf("redistest: %s: CLIENT KILL TYPE replica: %w", primary.Addr(), err)
	}
	return nil
}

// AttachReplica gives replica its credentials for its primary back (after
// DetachReplica): a replica reconnects within a second; a replica promoted
// meanwhile keeps them for when it becomes a replica again.
func AttachReplica(ctx context.Context, replica *Server) error {
	user, pass := "", ""
	switch {
	case replica.cfg.user != "":
		user, pass = replica.cfg.user, replica.cfg.password
	case replica.cfg.defaultPassword != "":
		pass = replica.cfg.defaultPassword
	}
	if _, err := replica.DoAll(ctx,
		[]string{"CONFIG", "SET", "masteruser", user},
		[]string{"CONFIG", "SET", "masterauth", pass},
	); err != nil {
		return fmt.Errorf("redistest: attach %s: %w", replica.Addr(), err)
	}
	return nil
}
