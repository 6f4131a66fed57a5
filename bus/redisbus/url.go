package redisbus

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Topology is the kind of Redis deployment a URL names.
type Topology int

// Topologies, chosen by the URL scheme.
const (
	// Standalone is one Redis server: redis://, rediss://.
	Standalone Topology = iota + 1
	// Unix is one Redis server on a Unix socket: unix://.
	Unix
	// Sentinel is a primary found through Sentinel: redis+sentinel://, rediss+sentinel://.
	Sentinel
	// Cluster is a Redis Cluster: redis+cluster://, rediss+cluster://.
	Cluster
)

func (t Topology) String() string {
	switch t {
	case Standalone:
		return "standalone"
	case Unix:
		return "unix"
	case Sentinel:
		return "sentinel"
	case Cluster:
		return "cluster"
	}
	return "unknown"
}

// Endpoint is a Redis URL taken apart. ParseEndpoint returns it; ParseURL and Open
// turn it into a client configuration.
type Endpoint struct {
	Topology Topology
	// TLS is set by the rediss schemes.
	TLS bool
	// Addrs are host:port pairs (Standalone: one; Sentinel: the sentinels; Cluster:
	// the seed nodes) or, for Unix, the socket path.
	Addrs []string
	// Username and Password authenticate to the data nodes (ACL user or
	// requirepass when Username is empty).
	Username string
	Password string
	// DB is the database number (not allowed on Cluster).
	DB int
	// MasterName is the Sentinel master set name.
	MasterName string
	// SentinelUsername and SentinelPassword authenticate to the sentinels
	// (query parameters sentinel_username and sentinel_password).
	SentinelUsername string
	SentinelPassword string
	// DialTimeout and WriteTimeout come from the dial_timeout and write_timeout
	// query parameters; zero when absent.
	DialTimeout  time.Duration
	WriteTimeout time.Duration
	// ClientName is sent with CLIENT SETNAME (client_name parameter).
	ClientName string
	// Inboxes is the number of inbox partitions of the Streams transport
	// (inboxes parameter; Options.Inboxes); zero when absent.
	Inboxes int
	// TLS files and switches (ca, cert, key, server_name, skip_verify parameters).
	CAFile             string
	CertFile           string
	KeyFile            string
	ServerName         string
	InsecureSkipVerify bool
}

// URLError reports why a Redis URL was rejected. It wraps ErrBadURL.
type URLError struct {
	URL    string // the URL with any password replaced by "xxxxx"
	Reason string
}

func (e *URLError) Error() string {
	return fmt.Sprintf("redisbus: invalid Redis URL %q: %s", e.URL, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBadURL) true.
func (e *URLError) Unwrap() error { return ErrBadURL }

var knownParams = map[string]bool{
	"db": true, "dial_timeout": true, "write_timeout": true, "client_name": true,
	"ca": true, "cert": true, "key": true, "server_name": true, "skip_verify": true,
	"sentinel_username": true, "sentinel_password": true, "inboxes": true,
}

// ParseEndpoint takes a Redis URL apart without touching the network or files.
//
// Accepted forms:
//
//	redis://[user:password@]host[:port][/db][?params]
//	rediss://[user:password@]host[:port][/db][?params]             (TLS)
//	unix://[user:password@]/path/to/redis.sock[?db=N&params]
//	redis+sentinel://[user:password@]h1[:p1],h2[:p2]/mastername[/db][?params]
//	rediss+sentinel://...                                          (TLS)
//	redis+cluster://[user:password@]h1[:p1],h2[:p2][?params]
//	rediss+cluster://...                                           (TLS)
//
// The port defaults to 6379 (26379 for sentinels). Parameters: db,
// dial_timeout and write_timeout (Go durations), client_name, sentinel_username,
// sentinel_password, inboxes (the number of inbox partitions, 1 to 1024; it
// replaces Options.Inboxes), and for TLS ca, cert, key (PEM file paths),
// server_name, skip_verify (bool). An unknown parameter is an error, so a typo
// is not ignored.
func ParseEndpoint(s string) (Endpoint, error) {
	ep, err := parseEndpoint(s)
	if err != nil {
		return Endpoint{}, &URLError{URL: redactLoose(s), Reason: safeReason(s, err.format, err.args)}
	}
	return ep, nil
}

// badURL is why a URL was rejected, kept unformatted until ParseEndpoint knows
// which of its parts may show a secret (see safeReason).
type badURL struct {
	format string
	args   []any
}

func bad(format string, args ...any) *badURL { return &badURL{format: format, args: args} }

// parseEndpoint takes s apart: scheme, user info, hosts or socket path, path,
// query parameters, in that order.
func parseEndpoint(s string) (Endpoint, *badURL) {
	var ep Endpoint
	if strings.TrimSpace(s) == "" {
		return ep, bad("empty URL")
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return ep, bad("missing scheme (want redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://)")
	}
	if err := ep.setScheme(scheme); err != nil {
		return ep, err
	}
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		return ep, bad("fragment %q not allowed", rest[i:])
	}
	rest, rawQuery, _ := strings.Cut(rest, "?")
	authority, path := splitAuthority(rest)
	authority, err := ep.setUserInfo(authority)
	if err == nil && ep.Topology == Unix {
		err = ep.setSocketPath(authority, path)
	} else if err == nil {
		err = ep.setHostsAndPath(scheme, authority, path)
	}
	if err == nil {
		err = ep.setQuery(rawQuery)
	}
	return ep, err
}

// setScheme sets the topology and TLS that the scheme names.
func (ep *Endpoint) setScheme(scheme string) *badURL {
	switch strings.ToLower(scheme) {
	case "redis":
		ep.Topology = Standalone
	case "rediss":
		ep.Topology, ep.TLS = Standalone, true
	case "unix":
		ep.Topology = Unix
	case "redis+sentinel":
		ep.Topology = Sentinel
	case "rediss+sentinel":
		ep.Topology, ep.TLS = Sentinel, true
	case "redis+cluster":
		ep.Topology = Cluster
	case "rediss+cluster":
		ep.Topology, ep.TLS = Cluster, true
	default:
		return bad("unknown scheme %q (want redis, rediss, unix, redis+sentinel, rediss+sentinel, redis+cluster or rediss+cluster)", scheme)
	}
	return nil
}

// splitAuthority cuts what follows the scheme (without the query) at the first
// '/': the authority (user info and hosts; for a unix URL only user info ending
// in '@', as in unix://user:pw@/path) and the path.
func splitAuthority(rest string) (authority, path string) {
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		return rest[:i], rest[i:]
	}
	return rest, ""
}

// setUserInfo takes the user name and password out of the authority and
// returns what is left: the hosts.
func (ep *Endpoint) setUserInfo(authority string) (string, *badURL) {
	at := strings.LastIndexByte(authority, '@')
	if at < 0 {
		return authority, nil
	}
	user, pass, hasPass := strings.Cut(authority[:at], ":")
	var err error
	if ep.Username, err = url.PathUnescape(user); err != nil {
		return "", bad("bad escape in user name")
	}
	if hasPass {
		if ep.Password, err = url.PathUnescape(pass); err != nil {
			return "", bad("bad escape in password")
		}
	}
	return authority[at+1:], nil
}

// setSocketPath sets the address of a unix URL, which has no host.
func (ep *Endpoint) setSocketPath(authority, path string) *badURL {
	if authority != "" {
		return bad("unix URL has host %q; write unix:///path/to/redis.sock", authority)
	}
	if path == "" || path == "/" {
		return bad("missing socket path")
	}
	p, err := url.PathUnescape(path)
	if err != nil {
		return bad("bad escape in socket path")
	}
	ep.Addrs = []string{p}
	return nil
}

// setHostsAndPath sets the addresses of a network URL and what its path says:
// the master name of a Sentinel URL, then the database number.
func (ep *Endpoint) setHostsAndPath(scheme, authority, path string) *badURL {
	if err := ep.setHosts(scheme, authority); err != nil {
		return err
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if len(segs) == 1 && segs[0] == "" {
		segs = nil
	}
	if ep.Topology == Sentinel {
		if len(segs) == 0 {
			return bad("missing master name (redis+sentinel://host:port/mastername)")
		}
		name, err := url.PathUnescape(segs[0])
		if err != nil || name == "" {
			return bad("bad master name %q", segs[0])
		}
		ep.MasterName = name
		segs = segs[1:]
	}
	switch {
	case len(segs) > 1:
		return bad("unexpected path %q", path)
	case len(segs) == 1 && ep.Topology == Cluster:
		return bad("Redis Cluster has only database 0; remove the path %q", path)
	case len(segs) == 1:
		return ep.setDB(segs[0])
	}
	return nil
}

// setHosts sets the addresses of the comma-separated hosts, with the default
// port of the topology where a host has none.
func (ep *Endpoint) setHosts(scheme, authority string) *badURL {
	if authority == "" {
		return bad("missing host")
	}
	hosts := strings.Split(authority, ",")
	if ep.Topology == Standalone && len(hosts) > 1 {
		return bad("%d hosts in a %s URL; use redis+cluster:// or redis+sentinel:// for several", len(hosts), scheme)
	}
	defaultPort := "6379"
	if ep.Topology == Sentinel {
		defaultPort = "26379"
	}
	for _, h := range hosts {
		addr, err := hostPort(h, defaultPort)
		if err != nil {
			return bad("%v", err)
		}
		ep.Addrs = append(ep.Addrs, addr)
	}
	return nil
}

func (ep *Endpoint) setDB(s string) *badURL {
	db, err := parseDB(s)
	if err != nil {
		return bad("%v", err)
	}
	ep.DB = db
	return nil
}

// setQuery sets what the query parameters say. Each is known and given once.
func (ep *Endpoint) setQuery(rawQuery string) *badURL {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return bad("bad query: %v", err)
	}
	for k, v := range q {
		if !knownParams[k] {
			return bad("unknown parameter %q", k)
		}
		if len(v) > 1 {
			return bad("parameter %q given %d times", k, len(v))
		}
	}
	for _, set := range [...]func(url.Values) *badURL{ep.setDBParam, ep.setConnParams, ep.setInboxes, ep.setSentinelParams, ep.setTLSParams} {
		if err := set(q); err != nil {
			return err
		}
	}
	return nil
}

func (ep *Endpoint) setDBParam(q url.Values) *badURL {
	if !q.Has("db") {
		return nil
	}
	if ep.Topology == Cluster {
		return bad("Redis Cluster has only database 0")
	}
	return ep.setDB(q.Get("db"))
}

// setConnParams sets the timeouts and the client name.
func (ep *Endpoint) setConnParams(q url.Values) *badURL {
	var err error
	if ep.DialTimeout, err = parseDuration(q, "dial_timeout"); err != nil {
		return bad("%v", err)
	}
	if ep.WriteTimeout, err = parseDuration(q, "write_timeout"); err != nil {
		return bad("%v", err)
	}
	ep.ClientName = q.Get("client_name")
	if strings.ContainsAny(ep.ClientName, " \n\r") {
		return bad("client_name must not contain spaces or newlines")
	}
	return nil
}

// setInboxes sets the number of inbox partitions: a count from 1 to
// maxPartitions (without the parameter there are none, unless Options say
// otherwise).
func (ep *Endpoint) setInboxes(q url.Values) *badURL {
	if !q.Has("inboxes") {
		return nil
	}
	v := q.Get("inboxes")
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxPartitions {
		return bad("inboxes %q is not a count from 1 to %d (omit it for none)", v, maxPartitions)
	}
	ep.Inboxes = n
	return nil
}

func (ep *Endpoint) setSentinelParams(q url.Values) *badURL {
	if !q.Has("sentinel_username") && !q.Has("sentinel_password") {
		return nil
	}
	if ep.Topology != Sentinel {
		return bad("sentinel_username and sentinel_password need a redis+sentinel URL")
	}
	ep.SentinelUsername = q.Get("sentinel_username")
	ep.SentinelPassword = q.Get("sentinel_password")
	return nil
}

// setTLSParams sets the TLS files and switches, which need a rediss scheme.
func (ep *Endpoint) setTLSParams(q url.Values) *badURL {
	ep.CAFile, ep.CertFile, ep.KeyFile = q.Get("ca"), q.Get("cert"), q.Get("key")
	ep.ServerName = q.Get("server_name")
	if q.Has("skip_verify") {
		v := q.Get("skip_verify")
		var err error
		if v == "" {
			ep.InsecureSkipVerify = true
		} else if ep.InsecureSkipVerify, err = strconv.ParseBool(v); err != nil {
			return bad("skip_verify %q is not a bool", v)
		}
	}
	if !ep.TLS && (ep.CAFile != "" || ep.CertFile != "" || ep.KeyFile != "" || ep.ServerName != "" || q.Has("skip_verify")) {
		return bad("TLS parameters (ca, cert, key, server_name, skip_verify) need a rediss scheme")
	}
	if (ep.CertFile == "") != (ep.KeyFile == "") {
		return bad("cert and key must be given together")
	}
	return nil
}

func hostPort(h, defaultPort string) (string, error) {
	if h == "" {
		return "", fmt.Errorf("empty host in list")
	}
	host, port := h, defaultPort
	if strings.HasPrefix(h, "[") { // [ipv6] or [ipv6]:port
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return "", fmt.Errorf("unclosed '[' in host %q", h)
		}
		host = h[1:end]
		switch after := h[end+1:]; {
		case after == "":
		case strings.HasPrefix(after, ":"):
			port = after[1:]
		default:
			return "", fmt.Errorf("bad host %q", h)
		}
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 {
		host, port = h[:i], h[i+1:]
		if strings.Contains(host, ":") {
			return "", fmt.Errorf("IPv6 address %q must be in brackets", h)
		}
	}
	if host == "" {
		return "", fmt.Errorf("empty host in %q", h)
	}
	if strings.ContainsAny(host, " /\\@?#%[]") {
		return "", fmt.Errorf("bad host %q", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("bad port %q in %q", port, h)
	}
	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

func parseDB(s string) (int, error) {
	db, err := strconv.Atoi(s)
	if err != nil || db < 0 {
		return 0, fmt.Errorf("bad database number %q", s)
	}
	return db, nil
}

func parseDuration(q url.Values, name string) (time.Duration, error) {
	if !q.Has(name) {
		return 0, nil
	}
	d, err := time.ParseDuration(q.Get(name))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q is not a positive duration (like 2s)", name, q.Get(name))
	}
	return d, nil
}

// Redacted is what a redacted secret is replaced with.
const Redacted = "xxxxx"

// String returns the endpoint as a URL with every secret (Password,
// SentinelPassword) replaced by Redacted, for logs and status pages. Parsing
// it gives the same endpoint but for the secrets.
func (e Endpoint) String() string {
	var b strings.Builder
	scheme := map[Topology]string{Standalone: "redis", Unix: "unix", Sentinel: "redis+sentinel", Cluster: "redis+cluster"}[e.Topology]
	if scheme == "" {
		scheme = "redis"
	}
	if e.TLS {
		scheme = strings.Replace(scheme, "redis", "rediss", 1)
	}
	b.WriteString(scheme + "://")
	if e.Username != "" || e.Password != "" {
		b.WriteString(strings.NewReplacer(":", "%3A", "@", "%40").Replace(url.PathEscape(e.Username)))
		if e.Password != "" {
			b.WriteString(":" + Redacted)
		}
		b.WriteByte('@')
	}
	q := url.Values{}
	switch e.Topology {
	case Unix:
		if len(e.Addrs) > 0 {
			b.WriteString((&url.URL{Path: e.Addrs[0]}).EscapedPath())
		}
		if e.DB != 0 {
			q.Set("db", strconv.Itoa(e.DB))
		}
	default:
		b.WriteString(strings.Join(e.Addrs, ","))
		if e.Topology == Sentinel {
			b.WriteString("/" + url.PathEscape(e.MasterName))
		}
		if e.DB != 0 {
			b.WriteString("/" + strconv.Itoa(e.DB))
		}
	}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("sentinel_username", e.SentinelUsername)
	if e.SentinelPassword != "" {
		q.Set("sentinel_password", Redacted)
	}
	if e.DialTimeout > 0 {
		q.Set("dial_timeout", e.DialTimeout.String())
	}
	if e.WriteTimeout > 0 {
		q.Set("write_timeout", e.WriteTimeout.String())
	}
	set("client_name", e.ClientName)
	if e.Inboxes > 0 {
		q.Set("inboxes", strconv.Itoa(e.Inboxes))
	}
	set("ca", e.CAFile)
	set("cert", e.CertFile)
	set("key", e.KeyFile)
	set("server_name", e.ServerName)
	if e.InsecureSkipVerify {
		q.Set("skip_verify", "true")
	}
	if len(q) > 0 {
		b.WriteString("?" + q.Encode())
	}
	return b.String()
}

// RedactURL returns s, a Redis URL, fit for logs and status pages: every
// secret in it (the password of the user info, sentinel_password, and the
// value of any query parameter whose name speaks of a password, token, secret
// or auth) replaced by Redacted. A URL that ParseEndpoint accepts comes back
// in the form of Endpoint.String. Any other string is redacted generously:
// when a password holds characters that should have been escaped (/ ? # @ &),
// where it ends is a guess, so everything that may belong to it is hidden,
// hosts and parameters included if need be.
func RedactURL(s string) string {
	if ep, err := ParseEndpoint(s); err == nil {
		return ep.String()
	}
	return redactLoose(s)
}

// sensitiveParam reports whether a query parameter named k may carry a
// secret.
func sensitiveParam(k string) bool {
	k = strings.ToLower(k)
	for _, w := range [...]string{"pass", "pwd", "token", "secret", "auth", "credential"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// secretSpans returns the byte ranges of s that may hold a secret, whether or
// not s is a valid URL:
//
//   - the password of the user info: from the first ':' after the scheme to
//     the last '@' of the whole string, since a password may hold an
//     unescaped '/', '?', '#' or '@';
//   - from each sensitive query parameter's '=' to the end of the string,
//     since its value may hold an unescaped '&' or '#'.
func secretSpans(s string) [][2]int {
	var spans [][2]int
	base := 0
	if i := strings.Index(s, "://"); i >= 0 {
		base = i + 3
	}
	if at := strings.LastIndexByte(s[base:], '@'); at >= 0 {
		at += base
		if c := strings.IndexByte(s[base:at], ':'); c >= 0 {
			spans = append(spans, [2]int{base + c + 1, at})
		}
	}
	// Parameters: every name that follows '?', '&' or ';' up to '='.
	for i := base; i < len(s); i++ {
		if s[i] != '?' && s[i] != '&' && s[i] != ';' {
			continue
		}
		rest := s[i+1:]
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		if end := strings.IndexAny(rest, "&;"); end >= 0 && end < eq {
			continue // a parameter without value; the next one starts there
		}
		name := rest[:eq]
		if un, err := url.QueryUnescape(name); err == nil {
			name = un
		}
		if sensitiveParam(name) {
			spans = append(spans, [2]int{i + 1 + eq + 1, len(s)})
			break
		}
	}
	return spans
}

// redactLoose replaces the secret spans of s by Redacted; where a password
// would leave the user info, what follows it is hidden too.
func redactLoose(s string) string {
	spans := secretSpans(s)
	if len(spans) == 0 {
		return s
	}
	var b strings.Builder
	last := 0
	for _, sp := range spans {
		if sp[0] < last {
			// Overlapping spans (a sensitive parameter inside what may be a
			// password): the first one covers it.
			if sp[1] > last {
				last = sp[1]
			}
			continue
		}
		b.WriteString(s[last:sp[0]])
		b.WriteString(Redacted)
		last = sp[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// safeReason formats the reason of a URL error. Reasons quote parts of the
// URL (a host, a path, a parameter name); when one of them may hold a piece
// of a secret of s, the reason says what to fix without quoting anything.
func safeReason(s, format string, args []any) string {
	spans := secretSpans(s)
	for _, a := range args {
		text := fmt.Sprint(a)
		for _, sp := range spans {
			if sharesText(text, s[sp[0]:sp[1]]) {
				return "malformed URL; details hidden because they would show part of a password. " +
					"Escape / ? # @ : % & in passwords (url.QueryEscape, encodeURIComponent)"
			}
		}
	}
	return fmt.Sprintf(format, args...)
}

// sharesText reports whether text holds a piece of secret: two consecutive
// bytes of it, or, for a one-byte secret, that byte quoted or alone.
func sharesText(text, secret string) bool {
	switch len(secret) {
	case 0:
		return false
	case 1:
		return text == secret || strings.Contains(text, strconv.Quote(secret))
	}
	for i := 0; i+2 <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+2]) {
			return true
		}
	}
	return false
}

// ParseURL turns a Redis URL (see ParseEndpoint) into a rueidis client
// configuration with the defaults of Options: no client-side retries, no client
// cache, and the dial and write timeouts. TLS files named in the URL are loaded.
func ParseURL(s string) (rueidis.ClientOption, error) {
	ep, err := ParseEndpoint(s)
	if err != nil {
		return rueidis.ClientOption{}, err
	}
	var o Options
	o.setDefaults()
	return clientOption(ep, &o)
}

// clientOption combines a parsed URL with options (defaults already applied).
// Options win over the URL where both say something.
func clientOption(ep Endpoint, o *Options) (rueidis.ClientOption, error) {
	co := rueidis.ClientOption{
		InitAddress: append([]string(nil), ep.Addrs...),
		Username:    ep.Username,
		Password:    ep.Password,
		SelectDB:    ep.DB,
		ClientName:  ep.ClientName,
		// The bus owns retries and replays: a failed call must fail now.
		DisableRetry: true,
		DisableCache: true,
	}
	if o.Username != "" || o.Password != "" {
		co.Username, co.Password = o.Username, o.Password
	}
	co.Dialer.Timeout = o.DialTimeout
	if ep.DialTimeout > 0 {
		co.Dialer.Timeout = ep.DialTimeout
	}
	co.ConnWriteTimeout = o.WriteTimeout
	if ep.WriteTimeout > 0 {
		co.ConnWriteTimeout = ep.WriteTimeout
	}
	co.Dialer.KeepAlive = rueidis.DefaultTCPKeepAlive

	tlsConf, err := tlsConfig(ep, o)
	if err != nil {
		return rueidis.ClientOption{}, err
	}
	co.TLSConfig = tlsConf

	switch ep.Topology {
	case Standalone:
		co.ForceSingleClient = true
	case Unix:
		co.ForceSingleClient = true
		path := ep.Addrs[0]
		co.DialCtxFn = unixDialer(path)
	case Sentinel:
		co.Sentinel = rueidis.SentinelOption{
			MasterSet: ep.MasterName,
			Username:  ep.SentinelUsername,
			Password:  ep.SentinelPassword,
			TLSConfig: tlsConf,
			Dialer:    co.Dialer,
		}
		if o.SentinelUsername != "" || o.SentinelPassword != "" {
			co.Sentinel.Username, co.Sentinel.Password = o.SentinelUsername, o.SentinelPassword
		}
	case Cluster:
		co.ShuffleInit = true
	}
	if o.ConfigureClient != nil {
		o.ConfigureClient(&co)
	}
	return co, nil
}

func tlsConfig(ep Endpoint, o *Options) (*tls.Config, error) {
	if o.TLSConfig != nil {
		return o.TLSConfig.Clone(), nil
	}
	caFile, certFile, keyFile := ep.CAFile, ep.CertFile, ep.KeyFile
	if o.CAFile != "" {
		caFile = o.CAFile
	}
	if o.CertFile != "" || o.KeyFile != "" {
		certFile, keyFile = o.CertFile, o.KeyFile
	}
	useTLS := ep.TLS || caFile != "" || certFile != "" || o.InsecureSkipVerify
	if !useTLS {
		return nil, nil
	}
	if ep.Topology == Unix {
		return nil, fmt.Errorf("%w: TLS over a unix socket is not supported", ErrBadURL)
	}
	conf := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: ep.InsecureSkipVerify || o.InsecureSkipVerify, //nolint:gosec // asked for explicitly
		ServerName:         ep.ServerName,
	}
	// An empty ServerName makes crypto/tls verify each node against the host it
	// dials, which is what a Cluster or a Sentinel-found primary needs.
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("redisbus: reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("redisbus: no PEM certificate in CA file %s", caFile)
		}
		conf.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, fmt.Errorf("%w: client certificate and key must be given together", ErrBadURL)
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("redisbus: loading client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}
