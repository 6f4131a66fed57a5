package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

type proxyMode int

const (
	modeForward proxyMode = iota
	modeSlow
	modeBlackhole
	modeCut
	modeBlackholeConns // hold the connections that sent p.pattern
	modeBlackholeUp    // hold bytes to the server only
	modeBlackholeDown  // hold bytes to the client only
)

func (m proxyMode) String() string {
	return [...]string{"forward", "slow", "blackhole", "cut", "blackhole-conns", "blackhole-up", "blackhole-down"}[m]
}

const proxyDialTimeout = 5 * time.Second

// Proxy is a TCP proxy on 127.0.0.1 between a client and one target address, with
// switches that simulate network faults. It forwards bytes unchanged in both
// directions, so it works for RESP and for TLS alike. Methods are safe for concurrent
// use; Close stops every goroutine it started.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    proxyMode
	delay   time.Duration
	pattern []byte        // modeBlackholeConns: the command that marks a connection
	changed chan struct{} // closed and replaced on every mode change
	conns   map[*proxyConn]struct{}
	closed  bool
	accepts int

	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type proxyConn struct {
	client net.Conn
	cancel context.CancelFunc // aborts the dial to the target
	once   sync.Once
	done   chan struct{}

	mu      sync.Mutex
	server  net.Conn
	matched bool // it sent the pattern of a BlackholeConns
}

func (pc *proxyConn) close() {
	pc.once.Do(func() {
		close(pc.done)
		pc.cancel()
		_ = pc.client.Close()
		pc.mu.Lock()
		if pc.server != nil {
			_ = pc.server.Close()
		}
		pc.mu.Unlock()
	})
}

// NewProxy starts a proxy to target ("127.0.0.1:port") and closes it when the test
// ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := StartProxy(target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartProxy starts a proxy to target outside a test. Close it when done.
func StartProxy(target string) (*Proxy, error) {
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("redistest: proxy target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("redistest: proxy listen: %w", err)
	}
	p := &Proxy{
		target:  target,
		ln:      ln,
		changed: make(chan struct{}),
		conns:   make(map[*proxyConn]struct{}),
		done:    make(chan struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// Addr is the address clients connect to instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target is the proxied address.
func (p *Proxy) Target() string { return p.target }

// Conns returns the number of open proxied connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Accepted returns how many connections the proxy accepted, including refused ones.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepts
}

// Cut closes every current connection and resets new ones at once (the client sees a
// connection reset or EOF) until Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.setModeLocked(modeCut, 0)
	conns := p.takeConnsLocked()
	p.mu.Unlock()
	for _, pc := range conns {
		pc.close()
	}
}

// Blackhole keeps connections open but stops forwarding bytes in both directions, as
// a network partition does: writes succeed at first, replies never come. New
// connections are accepted and get nothing either. Restore delivers what was held
// back, like TCP after a partition heals.
func (p *Proxy) Blackhole() {
	p.mu.Lock()
	p.setModeLocked(modeBlackhole, 0)
	p.mu.Unlock()
}

// BlackholeConns holds, in both directions, every connection that sends command
// (a Redis command name such as "XREAD"; matched in upper or lower case within a
// chunk the client writes), from the chunk that carries it on; other connections
// keep forwarding. It makes asymmetric partitions: a node whose reading
// connection is dead while its publishing connection works, or the reverse.
// Restore delivers what was held.
func (p *Proxy) BlackholeConns(command string) {
	p.mu.Lock()
	p.setModeLocked(modeBlackholeConns, 0)
	p.pattern = []byte(command)
	for pc := range p.conns {
		pc.mu.Lock()
		pc.matched = false
		pc.mu.Unlock()
	}
	p.mu.Unlock()
}

// BlackholeOneWay holds the bytes of one direction only, on every connection:
// toServer true loses the requests (the server sees nothing), false the replies
// (the server executes every command; the client hears nothing back). Restore
// delivers what was held.
func (p *Proxy) BlackholeOneWay(toServer bool) {
	p.mu.Lock()
	if toServer {
		p.setModeLocked(modeBlackholeUp, 0)
	} else {
		p.setModeLocked(modeBlackholeDown, 0)
	}
	p.mu.Unlock()
}

// Slow delays every chunk of bytes, in both directions, by d.
func (p *Proxy) Slow(d time.Duration) {
	p.mu.Lock()
	p.setModeLocked(modeSlow, d)
	p.mu.Unlock()
}

// Restore returns to plain forwarding.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.setModeLocked(modeForward, 0)
	p.mu.Unlock()
}

func (p *Proxy) setModeLocked(m proxyMode, d time.Duration) {
	p.mode, p.delay = m, d
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *Proxy) takeConnsLocked() []*proxyConn {
	out := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		out = append(out, pc)
	}
	clear(p.conns)
	return out
}

// Close stops the proxy and closes every connection. It is idempotent.
func (p *Proxy) Close() {
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		conns := p.takeConnsLocked()
		p.mu.Unlock()
		close(p.done)
		_ = p.ln.Close()
		for _, pc := range conns {
			pc.close()
		}
		p.wg.Wait()
	})
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off briefly, stop on Close.
			t := time.NewTimer(10 * time.Millisecond)
			select {
			case <-p.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		p.mu.Lock()
		p.accepts++
		if p.closed || p.mode == modeCut {
			p.mu.Unlock()
			resetConn(c)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), proxyDialTimeout)
		pc := &proxyConn{client: c, cancel: cancel, done: make(chan struct{})}
		p.conns[pc] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(ctx, pc)
	}
}

// resetConn closes c with an RST, the closest thing to a refused connection once the
// kernel has completed the handshake.
func resetConn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) serve(ctx context.Context, pc *proxyConn) {
	defer p.wg.Done()
	defer func() {
		pc.close()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	var d net.Dialer
	server, err := d.DialContext(ctx, "tcp", p.target)
	pc.cancel()
	if err != nil {
		resetConn(pc.client)
		return
	}
	pc.mu.Lock()
	pc.server = server
	pc.mu.Unlock()
	select {
	case <-pc.done: // cut or closed while dialing
		_ = server.Close()
		return
	default:
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.pump(pc, server, pc.client, true)
	}()
	p.pump(pc, pc.client, server, false)
}

// pump copies src to dst chunk by chunk, passing each chunk through the fault
// gate; up is the direction to the server.
func (p *Proxy) pump(pc *proxyConn, dst, src net.Conn, up bool) {
	defer pc.close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate(pc, up, buf[:n]) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// gate blocks a chunk according to the mode; false means drop the connection.
func (p *Proxy) gate(pc *proxyConn, up bool, chunk []byte) bool {
	for {
		p.mu.Lock()
		m, d, changed, pattern := p.mode, p.delay, p.changed, p.pattern
		p.mu.Unlock()
		hold := false
		switch m {
		case modeBlackholeConns:
			pc.mu.Lock()
			if up && !pc.matched && (bytes.Contains(chunk, bytes.ToUpper(pattern)) || bytes.Contains(chunk, bytes.ToLower(pattern))) {
				pc.matched = true
			}
			hold = pc.matched
			pc.mu.Unlock()
		case modeBlackholeUp:
			hold = up
		case modeBlackholeDown:
			hold = !up
		}
		if hold {
			m = modeBlackhole
		} else if m > modeCut {
			m = modeForward
		}
		switch m {
		case modeForward:
			return true
		case modeSlow:
			t := time.NewTimer(d)
			select {
			case <-t.C:
				return true
			case <-pc.done:
				t.Stop()
				return false
			}
		case modeBlackhole:
			select {
			case <-changed:
			case <-pc.done:
				return false
			}
		default:
			return false
		}
	}
}
