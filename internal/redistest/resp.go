package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// ReplyError is an error reply from Redis ("-ERR ...", "-NOAUTH ...", "-LOADING ...").
// Do returns it as the error; inside an array reply it appears as an element.
type ReplyError string

func (e ReplyError) Error() string { return string(e) }

const (
	defaultOpTimeout = 10 * time.Second
	maxLine          = 64 << 10
	maxBulk          = 64 << 20
	maxElems         = 1 << 20
	maxDepth         = 32
)

// respConn is a minimal RESP2/RESP3 client for admin commands against servers this
// package started. One command at a time; not safe for concurrent use.
type respConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// dialRESP connects to addr (over TLS when tlsConf is not nil) and authenticates with
// auth (nil, [password] or [user, password]).
func dialRESP(ctx context.Context, addr string, tlsConf *tls.Config, auth []string) (*respConn, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultOpTimeout)
		defer cancel()
	}
	var d net.Dialer
	var c net.Conn
	var err error
	if tlsConf != nil {
		td := tls.Dialer{NetDialer: &d, Config: tlsConf}
		c, err = td.DialContext(ctx, "tcp", addr)
	} else {
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("redistest: dial %s: %w", addr, err)
	}
	rc := &respConn{c: c, r: bufio.NewReaderSize(c, maxLine), w: bufio.NewWriter(c)}
	if len(auth) > 0 {
		args := append([]string{"AUTH"}, auth...)
		if _, err := rc.do(ctx, args...); err != nil {
			_ = rc.close()
			return nil, fmt.Errorf("redistest: auth %s: %w", addr, err)
		}
	}
	return rc, nil
}

func (rc *respConn) close() error { return rc.c.Close() }

// do sends one command and reads its reply. An error reply is returned as a ReplyError.
func (rc *respConn) do(ctx context.Context, args ...string) (any, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("redistest: empty command")
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(defaultOpTimeout)
	}
	if err := rc.c.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("redistest: set deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		_ = rc.c.SetDeadline(time.Unix(1, 0))
	})
	defer stop()
	if err := writeCommand(rc.w, args); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("redistest: write %s: %w", args[0], err))
	}
	v, err := readReply(rc.r, 0)
	if err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("redistest: read reply to %s: %w", args[0], err))
	}
	if e, ok := v.(ReplyError); ok {
		return nil, e
	}
	return v, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", ctx.Err(), err)
	}
	return err
}

func writeCommand(w *bufio.Writer, args []string) error {
	w.WriteString("*")
	w.WriteString(strconv.Itoa(len(args)))
	w.WriteString("\r\n")
	for _, a := range args {
		w.WriteString("$")
		w.WriteString(strconv.Itoa(len(a)))
		w.WriteString("\r\n")
		w.WriteString(a)
		w.WriteString("\r\n")
	}
	return w.Flush()
}

// readLine returns one line without its CRLF.
func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line longer than %d bytes", ErrProtocol, maxLine)
		}
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: bad line %q", ErrProtocol, line)
	}
	return line[:len(line)-2], nil
}

func parseLen(b []byte, limit int) (int, error) {
	n, err := strconv.Atoi(string(b))
	if err != nil || n < -1 || n > limit {
		return 0, fmt.Errorf("%w: bad length %q", ErrProtocol, b)
	}
	return n, nil
}

// readReply decodes one reply. Strings (simple, bulk, verbatim, big number) become
// string, integers int64, doubles float64, booleans bool, nulls nil, arrays, sets, maps
// (flattened key, value, ...) and pushes []any, error replies ReplyError.
func readReply(r *bufio.Reader, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("%w: nesting deeper than %d", ErrProtocol, maxDepth)
	}
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	body := line[1:]
	switch line[0] {
	case '+', '(':
		return string(body), nil
	case '-', '!':
		if line[0] == '!' {
			s, err := readBulk(r, body)
			if err != nil {
				return nil, err
			}
			str, ok := s.(string)
			if !ok {
				return nil, fmt.Errorf("%w: null blob error", ErrProtocol)
			}
			return ReplyError(str), nil
		}
		return ReplyError(body), nil
	case ':':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: bad integer %q", ErrProtocol, body)
		}
		return n, nil
	case ',':
		f, err := strconv.ParseFloat(string(body), 64)
		if err != nil {
			return nil, fmt.Errorf("%w: bad double %q", ErrProtocol, body)
		}
		return f, nil
	case '#':
		switch string(body) {
		case "t":
			return true, nil
		case "f":
			return false, nil
		}
		return nil, fmt.Errorf("%w: bad boolean %q", ErrProtocol, body)
	case '_':
		return nil, nil
	case '$', '=':
		s, err := readBulk(r, body)
		if err != nil {
			return nil, err
		}
		if str, ok := s.(string); ok && line[0] == '=' && len(str) >= 4 {
			return str[4:], nil // drop the "txt:" format prefix
		}
		return s, nil
	case '*', '~', '>', '%', '|':
		n, err := parseLen(body, maxElems)
		if err != nil {
			return nil, err
		}
		if n == -1 {
			return nil, nil
		}
		if line[0] == '%' || line[0] == '|' {
			if n > maxElems/2 {
				return nil, fmt.Errorf("%w: map too large", ErrProtocol)
			}
			n *= 2
		}
		out := make([]any, 0, min(n, 1024))
		for range n {
			v, err := readReply(r, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		if line[0] == '|' { // attributes precede the real reply
			return readReply(r, depth)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: unknown reply type %q", ErrProtocol, line[0])
}

func readBulk(r *bufio.Reader, lenField []byte) (any, error) {
	n, err := parseLen(lenField, maxBulk)
	if err != nil {
		return nil, err
	}
	if n == -1 {
		return nil, nil
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if buf[n] != '\r' || buf[n+1] != '\n' {
		return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", ErrProtocol)
	}
	return string(buf[:n]), nil
}
