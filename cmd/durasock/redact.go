package main

import (
	"net/url"
	"regexp"
	"strings"
)

// Secrets of a Redis URL stay out of logs, errors and /status. A URL is shown
// redacted; the text of an error is scrubbed of the URL and of each secret in
// it. Redaction does not rely on the URL being valid: a password with an
// unescaped "/", "?", "#" or "@" is hidden too.

const hidden = "xxxxx"

// secretParam matches a query parameter whose value is a secret, up to the
// next parameter.
var secretParam = regexp.MustCompile(`(?i)([?&;](?:[a-z_]*password|[a-z_]*secret|[a-z_]*token)=)(.*?)($|&[a-z_]+=)`)

// redactURL returns s with every password replaced by xxxxx.
func redactURL(s string) string {
	out, _ := redactSecrets(s)
	return out
}

// redactSecrets returns s redacted and the secrets it held.
func redactSecrets(s string) (string, []string) {
	var secrets []string
	// Query parameters first: a password there may hold an "@".
	s = replaceAllSubmatch(secretParam, s, func(m []string) string {
		if m[2] != "" {
			secrets = append(secrets, m[2])
			if u, err := url.QueryUnescape(m[2]); err == nil && u != m[2] {
				secrets = append(secrets, u)
			}
		}
		return m[1] + hidden + m[3]
	})
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s, secrets
	}
	// The user information ends at the last "@": hosts and paths hold none,
	// and the query values that may (passwords) are hidden already. A query
	// value with an "@" makes this hide more than the password, never less.
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s, secrets
	}
	user, pass, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return s, secrets
	}
	if pass != "" {
		secrets = append(secrets, pass)
		if u, err := url.PathUnescape(pass); err == nil && u != pass {
			secrets = append(secrets, u)
		}
	}
	return scheme + "://" + user + ":" + hidden + rest[at:], secrets
}

func replaceAllSubmatch(re *regexp.Regexp, s string, fn func([]string) string) string {
	var b strings.Builder
	last := 0
	for _, idx := range re.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(s[last:idx[0]])
		m := make([]string, len(idx)/2)
		for i := range m {
			if idx[2*i] >= 0 {
				m[i] = s[idx[2*i]:idx[2*i+1]]
			}
		}
		b.WriteString(fn(m))
		last = idx[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// scrubber hides the secrets of one Redis URL in any text.
type scrubber struct {
	raw, redacted string
	secrets       []string
}

func newScrubber(rawURL string) *scrubber {
	red, secrets := redactSecrets(rawURL)
	return &scrubber{raw: rawURL, redacted: red, secrets: secrets}
}

// scrub returns text without the URL's secrets.
func (s *scrubber) scrub(text string) string {
	if s == nil || s.raw == "" {
		return text
	}
	text = strings.ReplaceAll(text, s.raw, s.redacted)
	for _, sec := range s.secrets {
		// A very short secret would blank out ordinary words; it is no secret
		// worth the name, and the URL forms above already hide it.
		if len(sec) >= 3 {
			text = strings.ReplaceAll(text, sec, hidden)
		}
	}
	return text
}

// hostPort matches a network address in an error text: host:port,
// [v6]:port, or a unix socket path.
var hostPort = regexp.MustCompile(`\[[0-9A-Fa-f:.%a-z]+\]:\d+|\b[A-Za-z0-9][A-Za-z0-9.-]*:\d{1,5}\b|(?:unix|/)[^\s:]*\.sock\b`)

// publicError is err's text as /status shows it: no secrets and no addresses,
// which only the logs (for the operator) carry.
func (s *scrubber) publicError(text string) string {
	if text == "" {
		return ""
	}
	text = s.scrub(text)
	text = strings.ReplaceAll(text, s.redacted, "<redis>")
	return hostPort.ReplaceAllString(text, "<address>")
}
