package redistest

import "time"

// Option configures Standalone, Sentinel and Cluster.
type Option func(*config)

type config struct {
	aof             bool
	fsync           string // appendfsync with aof; "" means always
	user, password  string
	defaultPassword string
	tls             bool
	extra           []string
	nodeTimeout     time.Duration
	startTimeout    time.Duration
	replicas        int
}

func newConfig(opts []Option) *config {
	c := &config{startTimeout: 20 * time.Second}
	for _, o := range opts {
		o(c)
	}
	return c
}

// WithAOF turns on the append-only file with appendfsync always, so every
// acknowledged write survives Kill and Start.
func WithAOF() Option { return func(c *config) { c.aof = true } }

// WithAOFPolicy turns on the append-only file with the given appendfsync policy:
// "always", "everysec" (Redis' default: a crash may lose the last second) or "no"
// (the kernel decides when to write).
func WithAOFPolicy(fsync string) Option {
	return func(c *config) { c.aof, c.fsync = true, fsync }
}

// WithoutPersistence turns off RDB snapshots and the AOF (the default).
func WithoutPersistence() Option { return func(c *config) { c.aof, c.fsync = false, "" } }

// WithUser creates an ACL user with all permissions and turns the default user off
// (unless WithDefaultPassword is given too). URL carries the credentials.
func WithUser(name, password string) Option {
	return func(c *config) { c.user, c.password = name, password }
}

// WithDefaultPassword keeps the default user on but requires password (requirepass).
func WithDefaultPassword(password string) Option {
	return func(c *config) { c.defaultPassword = password }
}

// WithTLS generates a CA, a server and a client certificate in the server directory and
// serves TLS only (port 0, tls-port on the chosen port, client certificates required).
// Use Server.TLSConfig for clients.
func WithTLS() Option { return func(c *config) { c.tls = true } }

// WithConfig appends redis.conf lines (for example "maxmemory 10mb"). They come last
// and so override the defaults of this package.
func WithConfig(lines ...string) Option {
	return func(c *config) { c.extra = append(c.extra, lines...) }
}

// WithNodeTimeout sets cluster-node-timeout (Cluster, default 1500ms) and sentinel
// down-after-milliseconds (Sentinel, default 3000ms: shorter, a promoted
// replica that answers Sentinel late on a loaded machine is failed over again).
func WithNodeTimeout(d time.Duration) Option { return func(c *config) { c.nodeTimeout = d } }

// WithStartTimeout bounds the wait for a process to answer PING (default 20s).
func WithStartTimeout(d time.Duration) Option { return func(c *config) { c.startTimeout = d } }

// WithReplicas sets the number of replicas of a Sentinel set's primary (default 1).
// With two or more, a failover has a choice: the sentinels promote one and make
// the others follow it. Standalone and Cluster ignore it.
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

func (c *config) replicaCount() int { return max(c.replicas, 1) }
