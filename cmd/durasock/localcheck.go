package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/durasock/durasock/internal/sioclient"
)

// The delivery checker of `durasock cluster`: it makes the "nothing lost" of
// the panel a measurement. A publisher emits numbered ticks through the HTTP
// emit API of a ready node (in turn), and one Socket.IO client per node, in the
// demo room "ticker", checks that every tick accepted after it joined arrives
// there once: "waiting" counts the accepted ticks that have not arrived yet (it
// grows during a Redis outage on the nodes cut off from the publisher, and must
// return to 0), "duplicates" the ticks that arrived twice.

// checkRoom is the demo room the checker's clients join.
const checkRoom = "ticker"

// Tick states per subscriber.
const (
	tickExpected = 1 + iota // accepted, not arrived
	tickReceived            // accepted and arrived
	tickEarly               // arrived before its 202 reached the publisher
)

type tickChecker struct {
	lc    *localCluster
	token string
	rate  int // ticks per second; 0: off

	mu       sync.Mutex
	seq      uint64
	accepted uint64
	refused  uint64
	subs     map[string]*tickSub // by node name
}

type tickSub struct {
	connected  bool
	baseline   uint64 // ticks from here on are expected
	state      map[uint64]uint8
	received   uint64
	waiting    int
	duplicates uint64
	joins      int
}

func newTickChecker(lc *localCluster, rate int) *tickChecker {
	return &tickChecker{lc: lc, token: rand.Text(), rate: rate, subs: map[string]*tickSub{}}
}

// run publishes ticks and keeps a subscriber on every node until ctx is done.
func (c *tickChecker) run(ctx context.Context) {
	if c.rate <= 0 {
		return
	}
	var wg sync.WaitGroup
	started := map[string]bool{}
	every := time.NewTicker(time.Second / time.Duration(c.rate))
	defer every.Stop()
	for {
		for _, n := range c.lc.nodeList() {
			if !started[n.name] {
				started[n.name] = true
				s := &tickSub{}
				c.mu.Lock()
				c.subs[n.name] = s
				c.mu.Unlock()
				wg.Go(func() { c.subscribe(ctx, n, s) })
			}
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-every.C:
		}
		wg.Go(func() { c.publish(ctx) })
	}
}

// publish emits one tick through a ready node.
func (c *tickChecker) publish(ctx context.Context) {
	n := c.lc.pick("")
	c.mu.Lock()
	c.seq++
	seq := c.seq
	c.mu.Unlock()
	if n == nil {
		c.refuse()
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	body := fmt.Sprintf(`{"event":"tick","args":[{"seq":%d}],"rooms":[%q]}`, seq, chatRoomPrefix+checkRoom)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.addr+"/api/emit", bytes.NewReader([]byte(body)))
	if err != nil {
		c.refuse()
		return
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.refuse()
		return
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.refuse()
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.accepted++
	for _, s := range c.subs {
		if !s.connected || seq < s.baseline {
			continue
		}
		switch s.state[seq] {
		case tickEarly:
			s.state[seq] = tickReceived
			s.received++
		case 0:
			s.state[seq] = tickExpected
			s.waiting++
		}
	}
}

func (c *tickChecker) refuse() {
	c.mu.Lock()
	c.refused++
	c.mu.Unlock()
}

// subscribe keeps a client on node n in the ticker room, reconnecting while
// the node runs, until ctx is done.
func (c *tickChecker) subscribe(ctx context.Context, n *nodeProc, s *tickSub) {
	for {
		if st, _ := n.procState(); st == procRunning {
			c.session(ctx, n, s)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// session is one connection of the subscriber on n: ticks accepted from its
// join on are expected to arrive; what was waiting when it broke is forgotten
// (a client that reconnects without recovery misses what was sent meanwhile).
func (c *tickChecker) session(ctx context.Context, n *nodeProc, s *tickSub) {
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cl, err := sioclient.Dial(dctx, "http://"+n.addr+"/socket.io/", &sioclient.Options{OnEvent: func(e *sioclient.Event) {
		if e.Name != "tick" {
			return
		}
		var t struct {
			Seq uint64 `json:"seq"`
		}
		if e.Bind(&t) != nil {
			return
		}
		c.received(s, t.Seq)
	}})
	if err != nil {
		return
	}
	defer cl.Close()
	if _, err := cl.EmitWithAck(dctx, "join", joinMsg{Room: checkRoom, Name: "checker", Page: "checker-" + n.name}); err != nil {
		return
	}
	c.mu.Lock()
	s.connected, s.baseline, s.state, s.waiting = true, c.seq+1, map[uint64]uint8{}, 0
	s.joins++
	c.mu.Unlock()
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
		case <-cl.Done():
		case <-prune.C:
			c.prune(s)
			continue
		}
		break
	}
	c.mu.Lock()
	s.connected, s.state, s.waiting = false, nil, 0
	c.mu.Unlock()
}

func (c *tickChecker) received(s *tickSub, seq uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.connected || seq < s.baseline {
		return
	}
	switch s.state[seq] {
	case 0:
		s.state[seq] = tickEarly
	case tickExpected:
		s.state[seq] = tickReceived
		s.waiting--
		s.received++
	default:
		s.duplicates++
	}
}

// prune forgets arrived ticks older than ten minutes of ticks (a duplicate of
// one of those would go unseen).
func (c *tickChecker) prune(s *tickSub) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := uint64(c.rate) * 600
	for seq, st := range s.state {
		if st != tickExpected && seq+keep < c.seq {
			delete(s.state, seq)
		}
	}
}

// checkView is the checker as the panel shows it.
type checkView struct {
	Rate     int                      `json:"rate"`
	Accepted uint64                   `json:"accepted"`
	Refused  uint64                   `json:"refused"`
	Nodes    map[string]checkNodeView `json:"nodes"`
}

type checkNodeView struct {
	Connected  bool   `json:"connected"`
	Received   uint64 `json:"received"`
	Waiting    int    `json:"waiting"`
	Duplicates uint64 `json:"duplicates"`
	Joins      int    `json:"joins"`
}

func (c *tickChecker) view() checkView {
	c.mu.Lock()
	defer c.mu.Unlock()
	v := checkView{Rate: c.rate, Accepted: c.accepted, Refused: c.refused, Nodes: map[string]checkNodeView{}}
	for name, s := range c.subs {
		v.Nodes[name] = checkNodeView{Connected: s.connected, Received: s.received, Waiting: s.waiting, Duplicates: s.duplicates, Joins: s.joins}
	}
	return v
}
