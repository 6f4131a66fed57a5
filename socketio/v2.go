package socketio

import (
	"encoding/json"
	"errors"
	"net/url"

	"github.com/durasock/durasock/parser"
)

// Socket.IO 2.x clients speak Engine.IO v3 (engineio Options.AllowEIO3) and
// Socket.IO protocol v4, which differs from v5 as the reference server
// handles it:
//
//   - the client is connected to the main namespace without sending CONNECT,
//     and the CONNECT answer carries no data ("0", "0/chat,");
//   - a CONNECT to another namespace carries the client's query in the
//     namespace ("/chat?token=x"), which becomes the socket's auth payload
//     ({"token":"x"});
//   - a socket's id is the Engine.IO session id in the main namespace and
//     "/chat#<session id>" elsewhere;
//   - a connect middleware's refusal is sent as its data, or its message as
//     a JSON string (the client's "error" event);
//   - there is no connection state recovery.

// namespaceName is the namespace a CONNECT asks for: without the query a v2
// client puts in it.
func (c *conn) namespaceName(nsp string) string {
	if !c.v2 {
		return nsp
	}
	name, _ := v2Connect(nsp)
	return name
}

// v2Connect splits the namespace of a v2 CONNECT into its name and the auth
// payload made of its query.
func v2Connect(nsp string) (name string, auth json.RawMessage) {
	u, err := url.Parse(nsp)
	if err != nil || u.Path == "" {
		return nsp, nil
	}
	if u.RawQuery == "" {
		return u.Path, nil
	}
	q := make(map[string]string)
	for k, vs := range u.Query() {
		q[k] = vs[len(vs)-1]
	}
	b, err := json.Marshal(q)
	if err != nil {
		return u.Path, nil
	}
	return u.Path, b
}

// v2SocketID is the id of a v2 client's socket.
func v2SocketID(nsp, sid string) string {
	if nsp == "/" {
		return sid
	}
	return nsp + "#" + sid
}

// connectAnswer is the CONNECT answer of the connection's protocol.
func (c *conn) connectAnswer(nsp, id, pid string) *parser.Encoded {
	if c.v2 {
		return parser.Encode(&parser.Packet{Type: parser.Connect, Namespace: nsp})
	}
	return connectPacket(nsp, id, pid)
}

// refusal is the CONNECT_ERROR payload of a middleware's error.
func (c *conn) refusal(err error) json.RawMessage {
	if !c.v2 {
		return connectErrorPayload(err)
	}
	var ce *ConnectError
	if errors.As(err, &ce) && ce.Data != nil {
		if b, mErr := json.Marshal(ce.Data); mErr == nil {
			return b
		}
	}
	b, mErr := json.Marshal(err.Error())
	if mErr != nil {
		return json.RawMessage(`"connection refused"`)
	}
	return b
}
