package sioclient

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/durasock/durasock/internal/jsonx"
)

// Defaults of Options.
const (
	DefaultEventBuffer    = 256
	DefaultReadLimit      = 1 << 20
	DefaultMaxPendingAcks = 1024
	DefaultAckTimeout     = 30 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
)

// Options configure Dial. The zero value (or nil) connects to the main namespace
// "/" without auth; every zero field means its default.
type Options struct {
	// Namespace to connect to; default "/".
	Namespace string
	// Auth is sent with CONNECT: a JSON object (a json.RawMessage is sent as is,
	// anything else is marshalled). nil sends no auth.
	Auth any
	// Header is added to the WebSocket handshake request.
	Header http.Header
	// HTTPClient performs the WebSocket handshake; default http.DefaultClient.
	HTTPClient *http.Client

	// OnEvent receives every EVENT on the read goroutine, in order. The Event and
	// its Data and Attachments are valid only during the call; copy what you keep.
	// A slow OnEvent slows reading; it must not block on the same Client's reads.
	OnEvent func(*Event)
	// EventBuffer is the capacity of Client.Events, used when OnEvent is nil
	// (default DefaultEventBuffer). A full channel stops reading.
	EventBuffer int
	// OnDisconnect is called once, on the read goroutine, when the client stops for
	// any reason (including Close), with the reason (ErrClosed after Close).
	OnDisconnect func(err error)

	// ReadLimit bounds one incoming WebSocket message (default DefaultReadLimit).
	ReadLimit int64
	// MaxPendingAcks bounds the acks waiting at once (default DefaultMaxPendingAcks).
	MaxPendingAcks int
	// AckTimeout bounds how long an EmitAck callback waits (default DefaultAckTimeout).
	AckTimeout time.Duration
	// WriteTimeout bounds writes the client makes on its own: pongs and the
	// DISCONNECT sent by Close (default DefaultWriteTimeout).
	WriteTimeout time.Duration
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.Namespace == "" {
		r.Namespace = "/"
	}
	if r.EventBuffer <= 0 {
		r.EventBuffer = DefaultEventBuffer
	}
	if r.ReadLimit <= 0 {
		r.ReadLimit = DefaultReadLimit
	}
	if r.MaxPendingAcks <= 0 {
		r.MaxPendingAcks = DefaultMaxPendingAcks
	}
	if r.AckTimeout <= 0 {
		r.AckTimeout = DefaultAckTimeout
	}
	if r.WriteTimeout <= 0 {
		r.WriteTimeout = DefaultWriteTimeout
	}
	return r
}

// Client is one Socket.IO connection to one namespace over WebSocket. Its methods
// are safe for concurrent use.
type Client struct {
	ws        *websocket.Conn
	opts      Options
	nspPrefix []byte // "" for "/", else "/name,"
	sid       string
	engineSID string
	pingWait  time.Duration // pingInterval + pingTimeout
	events    chan Event    // nil when OnEvent is set

	wmu chan struct{} // one writer at a time, acquired with a ctx

	mu      sync.Mutex
	acks    map[uint64]*pendingAck
	nextAck uint64
	stopped bool // no new acks: the client is stopping

	closing   chan struct{} // closed when the client starts stopping
	done      chan struct{} // closed when the read goroutine has exited
	stopOnce  sync.Once
	closeOnce sync.Once
	err       error // why it stopped; written before closing is closed

	pingTimer *time.Timer

	// Owned by the read goroutine.
	reader readerState
}

// Dial connects to a Socket.IO server. rawURL is the server's endpoint, e.g.
// "http://127.0.0.1:3000/socket.io/" (ws:// and wss:// work too; an empty path
// means "/socket.io/"). Dial returns once the namespace connected, or with the
// error that stopped it: ctx bounds the whole handshake, and a refusal by the
// server is a *ConnectError.
func Dial(ctx context.Context, rawURL string, opts *Options) (*Client, error) {
	o := opts.withDefaults()
	u, err := endpointURL(rawURL)
	if err != nil {
		return nil, err
	}
	var auth []byte
	if o.Auth != nil {
		switch a := o.Auth.(type) {
		case json.RawMessage:
			auth = a
		default:
			if auth, err = json.Marshal(a); err != nil {
				return nil, fmt.Errorf("%w: auth: %w", ErrInvalidArgument, err)
			}
		}
		if !json.Valid(auth) || jsonx.FirstByte(auth) != '{' {
			return nil, fmt.Errorf("%w: auth must be a JSON object", ErrInvalidArgument)
		}
	}
	ws, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      o.HTTPClient,
		HTTPHeader:      o.Header,
		CompressionMode: websocket.CompressionDisabled,
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("sioclient: dial %s: %w", u, err)
	}
	ws.SetReadLimit(o.ReadLimit)
	c := &Client{
		ws:      ws,
		opts:    o,
		wmu:     make(chan struct{}, 1),
		acks:    make(map[uint64]*pendingAck),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if o.Namespace != "/" {
		c.nspPrefix = append([]byte(o.Namespace), ',')
	}
	if o.OnEvent == nil {
		c.events = make(chan Event, o.EventBuffer)
	}
	if err := c.handshake(ctx, auth); err != nil {
		ws.CloseNow()
		return nil, err
	}
	c.pingTimer = time.AfterFunc(c.pingWait, func() { c.fail(ErrPingTimeout) })
	go c.readLoop()
	return c, nil
}

func endpointURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%w: url: %w", ErrInvalidArgument, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "ws"
	case "https", "wss":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("%w: url %q: scheme must be http, https, ws or wss", ErrInvalidArgument, raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%w: url %q has no host", ErrInvalidArgument, raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/socket.io/"
	}
	q := u.Query()
	q.Set("EIO", "4")
	q.Set("transport", "websocket")
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// openPacket is the Engine.IO v4 handshake.
type openPacket struct {
	SID          string `json:"sid"`
	PingInterval int64  `json:"pingInterval"`
	PingTimeout  int64  `json:"pingTimeout"`
	MaxPayload   int64  `json:"maxPayload"`
}

// parseOpen decodes an Engine.IO open packet ("0{...}").
func parseOpen(b []byte) (openPacket, error) {
	var op openPacket
	if len(b) < 2 || b[0] != '0' {
		return op, fmt.Errorf("%w: expected the Engine.IO open packet, got %.40q", ErrProtocol, b)
	}
	if err := json.Unmarshal(b[1:], &op); err != nil {
		return op, fmt.Errorf("%w: open packet: %w", ErrProtocol, err)
	}
	if op.SID == "" || op.PingInterval <= 0 || op.PingTimeout <= 0 {
		return op, fmt.Errorf("%w: open packet lacks sid, pingInterval or pingTimeout", ErrProtocol)
	}
	return op, nil
}

func (c *Client) handshake(ctx context.Context, auth []byte) error {
	typ, b, err := c.ws.Read(ctx)
	if err != nil {
		return fmt.Errorf("sioclient: reading the open packet: %w", err)
	}
	if typ != websocket.MessageText {
		return fmt.Errorf("%w: binary message before the open packet", ErrProtocol)
	}
	op, err := parseOpen(b)
	if err != nil {
		return err
	}
	c.engineSID = op.SID
	c.pingWait = time.Duration(op.PingInterval+op.PingTimeout) * time.Millisecond

	frame := append([]byte("40"), c.nspPrefix...)
	frame = append(frame, auth...)
	if err := c.ws.Write(ctx, websocket.MessageText, frame); err != nil {
		return fmt.Errorf("sioclient: sending CONNECT: %w", err)
	}
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("sioclient: waiting for CONNECT: %w", err)
		}
		if typ != websocket.MessageText || len(b) == 0 {
			return fmt.Errorf("%w: unexpected message while connecting", ErrProtocol)
		}
		switch b[0] {
		case '2': // ping
			if err := c.ws.Write(ctx, websocket.MessageText, pongFrame); err != nil {
				return fmt.Errorf("sioclient: pong: %w", err)
			}
			continue
		case '6': // noop
			continue
		case '1':
			return fmt.Errorf("%w: while connecting", ErrServerDisconnect)
		case '4':
		default:
			return fmt.Errorf("%w: unexpected Engine.IO packet %.40q while connecting", ErrProtocol, b)
		}
		sid, err := c.parseConnectReply(b[1:])
		if err != nil {
			return err
		}
		if sid == "" {
			continue // a packet of another namespace
		}
		c.sid = sid
		return nil
	}
}

// parseConnectReply decodes the server's answer to CONNECT: it returns the socket
// id, "" for a packet that is not for this namespace, or the refusal.
func (c *Client) parseConnectReply(b []byte) (string, error) {
	if len(b) < 1 || (b[0] != '0' && b[0] != '4') {
		return "", fmt.Errorf("%w: expected CONNECT or CONNECT_ERROR, got %.40q", ErrProtocol, b)
	}
	kind, rest := b[0], b[1:]
	nsp := "/"
	if len(rest) > 0 && rest[0] == '/' {
		i := strings.IndexByte(string(rest), ',')
		if i < 0 {
			nsp, rest = string(rest), nil
		} else {
			nsp, rest = string(rest[:i]), rest[i+1:]
		}
	}
	if nsp != c.opts.Namespace {
		return "", nil
	}
	if kind == '4' {
		ce := &ConnectError{}
		var body struct {
			Message string          `json:"message"`
			Data    json.RawMessage `json:"data"`
		}
		switch {
		case jsonx.FirstByte(rest) == '"':
			if err := json.Unmarshal(rest, &ce.Message); err != nil {
				return "", fmt.Errorf("%w: CONNECT_ERROR: %w", ErrProtocol, err)
			}
		case json.Unmarshal(rest, &body) == nil:
			ce.Message, ce.Data = body.Message, body.Data
		default:
			return "", fmt.Errorf("%w: CONNECT_ERROR payload %.60q", ErrProtocol, rest)
		}
		return "", ce
	}
	var body struct {
		SID string `json:"sid"`
	}
	if err := json.Unmarshal(rest, &body); err != nil || body.SID == "" {
		return "", fmt.Errorf("%w: CONNECT reply without sid: %.60q", ErrProtocol, rest)
	}
	return body.SID, nil
}

// ID is the socket id the server gave this client in the namespace.
func (c *Client) ID() string { return c.sid }

// EngineID is the Engine.IO session id.
func (c *Client) EngineID() string { return c.engineSID }

// Namespace is the namespace this client connected to.
func (c *Client) Namespace() string { return c.opts.Namespace }

// Events delivers incoming events when Options.OnEvent is nil (nil otherwise).
// It is closed when the client stops. Each Event owns its Data.
func (c *Client) Events() <-chan Event { return c.events }

// Done is closed when the client has stopped and its read goroutine has exited.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the client stopped (ErrClosed after Close), nil while it runs.
func (c *Client) Err() error {
	select {
	case <-c.closing:
		return c.err
	default:
		return nil
	}
}

// fail starts stopping the client for err; the first reason wins.
func (c *Client) fail(err error) {
	c.stopOnce.Do(func() {
		c.err = err
		close(c.closing)
		_ = c.ws.CloseNow() // unblocks the read goroutine and every writer
	})
}

// Close says goodbye to the server (DISCONNECT, then a WebSocket close) and waits
// for the read goroutine to exit. It is idempotent and returns nil; why the client
// stopped earlier, if it did, is in Err.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		select {
		case <-c.closing: // stopped already: nothing to say goodbye on
		default:
			ctx, cancel := context.WithTimeout(context.Background(), c.opts.WriteTimeout)
			if c.acquire(ctx) == nil {
				frame := append([]byte("41"), c.nspPrefix...)
				// The server may be gone already; the close below ends it either way.
				_ = c.ws.Write(ctx, websocket.MessageText, frame)
				c.release()
			}
			cancel()
		}
		c.stopOnce.Do(func() {
			c.err = ErrClosed
			close(c.closing)
		})
		// A close handshake the server does not answer ends at coder/websocket's own
		// timeout; CloseNow after it releases the connection in any case. Their
		// errors only say the connection was already gone.
		_ = c.ws.Close(websocket.StatusNormalClosure, "")
		_ = c.ws.CloseNow()
		<-c.done
	})
	return nil
}

func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.wmu <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.closing:
		return c.err
	}
}

func (c *Client) release() { <-c.wmu }

var pongFrame = []byte("3")
