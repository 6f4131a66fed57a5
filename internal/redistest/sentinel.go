package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// MasterName is the name the sentinels monitor.
const MasterName = "mymaster"

const (
	defaultDownAfter   = 3 * time.Second
	failoverTimeout    = 5 * time.Second
	topologyTimeout    = 60 * time.Second
	sentinelQuorum     = 2
	sentinelCount      = 3
	pollInterval       = 50 * time.Millisecond
	slowPollInterval   = 100 * time.Millisecond
	sentinelProbeLimit = 2 * time.Second
)

// SentinelSet is one primary, its replicas (one unless WithReplicas) and three
// sentinels monitoring them as MasterName with quorum 2.
type SentinelSet struct {
	cfg       *config
	tlsFiles  *TLSFiles
	sentinels []*Server

	mu      sync.Mutex
	primary *Server // the server last known as primary
	// replicas are the other data nodes; after a failover the old primary takes
	// the place of the promoted one.
	replicas []*Server
	killed   *Server // the primary KillPrimary killed, until WaitFailover

	all       []*Server // every process in start order
	dir       string
	closeOnce sync.Once
	closeErr  error
}

// Sentinel starts a primary, a replica (replicaof; WithReplicas for more) and three
// sentinels (down after 3s unless WithNodeTimeout, failover timeout 5s,
// parallel-syncs 1), and waits until every replica is in sync and every sentinel
// sees the primary, every replica and the two other sentinels. Options apply to the
// data nodes (WithAOF, WithUser, WithTLS, ...). Everything stops when the test ends.
func Sentinel(tb testing.TB, opts ...Option) *SentinelSet {
	tb.Helper()
	RequireRedisServer(tb)
	ss, err := startSentinelSet(context.Background(), tb.TempDir(), newConfig(opts), func(s *Server) { cleanupServer(tb, s) })
	if err != nil {
		tb.Fatal(err)
	}
	return ss
}

// NewSentinel starts a Sentinel set outside a test in a new temporary directory.
// Close stops it and removes the directory.
func NewSentinel(ctx context.Context, opts ...Option) (*SentinelSet, error) {
	ss, dir, err := startInTempDir(ctx, "redistest-sentinel-", newConfig(opts), startSentinelSet)
	if err != nil {
		return nil, err
	}
	ss.dir = dir
	return ss, nil
}

// Close stops every process (and, for NewSentinel, removes the directory). Sets made
// by Sentinel are closed when the test ends anyway; Close is idempotent.
func (ss *SentinelSet) Close() error {
	ss.closeOnce.Do(func() { ss.closeErr = closeAll(ss.all, ss.dir) })
	return ss.closeErr
}

// startInTempDir runs start in a new temporary directory for use outside a test.
// On failure it stops what start had started and removes the directory.
func startInTempDir[T any](ctx context.Context, prefix string, cfg *config,
	start func(ctx context.Context, dir string, cfg *config, started func(*Server)) (T, error),
) (T, string, error) {
	var zero T
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return zero, "", fmt.Errorf("redistest: temp dir: %w", err)
	}
	var all []*Server
	set, err := start(ctx, dir, cfg, func(s *Server) { all = append(all, s) })
	if err != nil {
		return zero, "", errors.Join(err, closeAll(all, dir))
	}
	return set, dir, nil
}

// closeAll closes servers in reverse start order, then removes dir if not empty.
func closeAll(servers []*Server, dir string) error {
	var errs []error
	for i := len(servers) - 1; i >= 0; i-- {
		errs = append(errs, servers[i].Close())
	}
	if dir != "" {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("redistest: %w", err))
		}
	}
	return errors.Join(errs...)
}

func startSentinelSet(ctx context.Context, dir string, cfg *config, started func(*Server)) (*SentinelSet, error) {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	ss := &SentinelSet{cfg: cfg}
	if cfg.tls {
		var err error
		if ss.tlsFiles, err = GenerateTLS(dir); err != nil {
			return nil, err
		}
	}
	record := started
	started = func(s *Server) {
		ss.all = append(ss.all, s)
		record(s)
	}
	var err error
	ss.primary, err = startServer(ctx, serverSpec{
		name: "sentinel-primary", dir: filepath.Join(dir, "primary"), cfg: cfg, tlsFiles: ss.tlsFiles,
		conf: standaloneConf,
	})
	if err != nil {
		return nil, err
	}
	started(ss.primary)
	primaryPort := ss.primary.Port()
	for i := range cfg.replicaCount() {
		name, sub := "sentinel-replica", "replica"
		if i > 0 {
			name, sub = fmt.Sprintf("sentinel-replica-%d", i+1), fmt.Sprintf("replica%d", i+1)
		}
		rep, err := startServer(ctx, serverSpec{
			name: name, dir: filepath.Join(dir, sub), cfg: cfg, tlsFiles: ss.tlsFiles,
			conf: func(s *Server, port int) []string {
				return withExtra(s, append(dataConf(s, port), "replicaof 127.0.0.1 "+strconv.Itoa(primaryPort)))
			},
		})
		if err != nil {
			return nil, err
		}
		started(rep)
		ss.replicas = append(ss.replicas, rep)
	}
	for _, rep := range ss.replicas {
		if err := waitReplicaSync(ctx, ss.primary, rep); err != nil {
			return nil, err
		}
	}
	// Sentinels need no auth of their own; they authenticate to the data nodes.
	scfg := &config{startTimeout: cfg.startTimeout, tls: cfg.tls}
	downAfter := cfg.nodeTimeout
	if downAfter <= 0 {
		downAfter = defaultDownAfter
	}
	for i := range sentinelCount {
		sn, err := startServer(ctx, serverSpec{
			name:     fmt.Sprintf("sentinel-%d", i+1),
			dir:      filepath.Join(dir, fmt.Sprintf("sentinel%d", i+1)),
			sentinel: true,
			cfg:      scfg,
			tlsFiles: ss.tlsFiles,
			conf: func(s *Server, port int) []string {
				lines := []string{
					"bind 127.0.0.1",
					"daemonize no",
					"dir " + quote(s.dir),
					"logfile " + quote(s.logPath),
					fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d %d", MasterName, primaryPort, sentinelQuorum),
					fmt.Sprintf("sentinel down-after-milliseconds %s %d", MasterName, downAfter.Milliseconds()),
					fmt.Sprintf("sentinel failover-timeout %s %d", MasterName, failoverTimeout.Milliseconds()),
					fmt.Sprintf("sentinel parallel-syncs %s 1", MasterName),
				}
				if s.tlsFiles != nil {
					// tls-replication makes the sentinels use TLS towards the data nodes
					// and each other.
					lines = append(lines,
						"port 0",
						"tls-port "+strconv.Itoa(port),
						"tls-cert-file "+quote(s.tlsFiles.ServerCert),
						"tls-key-file "+quote(s.tlsFiles.ServerKey),
						"tls-ca-cert-file "+quote(s.tlsFiles.CACert),
						"tls-auth-clients yes",
						"tls-replication yes",
					)
				} else {
					lines = append(lines, "port "+strconv.Itoa(port))
				}
				if cfg.user != "" {
					lines = append(lines,
						fmt.Sprintf("sentinel auth-user %s %s", MasterName, cfg.user),
						fmt.Sprintf("sentinel auth-pass %s %s", MasterName, cfg.password))
				} else if cfg.defaultPassword != "" {
					lines = append(lines, fmt.Sprintf("sentinel auth-pass %s %s", MasterName, cfg.defaultPassword))
				}
				return lines
			},
		})
		if err != nil {
			return nil, err
		}
		started(sn)
		ss.sentinels = append(ss.sentinels, sn)
	}
	if err := ss.waitSentinelsSettled(ctx); err != nil {
		return nil, err
	}
	return ss, nil
}

// waitReplicaSync waits until replica's link to primary is up and primary lists it
// online.
func waitReplicaSync(ctx context.Context, primary, replica *Server) error {
	return waitUntil(ctx, pollInterval, "replica "+replica.Addr()+" in sync with "+primary.Addr(), func(ctx context.Context) error {
		ri, err := replica.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if ri["master_link_status"] != "up" || ri["master_port"] != strconv.Itoa(primary.Port()) {
			return fmt.Errorf("replica: role %s master_port %s link %s", ri["role"], ri["master_port"], ri["master_link_status"])
		}
		pi, err := primary.Info(ctx, "replication")
		if err != nil {
			return err
		}
		for k, v := range pi {
			if strings.HasPrefix(k, "slave") && strings.Contains(v, "port="+strconv.Itoa(replica.Port())+",") && strings.Contains(v, "state=online") {
				return nil
			}
		}
		return fmt.Errorf("primary does not list the replica online: %v", pi)
	})
}

func (ss *SentinelSet) waitSentinelsSettled(ctx context.Context) error {
	return waitUntil(ctx, slowPollInterval, "sentinels to see the primary, the replica and each other", func(ctx context.Context) error {
		for _, sn := range ss.sentinels {
			v, err := sn.Do(ctx, "SENTINEL", "MASTER", MasterName)
			if err != nil {
				return fmt.Errorf("%s: %w", sn.name, err)
			}
			m, err := pairs(v)
			if err != nil {
				return err
			}
			if m["flags"] != "master" || m["num-slaves"] != strconv.Itoa(len(ss.replicas)) || m["num-other-sentinels"] != strconv.Itoa(sentinelCount-1) {
				return fmt.Errorf("%s: flags %q num-slaves %s num-other-sentinels %s", sn.name, m["flags"], m["num-slaves"], m["num-other-sentinels"])
			}
			v, err = sn.Do(ctx, "SENTINEL", "REPLICAS", MasterName)
			if err != nil {
				return fmt.Errorf("%s: %w", sn.name, err)
			}
			reps, ok := v.([]any)
			if !ok || len(reps) != len(ss.replicas) {
				return fmt.Errorf("%s: replicas %v", sn.name, v)
			}
			for _, rep := range reps {
				r, err := pairs(rep)
				if err != nil {
					return err
				}
				if r["flags"] != "slave" || r["master-link-status"] != "ok" {
					return fmt.Errorf("%s: replica %s flags %q link %q", sn.name, r["name"], r["flags"], r["master-link-status"])
				}
			}
		}
		return nil
	})
}

// TLS returns the certificate files shared by every process, or nil without WithTLS.
func (ss *SentinelSet) TLS() *TLSFiles { return ss.tlsFiles }

// WaitReplicaSync waits until every running replica is connected to Primary and in
// sync, for example after Start of a killed primary that the sentinels turn into a
// replica, or after a failover that the sentinels make the other replicas follow.
func (ss *SentinelSet) WaitReplicaSync(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	primary := ss.Primary()
	for _, rep := range ss.Replicas() {
		if !rep.Running() {
			continue
		}
		if err := waitReplicaSync(ctx, primary, rep); err != nil {
			return err
		}
	}
	return nil
}

// MasterName returns the monitored name, "mymaster".
func (ss *SentinelSet) MasterName() string { return MasterName }

// SentinelAddrs returns the sentinel addresses.
func (ss *SentinelSet) SentinelAddrs() []string {
	out := make([]string, len(ss.sentinels))
	for i, s := range ss.sentinels {
		out[i] = s.Addr()
	}
	return out
}

// Sentinels returns the sentinel processes.
func (ss *SentinelSet) Sentinels() []*Server { return append([]*Server(nil), ss.sentinels...) }

// Primary returns the server last known as primary: the one started as primary, or
// the promoted one after WaitFailover.
func (ss *SentinelSet) Primary() *Server {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.primary
}

// Replica returns the first replica: with one replica, the other data node.
func (ss *SentinelSet) Replica() *Server {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.replicas[0]
}

// Replicas returns every data node but Primary, in a stable order: after a
// failover the old primary takes the place of the promoted replica.
func (ss *SentinelSet) Replicas() []*Server {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]*Server(nil), ss.replicas...)
}

// URL returns redis+sentinel://[user:password@]h1:p1,h2:p2,h3:p3/mymaster (rediss+
// with WithTLS), with the data nodes' credentials (the sentinels need none).
func (ss *SentinelSet) URL() string {
	var b strings.Builder
	if ss.tlsFiles != nil {
		b.WriteString("rediss+sentinel://")
	} else {
		b.WriteString("redis+sentinel://")
	}
	switch {
	case ss.cfg.user != "":
		b.WriteString(url.UserPassword(ss.cfg.user, ss.cfg.password).String() + "@")
	case ss.cfg.defaultPassword != "":
		b.WriteString(url.UserPassword("", ss.cfg.defaultPassword).String() + "@")
	}
	b.WriteString(strings.Join(ss.SentinelAddrs(), ","))
	b.WriteString("/" + MasterName)
	return b.String()
}

// KillPrimary kills (SIGKILL) the server last known as primary and returns it, so a
// test can Start it again later (the sentinels then make it a replica).
func (ss *SentinelSet) KillPrimary() (*Server, error) {
	ss.mu.Lock()
	p := ss.primary
	ss.killed = p
	ss.mu.Unlock()
	return p, p.Kill()
}

// CurrentPrimary asks the sentinels for the primary address and returns the server
// that a majority of the reachable sentinels report. When every running sentinel
// reports another server than Primary (a failover that no WaitFailover saw, after a
// long CLIENT PAUSE for example), that server is Primary from then on.
func (ss *SentinelSet) CurrentPrimary(ctx context.Context) (*Server, error) {
	addr, all, err := ss.primaryVotes(ctx)
	if err != nil {
		return nil, err
	}
	s, err := ss.serverAt(addr)
	if err != nil {
		return nil, err
	}
	if all {
		ss.setPrimary(s)
	}
	return s, nil
}

// setPrimary makes s Primary; the old primary takes s's place among the replicas.
func (ss *SentinelSet) setPrimary(s *Server) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if s == ss.primary {
		return
	}
	for i, rep := range ss.replicas {
		if rep == s {
			ss.replicas[i] = ss.primary
		}
	}
	ss.primary = s
}

func (ss *SentinelSet) serverAt(addr string) (*Server, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, s := range append([]*Server{ss.primary}, ss.replicas...) {
		if s.Addr() == addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("redistest: sentinels report unknown primary %s", addr)
}

// primaryVotes returns the majority address and whether every running sentinel
// reports it.
func (ss *SentinelSet) primaryVotes(ctx context.Context) (string, bool, error) {
	votes := make(map[string]int)
	var errs []error
	for _, sn := range ss.sentinels {
		if !sn.Running() {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, sentinelProbeLimit)
		v, err := sn.Do(qctx, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", MasterName)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sn.name, err))
			continue
		}
		arr, ok := v.([]any)
		if !ok || len(arr) != 2 {
			errs = append(errs, fmt.Errorf("%w: %s: GET-MASTER-ADDR-BY-NAME %v", ErrProtocol, sn.name, v))
			continue
		}
		host, _ := arr[0].(string)
		port, _ := arr[1].(string)
		votes[net.JoinHostPort(host, port)]++
	}
	for addr, n := range votes {
		if n >= len(ss.sentinels)/2+1 {
			return addr, len(votes) == 1 && len(errs) == 0, nil
		}
	}
	return "", false, fmt.Errorf("redistest: no majority of sentinels agrees on the primary: %v %w", votes, errors.Join(errs...))
}

// WaitFailover waits until every running sentinel reports a primary other than the
// one last known (or the one KillPrimary killed) and that server has the master role; it returns its address.
// The promoted replica is Primary afterwards and the old primary takes its place
// among Replicas. Waiting for all sentinels (not just a quorum)
// makes it safe to Start the old primary right away: it is then reconfigured as a
// replica (Redis Sentinel does that about 8-11s after it is back).
func (ss *SentinelSet) WaitFailover(ctx context.Context) (string, error) {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	ss.mu.Lock()
	old := ss.primary
	if ss.killed != nil {
		// A CurrentPrimary since KillPrimary may have made the new one Primary.
		old = ss.killed
	}
	ss.mu.Unlock()
	var promoted *Server
	err := waitUntil(ctx, slowPollInterval, "sentinel failover away from "+old.Addr(), func(ctx context.Context) error {
		addr, all, err := ss.primaryVotes(ctx)
		if err != nil {
			return err
		}
		if addr == old.Addr() {
			return fmt.Errorf("sentinels still report %s", addr)
		}
		if !all {
			return fmt.Errorf("not every sentinel reports %s yet", addr)
		}
		s, err := ss.serverAt(addr)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx, "replication")
		if err != nil {
			return err
		}
		if info["role"] != "master" {
			return fmt.Errorf("%s has role %s", addr, info["role"])
		}
		promoted = s
		return nil
	})
	if err != nil {
		return "", err
	}
	ss.setPrimary(promoted)
	ss.mu.Lock()
	ss.killed = nil
	ss.mu.Unlock()
	return promoted.Addr(), nil
}

// PreferReplica makes rep the replica the sentinels promote at the next failover:
// replica-priority 1 on rep and 100 (Redis' default) on the other running replicas
// (Sentinel looks at the priority before the replication offset). It waits until
// every running sentinel reports these priorities, which takes up to one INFO
// period of the sentinels (10s). A lagging replica preferred so is promoted
// although another one has more data; the priority stays with the server.
func (ss *SentinelSet) PreferReplica(ctx context.Context, rep *Server) error {
	ctx, cancel := withDefaultTimeout(ctx, topologyTimeout)
	defer cancel()
	want := make(map[string]string)
	for _, s := range ss.Replicas() {
		if !s.Running() {
			continue
		}
		prio := "100"
		if s == rep {
			prio = "1"
		}
		if _, err := s.Do(ctx, "CONFIG", "SET", "replica-priority", prio); err != nil {
			return fmt.Errorf("redistest: %s: %w", s.Addr(), err)
		}
		want[s.Addr()] = prio
	}
	if want[rep.Addr()] != "1" {
		return fmt.Errorf("redistest: %s is not a running replica of the set", rep.Addr())
	}
	return waitUntil(ctx, slowPollInterval, "sentinels to see the priority of "+rep.Addr(), func(ctx context.Context) error {
		for _, sn := range ss.sentinels {
			if !sn.Running() {
				continue
			}
			v, err := sn.Do(ctx, "SENTINEL", "REPLICAS", MasterName)
			if err != nil {
				return fmt.Errorf("%s: %w", sn.name, err)
			}
			reps, ok := v.([]any)
			if !ok {
				return fmt.Errorf("%w: %s: SENTINEL REPLICAS %T", ErrProtocol, sn.name, v)
			}
			seen := 0
			for _, e := range reps {
				r, err := pairs(e)
				if err != nil {
					return err
				}
				prio, ok := want[r["name"]]
				if !ok {
					continue
				}
				if r["slave-priority"] != prio {
					return fmt.Errorf("%s: %s has priority %s, want %s", sn.name, r["name"], r["slave-priority"], prio)
				}
				seen++
			}
			if seen != len(want) {
				return fmt.Errorf("%s: lists %d of the %d running replicas", sn.name, seen, len(want))
			}
		}
		return nil
	})
}
