package engineio

import (
	"net/http"
	"strconv"
)

// Error codes of refused requests, as the reference server sends them in
// {"code":N,"message":"..."} bodies and reports them to its
// "connection_error" listeners.
const (
	CodeUnknownTransport    = 0 // "Transport unknown"
	CodeUnknownSID          = 1 // "Session ID unknown"
	CodeBadHandshakeMethod  = 2 // "Bad handshake method"
	CodeBadRequest          = 3 // "Bad request"
	CodeForbidden           = 4 // "Forbidden"
	CodeUnsupportedProtocol = 5 // "Unsupported protocol version"
)

// RequestError describes an HTTP request the server refused before it reached
// a session, as Options.OnConnectionError receives it (the reference server's
// "connection_error" event).
type RequestError struct {
	// Request is the refused request.
	Request *http.Request
	// Code is one of the Code constants, Message its text (or the reason
	// AllowRequest gave).
	Code    int
	Message string
	// Context says more, with the keys of the reference server: "transport"
	// (CodeUnknownTransport), "sid" (CodeUnknownSID), "method"
	// (CodeBadHandshakeMethod), "name" ("TRANSPORT_MISMATCH" with
	// "transport" and "previousTransport", or "TRANSPORT_HANDSHAKE_ERROR")
	// for CodeBadRequest, "message" (CodeForbidden), "protocol"
	// (CodeUnsupportedProtocol).
	Context map[string]any
}

func (e *RequestError) Error() string {
	return "engineio: request refused: " + strconv.Itoa(e.Code) + " " + e.Message
}

// refuseRequest answers a request refused before it reached a session with
// the reference server's error body and reports it to OnConnectionError.
func (s *Server) refuseRequest(w http.ResponseWriter, r *http.Request, status, code int, message string, context map[string]any) {
	if message == "" {
		message = errorMessages[code]
	}
	if h := s.opts.OnConnectionError; h != nil {
		h(&RequestError{Request: r, Code: code, Message: message, Context: context})
	}
	writeError(w, status, code, message)
}

// setHeaders adds the headers of a response to r: for the first response of
// session sid (initial), its cookie and the OnInitialHeaders hook; for every
// response, the OnHeaders hook.
func (s *Server) setHeaders(w http.ResponseWriter, r *http.Request, sid string, initial bool) {
	h := w.Header()
	if initial {
		if c := s.opts.Cookie; c != nil {
			cookie := *c
			if cookie.Name == "" {
				cookie.Name = "io"
			}
			if cookie.Path == "" {
				cookie.Path = "/"
			}
			if cookie.SameSite == 0 {
				cookie.SameSite = http.SameSiteLaxMode
			}
			cookie.HttpOnly = true
			cookie.Value = sid
			if v := cookie.String(); v != "" {
				h.Add("Set-Cookie", v)
			}
		}
		if f := s.opts.OnInitialHeaders; f != nil {
			f(h, r)
		}
	}
	if f := s.opts.OnHeaders; f != nil {
		f(h, r)
	}
}
