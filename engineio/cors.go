package engineio

import (
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CORSOptions configures the CORS headers of polling responses and which
// origins may open WebSocket connections. Browsers do not apply CORS to
// WebSocket, so the server does: a WebSocket handshake whose Origin is not
// allowed is refused with 403. Requests without an Origin header (clients that
// are not browsers) are never refused because of it.
//
// The rules, in order, for a request's Origin:
//
//  1. An origin listed in Origins by name is allowed: its Origin is echoed
//     (with Vary: Origin) and Credentials apply. "null" (sandboxed frames,
//     file: pages, some redirects) is allowed only this way or by
//     AllowOriginFunc.
//  2. Otherwise, when AllowOriginFunc is set, it decides; an origin it allows
//     is echoed and Credentials apply. "*" in Origins is then ignored.
//  3. Otherwise, when Origins has "*", every origin but "null" is allowed with
//     Access-Control-Allow-Origin: * and never with credentials: the Fetch
//     standard forbids "*" with credentials, and echoing every origin with
//     credentials would let any site act with the user's cookies. To allow
//     credentials, list the origins or use AllowOriginFunc.
//  4. Anything else gets no CORS headers (browsers then refuse the response)
//     and its WebSocket handshakes are refused.
type CORSOptions struct {
	// Origins lists the allowed origins ("https://example.com"), compared
	// exactly with the request's Origin header. "*" allows every origin except
	// "null", without credentials. An empty list allows none.
	Origins []string
	// AllowOriginFunc, when not nil, is asked about every origin that Origins
	// does not list by name, as a function given to the origin option of
	// Node's cors package is: true allows it (echoed, with Credentials). It
	// runs on the request's goroutine for every request carrying an Origin, so
	// it must be fast and safe for concurrent use. r is the request.
	AllowOriginFunc func(origin string, r *http.Request) bool
	// Credentials sets Access-Control-Allow-Credentials: true for origins
	// allowed by name or by AllowOriginFunc, never for those allowed by "*".
	Credentials bool
	// Headers lists the request headers allowed in preflight answers. Empty echoes
	// the headers the browser asks for (Access-Control-Request-Headers).
	Headers []string
	// MaxAge, when positive, lets browsers cache a preflight answer.
	MaxAge time.Duration
}

// How an origin is allowed.
const (
	originRefused  = iota
	originEchoed   // by name or by AllowOriginFunc: echoed, credentials apply
	originWildcard // by "*": answered with "*", no credentials
)

// wildcardOnly reports whether every answer is the same whatever the Origin
// (only "*"): responses then need no Vary: Origin.
func (c *CORSOptions) wildcardOnly() bool {
	return c.AllowOriginFunc == nil && len(c.Origins) == 1 && c.Origins[0] == "*"
}

// check says how origin, the Origin header of r, is allowed.
func (c *CORSOptions) check(origin string, r *http.Request) int {
	switch {
	case origin == "":
		return originRefused
	case origin != "*" && slices.Contains(c.Origins, origin):
		return originEchoed
	case c.AllowOriginFunc != nil:
		if c.AllowOriginFunc(origin, r) {
			return originEchoed
		}
		return originRefused
	case origin != "null" && slices.Contains(c.Origins, "*"):
		return originWildcard
	}
	return originRefused
}

// allowsWebSocket reports whether a WebSocket handshake of r may proceed:
// without an Origin (not a browser) or from an allowed one.
func (c *CORSOptions) allowsWebSocket(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	return origin == "" || c.check(origin, r) != originRefused
}

// warnIgnored logs, once at start, a configuration that does not do what it
// seems to. Nil-safe.
func (c *CORSOptions) warnIgnored(log *slog.Logger) {
	if c == nil {
		return
	}
	if c.Credentials && slices.Contains(c.Origins, "*") && c.AllowOriginFunc == nil {
		log.Warn(`engineio: CORS "*" never allows credentials (Fetch standard); list the origins or set AllowOriginFunc to allow them with credentials`)
	}
	if c.AllowOriginFunc != nil && slices.Contains(c.Origins, "*") {
		log.Warn(`engineio: CORS "*" is ignored when AllowOriginFunc is set`)
	}
}

// apply writes the CORS headers for r and reports whether r was a preflight
// request, which it then answers with 204.
func (c *CORSOptions) apply(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	origin := r.Header.Get("Origin")
	how := c.check(origin, r)
	if !c.wildcardOnly() {
		// The answer depends on the Origin: caches must key on it.
		h.Add("Vary", "Origin")
	}
	switch how {
	case originWildcard:
		h.Set("Access-Control-Allow-Origin", "*")
	case originEchoed:
		h.Set("Access-Control-Allow-Origin", origin)
		if c.Credentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
	}
	if r.Method != http.MethodOptions {
		return false
	}
	if how != originRefused {
		h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
		if len(c.Headers) > 0 {
			h.Set("Access-Control-Allow-Headers", strings.Join(c.Headers, ", "))
		} else if req := r.Header.Get("Access-Control-Request-Headers"); req != "" {
			h.Set("Access-Control-Allow-Headers", req)
			h.Add("Vary", "Access-Control-Request-Headers")
		}
		if c.MaxAge > 0 {
			h.Set("Access-Control-Max-Age", strconv.Itoa(int(c.MaxAge/time.Second)))
		}
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusNoContent)
	return true
}
