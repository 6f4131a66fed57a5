package nemesis

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/durasock/durasock/bus"
	"github.com/durasock/durasock/bus/redisbus"
	"github.com/durasock/durasock/emitter"
)

// emitterNodeID is the origin id of the harness's emitter.
const emitterNodeID = "emitter"

// emitterRun is the write-only emitter (package emitter) that the harness
// process runs, as an application outside the cluster would: one bus, one
// origin, with emitter publishers sharing it. It appears in the history as an
// instance of its own (slot -1) so that the checker accounts its events, its
// counted drops and the gaps receivers report about it like a node's.
type emitterRun struct {
	bus  *bus.Reliable
	em   *emitter.Emitter
	hist *instHist
}

func (r *Run) startEmitter(ctx context.Context) (*emitterRun, error) {
	r.mu.Lock()
	hist := &instHist{Instance: len(r.hist.Instances), Slot: -1, NodeID: emitterNodeID, PID: os.Getpid(), Start: r.clk.now()}
	r.hist.Instances = append(r.hist.Instances, hist)
	r.mu.Unlock()
	url := r.redisURL(0)
	if r.redis != nil {
		url = "redis://" + r.redis.Addr() // its own link, outside the node proxies' faults
	}
	b, err := redisbus.Open(ctx, url, &redisbus.Options{
		Prefix:       streamPrefix,
		BlockTimeout: time.Second,
		DialTimeout:  time.Second,
		WriteTimeout: time.Second,
		WaitReplicas: r.cfg.WaitReplicas,
		Bus: bus.Config{
			NodeID:  emitterNodeID,
			Backoff: bus.BackoffConfig{Base: 50 * time.Millisecond, Cap: time.Second},
			Logger:  quietLogger(),
			OnDrop: func(d bus.Drop) {
				hist.mu.Lock()
				hist.Drops = append(hist.Drops, report{Kind: "drop", Origin: d.Origin, Reason: string(d.Reason), Count: d.Count})
				hist.mu.Unlock()
			},
			OnStateChange: func(s bus.Status) {
				hist.mu.Lock()
				hist.States = append(hist.States, stateAt{At: r.clk.now(), State: s.State.String(), Err: s.LastError})
				hist.mu.Unlock()
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("nemesis: emitter bus: %w", err)
	}
	return &emitterRun{bus: b, em: emitter.New(b), hist: hist}, nil
}

func (e *emitterRun) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return e.bus.Close(ctx)
}

// emitterPub publishes numbered events of one namespace through the emitter,
// at its share of the rate, alternating rooms. An event is accepted when Emit
// returns nil (it is in the emitter's outbox).
type emitterPub struct {
	r     *Run
	e     *emitterRun
	hist  *pubHist
	every float64
	stop  chan struct{}
	once  sync.Once
}

func (p *emitterPub) halt() { p.once.Do(func() { close(p.stop) }) }

func (p *emitterPub) loop() {
	defer p.r.wg.Done()
	p.hist.mu.Lock()
	p.hist.Sessions = append(p.hist.Sessions, pubSess{Instance: p.e.hist.Instance, NodeID: emitterNodeID, First: 1})
	p.hist.mu.Unlock()
	const tick = 10 * time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	credit := 0.0
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		for credit += p.every * tick.Seconds(); credit >= 1; credit-- {
			p.emit()
		}
	}
}

func (p *emitterPub) emit() {
	p.hist.mu.Lock()
	seq := uint64(len(p.hist.Status)) + 1
	p.hist.Status = append(p.hist.Status, statusPending)
	p.hist.Sent = append(p.hist.Sent, p.r.clk.now())
	p.hist.Sessions[0].Last = seq
	p.hist.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st := statusOK
	if err := p.e.em.Of(p.hist.Namespace).To(p.hist.room(seq)).Emit(ctx, dataEvent, p.hist.ID, seq); err != nil {
		st = statusRefused
	}
	p.hist.mu.Lock()
	p.hist.Status[seq-1] = st
	p.hist.mu.Unlock()
}

// quietLogger drops the emitter bus's logs: what matters reaches the history
// through its hooks.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
