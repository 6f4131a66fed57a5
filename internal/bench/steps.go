package bench

import (
	"context"
	"errors"
	"time"
)

// runEach runs one for each item in turn and returns all their results.
// A failed run does not stop the next (its results say why), a done ctx
// does; the errors are joined.
func runEach[T, R any](ctx context.Context, items []T, one func(T) ([]R, error)) ([]R, error) {
	var (
		out  []R
		errs []error
	)
	for _, it := range items {
		rs, err := one(it)
		out = append(out, rs...)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return out, errors.Join(errs...)
}

// subscribeAll connects n receiving clients, client i to node node(i).
func (e *env) subscribeAll(ctx context.Context, n int, node func(i int) int) error {
	for i := range n {
		if err := e.subscribe(ctx, node(i), false); err != nil {
			return err
		}
	}
	return nil
}

// publishers connects n publishers, publisher i to node node(i).
func (e *env) publishers(ctx context.Context, n int, node func(i int) int) ([]publisher, error) {
	pubs := make([]publisher, n)
	for i := range pubs {
		var err error
		if pubs[i], err = e.publisher(ctx, node(i)); err != nil {
			return nil, err
		}
	}
	return pubs, nil
}

// pacedAt gives each publisher of pubs its share of rate, with event ids
// from id on.
func (e *env) pacedAt(pubs []publisher, id int, rate float64, size int) []*paced {
	ps := make([]*paced, len(pubs))
	for k, p := range pubs {
		ps[k] = &paced{id: id + k, pub: p, rate: rate / float64(len(pubs)), size: size, base: e.base}
	}
	return ps
}

// step is one measured run of paced publishers.
type step struct {
	ps      []*paced
	start   int64              // nanoseconds since e.base
	elapsed float64            // seconds, the drain included
	cpu     map[string]float64 // CPU cores of every process during the step
}

// runStep runs ps for d, waits until every receiver has what it should get
// (or drain passes), and measures the CPU of every process meanwhile. A
// client that stopped fails the step.
func (e *env) runStep(ctx context.Context, ps []*paced, d, drain time.Duration) (step, error) {
	s := step{ps: ps, start: int64(time.Since(e.base))}
	meter := newCPUMeter(e)
	if err := runAll(ctx, ps, d); err != nil {
		return s, err
	}
	e.drain(ctx, ps, drain)
	s.elapsed = time.Duration(int64(time.Since(e.base)) - s.start).Seconds()
	s.cpu = meter.shares(s.elapsed)
	return s, e.clientErr()
}

// rateSteps is a scenario that runs its publishers at each rate in turn.
type rateSteps struct {
	Transport   string
	Rates       []float64
	Duration    time.Duration
	Drain       time.Duration
	PayloadSize int
	Subscribers int
	// Label begins the log line of each step.
	Label string
	Logf  func(format string, args ...any)
}

// runRates runs pubs (event ids from id on) at each rate of s in turn and
// returns one result per step. Deliveries, losses and latencies are tallied
// once every step ran and every client stopped; on an error the results so
// far come without them. afterStep, when not nil, completes a step's result
// right after the step, while the nodes still run.
func (e *env) runRates(ctx context.Context, s rateSteps, pubs []publisher, id int, afterStep func(*BroadcastResult)) ([]BroadcastResult, error) {
	var (
		out   []BroadcastResult
		steps []step
	)
	for _, rate := range s.Rates {
		ps := e.pacedAt(pubs, id, rate, s.PayloadSize)
		id += len(pubs)
		s.Logf("%s, %.0f events/s for %s", s.Label, rate, s.Duration)
		st, err := e.runStep(ctx, ps, s.Duration, s.Drain)
		if err != nil {
			return out, err
		}
		res := BroadcastResult{Transport: s.Transport, Server: e.nodes[0].Server, TargetRate: rate, Subscribers: s.Subscribers, CPU: st.cpu}
		for _, p := range ps {
			res.Sent += p.sent
			res.Rejected += p.rejected
		}
		if afterStep != nil {
			afterStep(&res)
		}
		out = append(out, res)
		steps = append(steps, st)
	}
	// Receivers are read once their clients have stopped.
	e.closeClients()
	for i, st := range steps {
		t := e.tallyOf(e.recv, st.ps, nil)
		r := &out[i]
		if span := time.Duration(t.lastRecv - st.start).Seconds(); span > 0 {
			r.Deliveries = float64(t.unique) / span
			r.PerSubscriber = r.Deliveries / float64(s.Subscribers)
		}
		r.Lost, r.Duplicated, r.Reordered = t.lost, t.dups, t.reordered
		r.P50ms, r.P99ms, r.Maxms = ms(t.hist.Quantile(0.50)), ms(t.hist.Quantile(0.99)), ms(t.hist.Max())
	}
	return out, nil
}
