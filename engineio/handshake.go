package engineio

import (
	"crypto/tls"
	"encoding/binary"
	"net/http"
	"net/url"
)

// handshake is what a session keeps of its handshake request, packed into one
// string so that an idle session holds one allocation instead of a request, a
// URL and a header map: each field is a uvarint length and its bytes, in the
// order of the hs* indexes below, then a key and a value for every header
// value. Headers of the WebSocket handshake itself are left out.
type handshake string

const (
	hsMethod = iota
	hsURI
	hsProto
	hsHost
	hsRemote
	hsHeaders // first header key
)

func newHandshake(r *http.Request) handshake {
	uri := r.RequestURI
	if uri == "" && r.URL != nil {
		uri = r.URL.RequestURI()
	}
	fixed := [...]string{hsMethod: r.Method, hsURI: uri, hsProto: r.Proto, hsHost: r.Host, hsRemote: r.RemoteAddr}
	n := 0
	for _, f := range fixed {
		n += binary.MaxVarintLen32 + len(f)
	}
	for k, vv := range r.Header {
		if handshakeOnlyHeader(k) {
			continue
		}
		for _, v := range vv {
			n += 2*binary.MaxVarintLen32 + len(k) + len(v)
		}
	}
	b := make([]byte, 0, n)
	for _, f := range fixed {
		b = appendField(b, f)
	}
	for k, vv := range r.Header {
		if handshakeOnlyHeader(k) {
			continue
		}
		for _, v := range vv {
			b = appendField(appendField(b, k), v)
		}
	}
	return handshake(b)
}

func appendField(b []byte, f string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(f))), f...)
}

func handshakeOnlyHeader(key string) bool {
	switch key {
	case "Connection", "Upgrade", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
		return true
	}
	return false
}

// next splits the first field off h. The string was built by newHandshake, so
// it is well formed.
func (h handshake) next() (field string, rest handshake) {
	var n, shift, i int
	for ; h[i] >= 0x80; i++ {
		n |= int(h[i]&0x7f) << shift
		shift += 7
	}
	n |= int(h[i]) << shift
	i++
	return string(h[i : i+n]), h[i+n:]
}

// field returns the i-th field.
func (h handshake) field(i int) string {
	var f string
	for range i + 1 {
		f, h = h.next()
	}
	return f
}

// request builds the request the session was opened with.
func (h handshake) request(tlsState *tls.ConnectionState) *http.Request {
	var fixed [hsHeaders]string
	for i := range fixed {
		fixed[i], h = h.next()
	}
	u, err := url.ParseRequestURI(fixed[hsURI])
	if err != nil {
		// net/http parsed the same string when it read the request; only a
		// request made up by hand gets here.
		u = &url.URL{Path: fixed[hsURI]}
	}
	r := &http.Request{
		Method:     fixed[hsMethod],
		URL:        u,
		Proto:      fixed[hsProto],
		Header:     make(http.Header),
		Body:       http.NoBody,
		Host:       fixed[hsHost],
		RemoteAddr: fixed[hsRemote],
		RequestURI: fixed[hsURI],
		TLS:        tlsState,
	}
	r.ProtoMajor, r.ProtoMinor, _ = http.ParseHTTPVersion(r.Proto) // 0.0 for a made-up protocol, as net/http leaves it
	for len(h) > 0 {
		var k, v string
		k, h = h.next()
		v, h = h.next()
		r.Header[k] = append(r.Header[k], v)
	}
	return r
}
