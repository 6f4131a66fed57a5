package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	clusterPrimaries      = 3
	clusterNodes          = 6
	defaultClusterTimeout = 1500 * time.Millisecond
)

// ClusterSet is a Redis Cluster of three primaries with one replica each.
type ClusterSet struct {
	cfg      *config
	nodes    []*Server
	tlsFiles *TLSFiles

	dir       string // removed by Close for NewCluster
	closeOnce sync.Once
	closeErr  error
}

// Cluster starts six cluster-enabled nodes (cluster-node-timeout 1500ms unless
// WithNodeTimeout), creates the cluster with redis-cli --cluster create
// --cluster-replicas 1, and waits until every node reports cluster_state:ok with all
// slots covered and every replica is in sync. Options apply to every node. Everything
// stops when the test ends.
func Cluster(tb testing.TB, opts ...Option) *ClusterSet {
	tb.Helper()
	RequireRedisServer(tb)
	if _, err := CLIBinary(); err != nil {
		tb.Fatal(err)
	}
	cs, err := startClusterSet(context.Background(), tb.TempDir(), newConfig(opts), func(s *Server) { cleanupServer(tb, s) })
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// NewCluster starts a cluster outside a test in a new temporary directory. Close
// stops it and removes the directory.
func NewCluster(ctx context.Context, opts ...Option) (*ClusterSet, error) {
	cs, dir, err := startInTempDir(ctx, "redistest-cluster-", newConfig(opts), startClusterSet)
	if err != nil {
		return nil, err
	}
	cs.dir = dir
	return cs, nil
}

// Close stops every node (and, for NewCluster, removes the directory). Clusters made
// by Cluster are closed when the test ends; Close is idempotent.
func (cs *ClusterSet) Close() error {
	cs.closeOnce.Do(func() { cs.closeErr = closeAll(cs.nodes, cs.dir) })
	return cs.closeErr
}

func startClusterSet(ctx context.Context, dir string, cfg *config, started func(*Server)) (*ClusterSet, error) {
	cli, err := CLIBinary()
	if err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	cs := &ClusterSet{cfg: cfg}
	if cfg.tls {
		if cs.tlsFiles, err = GenerateTLS(dir); err != nil {
			return nil, err
		}
	}
	nodeTimeout := cfg.nodeTimeout
	if nodeTimeout <= 0 {
		nodeTimeout = defaultClusterTimeout
	}
	for i := range clusterNodes {
		s, err := startServer(ctx, serverSpec{
			name:     fmt.Sprintf("cluster-%d", i+1),
			dir:      filepath.Join(dir, fmt.Sprintf("node%d", i+1)),
			cfg:      cfg,
			tlsFiles: cs.tlsFiles,
			conf: func(s *Server, port int) []string {
				// The cluster bus listens on a port of its own, found free like the
				// data port: Redis' default (port + 10000) is not checked and, on a
				// machine with many connections open, is often an ephemeral port in
				// use (then every start fails with "address already in use").
				busPort, err := freePort()
				if err != nil {
					busPort = port + 10000
				}
				return withExtra(s, append(dataConf(s, port),
					"cluster-enabled yes",
					"cluster-port "+strconv.Itoa(busPort),
					"cluster-config-file "+quote(filepath.Join(s.dir, "nodes.conf")),
					"cluster-node-timeout "+strconv.FormatInt(nodeTimeout.Milliseconds(), 10),
					"cluster-replica-validity-factor 0",
				))
			},
		})
		if err != nil {
			return nil, err
		}
		started(s)
		cs.nodes = append(cs.nodes, s)
	}
	args := append([]string{"--cluster", "create"}, cs.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	args = append(cs.cliAuthArgs(), args...)
	cmd := exec.CommandContext(ctx, cli, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("%w: redis-cli --cluster create: %w\n%s", ErrStart, err, out)
	}
	if err := cs.WaitHealthy(ctx); err != nil {
		return nil, fmt.Errorf("%w\nredis-cli output:\n%s", err, out)
	}
	return cs, nil
}

// cliAuthArgs are the redis-cli flags for TLS and credentials.
func (cs *ClusterSet) cliAuthArgs() []string {
	var args []string
	if cs.tlsFiles != nil {
		args = append(args, "--tls", "--cacert", cs.tlsFiles.CACert,
			"--cert", cs.tlsFiles.ClientCert, "--key", cs.tlsFiles.ClientKey)
	}
	switch {
	case cs.cfg.user != "":
		args = append(args, "--user", cs.cfg.user, "--pass", cs.cfg.password, "--no-auth-warning")
	case cs.cfg.defaultPassword != "":
		args = append(args, "--pass", cs.cfg.defaultPassword, "--no-auth-warning")
	}
	return args
}

// Addrs returns the addresses of all six nodes.
func (cs *ClusterSet) Addrs() []string {
	out := make([]string, len(cs.nodes))
	for i, s := range cs.nodes {
		out[i] = s.Addr()
	}
	return out
}

// Nodes returns the six node processes.
func (cs *ClusterSet) Nodes() []*Server { return append([]*Server(nil), cs.nodes...) }

// URL returns redis+cluster://[user:password@]h1:p1,h2:p2,... (rediss+cluster with
// WithTLS).
func (cs *ClusterSet) URL() string {
	var b strings.Builder
	if cs.tlsFiles != nil {
		b.WriteString("rediss+cluster://")
	} else {
		b.WriteString("redis+cluster://")
	}
	switch {
	case cs.cfg.user != "":
		b.WriteString(url.UserPassword(cs.cfg.user, cs.cfg.password).String() + "@")
	case cs.cfg.defaultPassword != "":
		b.WriteString(url.UserPassword("", cs.cfg.defaultPassword).String() + "@")
	}
	b.WriteString(strings.Join(cs.Addrs(), ","))
	return b.String()
}

// TLS returns the shared certificate files, or nil without WithTLS.
func (cs *ClusterSet) TLS() *TLSFiles { return cs.tlsFiles }

func (cs *ClusterSet) nodeAt(addr string) *Server {
	for _, s := range cs.nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// slotRange is one entry of CLUSTER SLOTS.
type slotRange struct {
	start, end int
	primary    string
	replicas   []string
}

func clusterSlots(ctx context.Context, s *Server) ([]slotRange, error) {
	v, err := s.Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return nil, err
	}
	arr, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: CLUSTER SLOTS reply %T", ErrProtocol, v)
	}
	addrOf := func(e any) (string, error) {
		n, ok := e.([]any)
		if !ok || len(n) < 2 {
			return "", fmt.Errorf("%w: CLUSTER SLOTS node %v", ErrProtocol, e)
		}
		host, _ := n[0].(string)
		port, _ := n[1].(int64)
		return net.JoinHostPort(host, strconv.FormatInt(port, 10)), nil
	}
	var out []slotRange
	for _, e := range arr {
		r, ok := e.([]any)
		if !ok || len(r) < 3 {
			return nil, fmt.Errorf("%w: CLUSTER SLOTS entry %v", ErrProtocol, e)
		}
		start, ok1 := r[0].(int64)
		end, ok2 := r[1].(int64)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: CLUSTER SLOTS range %v", ErrProtocol, e)
		}
		sr := slotRange{start: int(start), end: int(end)}
		var err error
		if sr.primary, err = addrOf(r[2]); err != nil {
			return nil, err
		}
		for _, rep := range r[3:] {
			a, err := addrOf(rep)
			if err != nil {
				return nil, err
			}
			sr.replicas = append(sr.replicas, a)
		}
		out = append(out, sr)
	}
	return out, nil
}

// PrimaryOfSlot returns the node that a running node reports as serving slot.
func (cs *ClusterSet) PrimaryOfSlot(ctx context.Context, slot int) (*Server, error) {
	if slot < 0 || slot >= SlotCount {
		return nil, fmt.Errorf("redistest: slot %d out of range", slot)
	}
	var errs []error
	for _, s := range cs.nodes {
		if !s.Running() {
			continue
		}
		ranges, err := clusterSlots(ctx, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range ranges {
			if slot >= r.start && slot <= r.end {
				if n := cs.nodeAt(r.primary); n != nil {
					return n, nil
				}
				return nil, fmt.Errorf("redistest: slot %d served by unknown node %s", slot, r.primary)
			}
		}
		errs = append(errs, fmt.Errorf("redistest: %s: slot %d not covered", s.Addr(), slot))
	}
	return nil, fmt.Errorf("redistest: no node knows the primary of slot %d: %w", slot, errors.Join(errs...))
}

// Primaries returns the running nodes that serve slots, in slot order, as a running
// node reports them.
func (cs *ClusterSet) Primaries(ctx context.Context) ([]*Server, error) {
	var errs []error
	for _, s := range cs.nodes {
		if !s.Running() {
			continue
		}
		ranges, err := clusterSlots(ctx, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		slices.SortFunc(ranges, func(a, b slotRange) int { return a.start - b.start })
		var out []*Server
		for _, r := range ranges {
			n := cs.nodeAt(r.primary)
			if n == nil {
				return nil, fmt.Errorf("redistest: slots %d-%d served by unknown node %s", r.start, r.end, r.primary)
			}
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("redistest: no running node answered CLUSTER SLOTS: %w", errors.Join(errs...))
}

// KillPrimaryOfSlot kills (SIGKILL) the primary serving slot and returns it; Start it
// again later and it rejoins as a replica.
func (cs *ClusterSet) KillPrimaryOfSlot(ctx context.Context, slot int) (*Server, error) {
	s, err := cs.PrimaryOfSlot(ctx, slot)
	if err != nil {
		return nil, err
	}
	return s, s.Kill()
}

// KillPrimaryOf kills the primary serving key's slot and returns it.
func (cs *ClusterSet) KillPrimaryOf(ctx context.Context, key string) (*Server, error) {
	return cs.KillPrimaryOfSlot(ctx, KeySlot(key))
}

// WaitHealthy waits until every running node reports cluster_state:ok with all slots
// ok, and every slot range is served by a running primary in every running node's
// view (so a just-killed primary that the others have not yet failed counts as not
// healthy).
func (cs *ClusterSet) WaitHealthy(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	return waitUntil(ctx, slowPollInterval, "a healthy cluster", cs.checkHealthy)
}

func (cs *ClusterSet) checkHealthy(ctx context.Context) error {
	running := 0
	for _, s := range cs.nodes {
		if !s.Running() {
			continue
		}
		running++
		v, err := s.Do(ctx, "CLUSTER", "INFO")
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr(), err)
		}
		str, _ := v.(string)
		info := parseInfo(str)
		if info["cluster_state"] != "ok" || info["cluster_slots_ok"] != strconv.Itoa(SlotCount) {
			return fmt.Errorf("%s: cluster_state %q slots_ok %s", s.Addr(), info["cluster_state"], info["cluster_slots_ok"])
		}
		ranges, err := clusterSlots(ctx, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr(), err)
		}
		covered := 0
		for _, r := range ranges {
			p := cs.nodeAt(r.primary)
			if p == nil || !p.Running() {
				return fmt.Errorf("%s: slots %d-%d served by %s, which is down", s.Addr(), r.start, r.end, r.primary)
			}
			covered += r.end - r.start + 1
		}
		if covered != SlotCount {
			return fmt.Errorf("%s: CLUSTER SLOTS covers %d slots", s.Addr(), covered)
		}
		rep, err := s.Info(ctx, "replication")
		if err != nil {
			return fmt.Errorf("%s: %w", s.Addr(), err)
		}
		for k, v := range rep {
			if strings.HasPrefix(k, "slave") && strings.Contains(v, "ip=") && !strings.Contains(v, "state=online") {
				return fmt.Errorf("%s: replica not online: %s", s.Addr(), v)
			}
		}
		if rep["role"] == "slave" && rep["master_link_status"] != "up" {
			p := cs.nodeAt(net.JoinHostPort(rep["master_host"], rep["master_port"]))
			if p != nil && p.Running() {
				return fmt.Errorf("%s: replica link to %s:%s is %s", s.Addr(), rep["master_host"], rep["master_port"], rep["master_link_status"])
			}
		}
	}
	if running == 0 {
		return fmt.Errorf("redistest: no cluster node is running")
	}
	return nil
}

// ReplicasOf returns the running nodes that primary lists as online replicas
// (INFO replication).
func (cs *ClusterSet) ReplicasOf(ctx context.Context, primary *Server) ([]*Server, error) {
	info, err := primary.Info(ctx, "replication")
	if err != nil {
		return nil, err
	}
	var out []*Server
	for k, v := range info {
		if !strings.HasPrefix(k, "slave") {
			continue
		}
		addr, ok := onlineReplicaAddr(v)
		if !ok {
			continue
		}
		if n := cs.nodeAt(addr); n != nil && n.Running() {
			out = append(out, n)
		}
	}
	slices.SortFunc(out, func(a, b *Server) int { return a.Port() - b.Port() })
	return out, nil
}

// onlineReplicaAddr reads the address of an online replica from a slaveN line of
// INFO replication ("ip=127.0.0.1,port=6380,state=online,...").
func onlineReplicaAddr(line string) (string, bool) {
	var ip, port string
	online := false
	for f := range strings.SplitSeq(line, ",") {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "ip":
			ip = v
		case "port":
			port = v
		case "state":
			online = v == "online"
		}
	}
	if ip == "" || port == "" || !online {
		return "", false
	}
	return net.JoinHostPort(ip, port), true
}

// Failover runs CLUSTER FAILOVER on replica: mode "" is the coordinated failover
// (the primary must be up; the replica catches up first), "FORCE" skips the
// primary (the other primaries still vote), "TAKEOVER" skips the vote too. A
// replica that lags its primary (Suspend, then the primary's CLIENT KILL TYPE
// replica) takes over without what it lacks; a primary still running then follows
// it and drops those writes. Failover waits until every running node reports
// replica as serving slots and the cluster is healthy.
func (cs *ClusterSet) Failover(ctx context.Context, replica *Server, mode string) error {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	args := []string{"CLUSTER", "FAILOVER"}
	if mode != "" {
		args = append(args, mode)
	}
	if _, err := replica.Do(ctx, args...); err != nil {
		return fmt.Errorf("redistest: %s on %s: %w", strings.Join(args, " "), replica.Addr(), err)
	}
	err := waitUntil(ctx, slowPollInterval, replica.Addr()+" serving slots", func(ctx context.Context) error {
		for _, s := range cs.nodes {
			if !s.Running() {
				continue
			}
			ranges, err := clusterSlots(ctx, s)
			if err != nil {
				return fmt.Errorf("%s: %w", s.Addr(), err)
			}
			if !slices.ContainsFunc(ranges, func(r slotRange) bool { return r.primary == replica.Addr() }) {
				return fmt.Errorf("%s does not see %s serve slots yet", s.Addr(), replica.Addr())
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return cs.WaitHealthy(ctx)
}
