package nemesis

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
)

// client is one end user: a namespace, rooms, a home node. It stays connected
// through faults: when its connection ends it connects again, to its home node
// if that one is usable, else to another. Every connection is a session of the
// history.
type client struct {
	r      *Run
	id     int
	ns     string
	rooms  []string
	home   int
	mute   bool          // never answers a broadcast with acknowledgements
	bounce chan struct{} // the nemesis asks for a disconnect and reconnect
	ready  chan struct{} // closed when the first session is ready

	mu        sync.Mutex
	sess      *sessHist
	stopCh    chan struct{}
	stopOnce  sync.Once
	readyOnce sync.Once
}

func (c *client) current() *sessHist {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sess
}

func (c *client) stopChan() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopCh == nil {
		c.stopCh = make(chan struct{})
	}
	return c.stopCh
}

// stop closes the client for good and waits for nothing: loop returns.
func (c *client) stop() {
	ch := c.stopChan()
	c.stopOnce.Do(func() { close(ch) })
}

func (c *client) loop() {
	defer c.r.clientWG.Done()
	stop := c.stopChan()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-stop:
			return
		case <-retry.C:
		}
		c.session(stop)
		retry.Reset(time.Duration(100+c.r.jitter(200)) * time.Millisecond)
	}
}

// session runs one connection until it ends or the client stops.
func (c *client) session(stop chan struct{}) {
	p := c.r.pickNode(c.home)
	if p == nil {
		return
	}
	s := &sessHist{Client: c.id, Namespace: c.ns, Rooms: c.rooms, Instance: p.hist.Instance}
	end := func(reason string) {
		s.mu.Lock()
		if s.End == 0 {
			s.End, s.Reason = c.r.clk.now(), reason
		}
		s.mu.Unlock()
	}
	var cost, debt time.Duration
	if c.r.cfg.ClientMaxRate > 0 {
		cost = time.Second / time.Duration(c.r.cfg.ClientMaxRate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinTimeout)
	defer cancel()
	conn, err := sioclient.Dial(ctx, "http://"+p.addr+"/socket.io/", &sioclient.Options{
		Namespace:    c.ns,
		WriteTimeout: 2 * time.Second,
		AckTimeout:   10 * time.Second,
		OnEvent: func(e *sioclient.Event) {
			if cost > 0 {
				// The handler's cost, paid in sleeps of at least 2 ms.
				if debt += cost; debt >= 2*time.Millisecond {
					time.Sleep(debt)
					debt = 0
				}
			}
			if e.HasAck() && !c.mute {
				ev := *e // acked from another goroutine: OnEvent must not block
				go func() {
					actx, acancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer acancel()
					// A failed ack shows on the node as a missing reply only.
					_ = ev.Ack(actx, "ok")
				}()
			}
			var pub int
			var seq uint64
			if e.Name != dataEvent || e.Bind(&pub, &seq) != nil {
				s.mu.Lock()
				s.Bad++
				s.mu.Unlock()
				return
			}
			s.mu.Lock()
			s.Got = append(s.Got, recv{Pub: pub, Seq: seq})
			s.mu.Unlock()
		},
	})
	if err != nil {
		// No session: the node was going away or not listening yet.
		return
	}
	c.r.mu.Lock()
	s.ID = c.r.nextSess
	c.r.nextSess++
	c.r.hist.Sessions = append(c.r.hist.Sessions, s)
	c.r.mu.Unlock()
	args := make([]any, len(c.rooms))
	for i, rm := range c.rooms {
		args[i] = rm
	}
	res, err := join(ctx, conn, args)
	// With interest routing a node answers that the join is not routed yet
	// when another node has not applied it in time (one frozen, or Redis
	// down): the client asks again on the same connection, as an
	// application waiting for its join would; it is not ready meanwhile.
	for err == nil && strings.HasPrefix(res, notRoutedPrefix) {
		select {
		case <-stop:
			end(reasonClosed)
			_ = conn.Close()
			return
		case <-c.bounce:
			end(reasonBounced)
			_ = conn.Close()
			return
		case <-conn.Done():
			end(conn.Err().Error())
			return
		default:
		}
		jctx, jcancel := context.WithTimeout(context.Background(), joinTimeout)
		res, err = join(jctx, conn, args)
		jcancel()
	}
	if err != nil || res != "ok" {
		end("join: " + errors.Join(err, errors.New(res)).Error())
		_ = conn.Close()
		return
	}
	s.mu.Lock()
	s.Ready = c.r.clk.now()
	s.mu.Unlock()
	c.mu.Lock()
	c.sess = s
	c.mu.Unlock()
	c.readyOnce.Do(func() { close(c.ready) })
	select {
	case <-conn.Done():
		end(conn.Err().Error())
	case <-stop:
		end(reasonClosed)
		_ = conn.Close()
	case <-c.bounce:
		end(reasonBounced)
		_ = conn.Close()
	}
}

// joinTimeout bounds a Go client's join (the first one also covers its dial).
const joinTimeout = 5 * time.Second

// join asks the node to join the client's rooms and returns its answer.
func join(ctx context.Context, conn *sioclient.Client, rooms []any) (string, error) {
	ack, err := conn.EmitWithAck(ctx, joinEvent, rooms...)
	if err != nil {
		return "", err
	}
	var res string
	err = ack.Bind(&res)
	return res, err
}

// Reasons a session ended that the harness chose.
const (
	reasonClosed  = "closed"  // the run finished
	reasonBounced = "bounced" // the nemesis made the client reconnect
)

func (s *sessHist) open() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.End == 0 && s.Ready != 0
}

// publisher emits numbered events from one namespace through its home node, at
// its share of the rate, alternating between the rooms. It follows its home
// node through restarts (a new session per process); while its home node is
// unusable it waits.
type publisher struct {
	r     *Run
	home  int
	hist  *pubHist
	every float64      // events per second
	tail  bool         // stops for good at the first nemesis step
	pad   string       // the payload of every event
	big   atomic.Int64 // when not 0, the next event carries a payload of this many bytes
	stop  chan struct{}
	once  sync.Once
}

func (p *publisher) halt() { p.once.Do(func() { close(p.stop) }) }

func (p *publisher) pending() int {
	p.hist.mu.Lock()
	defer p.hist.mu.Unlock()
	n := 0
	for _, s := range p.hist.Status {
		if s == statusPending {
			n++
		}
	}
	return n
}

func (p *publisher) loop() {
	defer p.r.wg.Done()
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-retry.C:
		}
		p.session()
		retry.Reset(200 * time.Millisecond)
	}
}

func (p *publisher) session() {
	n := p.r.current(p.home)
	if n == nil || !n.usable() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	conn, err := sioclient.Dial(ctx, "http://"+n.addr+"/socket.io/", &sioclient.Options{
		Namespace:      p.hist.Namespace,
		WriteTimeout:   2 * time.Second,
		AckTimeout:     10 * time.Second,
		MaxPendingAcks: 1 << 14,
	})
	cancel()
	if err != nil {
		return
	}
	defer conn.Close()
	p.hist.mu.Lock()
	first := uint64(len(p.hist.Status)) + 1
	p.hist.Sessions = append(p.hist.Sessions, pubSess{Instance: n.hist.Instance, NodeID: n.hist.NodeID, First: first, Last: first - 1})
	si := len(p.hist.Sessions) - 1
	p.hist.mu.Unlock()

	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	credit := 0.0
	for {
		select {
		case <-p.stop:
			return
		case <-conn.Done():
			return
		case <-t.C:
		}
		credit += p.every * tick.Seconds()
		for ; credit >= 1; credit-- {
			if !p.emit(conn, si) {
				credit = 0
				break
			}
		}
	}
}

func (p *publisher) args(seq uint64) []any {
	if len(p.pad) != p.r.cfg.PayloadBytes {
		p.pad = strings.Repeat("x", p.r.cfg.PayloadBytes)
	}
	pad := p.pad
	if n := p.big.Swap(0); n > 0 {
		pad = strings.Repeat("y", int(n))
	}
	args := []any{p.hist.room(seq), p.hist.ID, seq, pad}
	if n := p.r.cfg.AckEvery; n > 0 && seq%uint64(n) == 0 {
		args = append(args, true)
	}
	return args
}

// emit sends the next event (two with AckPairs); false when the connection
// cannot take it.
func (p *publisher) emit(conn *sioclient.Client, si int) bool {
	n := uint64(1)
	if p.r.cfg.AckPairs {
		n = 2
	}
	p.hist.mu.Lock()
	seq := uint64(len(p.hist.Status)) + 1
	now := p.r.clk.now()
	for range n {
		p.hist.Status = append(p.hist.Status, statusPending)
		p.hist.Sent = append(p.hist.Sent, now)
	}
	p.hist.Sessions[si].Last = seq + n - 1
	p.hist.mu.Unlock()
	set := func(st uint8) {
		p.hist.mu.Lock()
		for i := range n {
			p.hist.Status[seq-1+i] = st
		}
		p.hist.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.r.cfg.PublishTimeout)
	defer cancel()
	args := p.args(seq)
	if n == 2 {
		// [room, publisher, seq, payload, false, room of seq+1]: seq plain,
		// seq+1 with acknowledgements right after it.
		args = append(args[:4], false, p.hist.room(seq+1))
	}
	err := conn.EmitAck(ctx, publishEvent, func(a sioclient.Ack, err error) {
		if err != nil {
			set(statusUnknown)
			return
		}
		var res string
		switch berr := a.Bind(&res); {
		case berr == nil && strings.HasPrefix(res, unknownPrefix):
			set(statusUnknown) // the node cannot tell whether it was delivered
		case berr != nil || res != "ok":
			set(statusRefused)
		default:
			set(statusOK)
		}
	}, args...)
	if err != nil {
		set(statusUnknown)
		return false
	}
	return true
}
