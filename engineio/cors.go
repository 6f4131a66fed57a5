package engineio

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CORSOptions configures the CORS headers of polling responses. WebSocket
// connections are not subject to CORS in browsers; when Origins lists specific
// origins, WebSocket handshakes from other origins are refused too.
type CORSOptions struct {
	// Origins lists the allowed origins ("https://example.com"). "*" allows every
	// origin. An empty list allows none (no CORS headers are sent).
	Origins []string
	// Credentials sets Access-Control-Allow-Credentials: true. With "*" the
	// request's Origin is echoed instead of "*", because browsers refuse "*" with
	// credentials.
	Credentials bool
	// Headers lists the request headers allowed in preflight answers. Empty echoes
	// the headers the browser asks for (Access-Control-Request-Headers).
	Headers []string
	// MaxAge, when positive, lets browsers cache a preflight answer.
	MaxAge time.Duration
}

// anyOrigin reports whether every origin is allowed.
func (c *CORSOptions) anyOrigin() bool {
	return slices.Contains(c.Origins, "*")
}

// allowed reports whether origin may use the server.
func (c *CORSOptions) allowed(origin string) bool {
	return c.anyOrigin() || slices.Contains(c.Origins, origin)
}

// apply writes the CORS headers for r and reports whether r was a preflight
// request, which it then answers with 204.
func (c *CORSOptions) apply(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	origin := r.Header.Get("Origin")
	if origin != "" && c.allowed(origin) {
		if c.anyOrigin() && !c.Credentials {
			h.Set("Access-Control-Allow-Origin", "*")
		} else {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Add("Vary", "Origin")
		}
		if c.Credentials {
			h.Set("Access-Control-Allow-Credentials", "true")
		}
	}
	if r.Method != http.MethodOptions {
		return false
	}
	if origin != "" && c.allowed(origin) {
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
