package nemesis

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Verdict is what Check found in a history. Every count is over (publisher,
// client session) pairs: an event owed to three sessions and missed by all
// three counts three times.
type Verdict struct {
	Scenario string `json:"scenario"`
	Seed     int64  `json:"seed"`
	Steps    int    `json:"steps"`
	// Blunt counts the nemesis steps after which nothing changed: no bus left
	// Connected, no process started, no client connection ended within 5 s of
	// the step. A blunt step tested nothing (client-bounce steps never are).
	Blunt      int      `json:"blunt"`
	BluntSteps []string `json:"blunt_steps,omitempty"`
	// Exact makes losses that receivers reported as gaps fail too (beyond
	// what origins counted as drops): for scenarios where Redis loses nothing
	// it acknowledged (AOF always, WaitReplicas=1).
	Exact bool `json:"exact"`
	// NoRefusals makes every refused publish fail the run: for scenarios where
	// Redis takes writes throughout (a replica down), so that nothing may be
	// turned away.
	NoRefusals bool `json:"no_refusals,omitempty"`
	Sessions   int  `json:"sessions"`

	Sent     int `json:"sent"`     // publishes sent
	Accepted int `json:"accepted"` // acked "ok": delivered locally and accepted by the bus
	Refused  int `json:"refused"`  // acked with an error
	Unknown  int `json:"unknown"`  // no answer (node died, ack timeout)

	Owed      int `json:"owed"`      // (accepted event, session) pairs that must be delivered
	Delivered int `json:"delivered"` // of those, delivered

	Lost        int `json:"lost"`         // missing, not accounted for by any gap or drop
	LostDropped int `json:"lost_dropped"` // missing, within what the origin counted as drops (max age, overflow, a drain out of time)
	Accounted   int `json:"accounted"`    // missing, within what the receiver reported as gaps (beyond the origin's drops)
	CrashLost   int `json:"crash_lost"`   // missing everywhere remote; its origin was SIGKILLed after accepting it
	LocalLost   int `json:"local_lost"`   // missing on the origin's own node (local delivery, G1)

	Duplicates int `json:"duplicates"` // an event received twice by one session
	Reordered  int `json:"reordered"`  // an event received after a later one of the same publisher session
	Phantom    int `json:"phantom"`    // a refused or never-sent event received on another node

	// Official client sessions, the reconnects the server recovered into the
	// same session, and the sessions a reconnect did not recover.
	Official     int `json:"official,omitempty"`
	Recovered    int `json:"recovered,omitempty"`
	NotRecovered int `json:"not_recovered,omitempty"`

	Cuts       int      `json:"cuts"` // client disconnects no nemesis step explains
	CutReasons []string `json:"cut_reasons,omitempty"`

	// Late counts the requests of the nodes (broadcasts, broadcasts with
	// acknowledgements) that returned more than lateMargin past their timeout.
	Late int `json:"late,omitempty"`

	GapMessages int `json:"gap_messages"` // reported missing by receivers (all origins)
	Dropped     int `json:"dropped"`      // counted drops by origins

	// Resources is each node process's RSS and goroutines, first and last
	// sample (reported, not judged: timing and size belong to benchmarks).
	Resources []string `json:"resources,omitempty"`

	// ReportedEvidence names the first receiver that lost events and reported
	// them (shown when Exact fails).
	ReportedEvidence string `json:"reported_evidence,omitempty"`

	// Unordered: the scenario's publishers do not order their events
	// (AckAsync), so reorders are shown but do not fail it.
	Unordered bool `json:"unordered,omitempty"`

	// Err is what went wrong in the harness's waits (nodes never meshed
	// again, delivery never finished): a failure too.
	Err string `json:"err,omitempty"`

	// Evidence is the smallest slice of history showing each kind of failure.
	Evidence []string `json:"evidence,omitempty"`
}

// OK reports whether the history keeps the contract: nothing lost without a
// report, nothing duplicated or reordered, no unexplained client cut.
func (v *Verdict) OK() bool {
	return v.Err == "" && v.Lost == 0 && (!v.Exact || v.Accounted == 0) && (!v.NoRefusals || v.Refused == 0) && v.LocalLost == 0 && v.Duplicates == 0 && (v.Unordered || v.Reordered == 0) && v.Phantom == 0 && v.Cuts == 0 && v.Late == 0
}

// Failures names what failed, "" when OK.
func (v *Verdict) Failures() string {
	var f []string
	add := func(n int, what string) {
		if n > 0 {
			f = append(f, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(v.Lost, "lost")
	if v.Exact {
		add(v.Accounted, "lost and reported")
	}
	if v.NoRefusals {
		add(v.Refused, "refused")
	}
	add(v.LocalLost, "lost locally")
	add(v.Duplicates, "duplicated")
	if !v.Unordered {
		add(v.Reordered, "reordered")
	}
	add(v.Phantom, "phantom")
	add(v.Cuts, "clients cut")
	add(v.Late, "requests past their timeout")
	if v.Err != "" {
		f = append(f, v.Err)
	}
	return strings.Join(f, ", ")
}

// Table renders the verdict as a table of checks.
func (v *Verdict) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "verdict of %s, seed %d (%d nemesis steps, %d without a visible effect; %d client sessions)\n",
		v.Scenario, v.Seed, v.Steps, v.Blunt, v.Sessions)
	if len(v.BluntSteps) > 0 {
		fmt.Fprintf(&b, "  steps without a visible effect: %s\n", strings.Join(v.BluntSteps, "; "))
	}
	row := func(name string, n int, bad bool, note string) {
		mark := "ok"
		if bad {
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %-38s %10d  %-4s %s\n", name, n, mark, note)
	}
	row("publishes sent", v.Sent, v.NoRefusals && v.Refused > 0, fmt.Sprintf("accepted %d, refused %d, unknown %d", v.Accepted, v.Refused, v.Unknown))
	row("owed deliveries", v.Owed, false, fmt.Sprintf("delivered %d", v.Delivered))
	row("lost, unaccounted", v.Lost, v.Lost > 0, "no gap or drop reported for them")
	row("lost, origin counted a drop", v.LostDropped, false, "")
	row("lost, receiver reported a gap", v.Accounted, v.Exact && v.Accounted > 0, "")
	row("lost with a SIGKILLed origin", v.CrashLost, false, "accepted into a process that died (G9)")
	row("lost on the origin's own node (G1)", v.LocalLost, v.LocalLost > 0, "")
	row("duplicated", v.Duplicates, v.Duplicates > 0, "")
	row("reordered", v.Reordered, !v.Unordered && v.Reordered > 0, "")
	row("phantom (refused, delivered remotely)", v.Phantom, v.Phantom > 0, "")
	row("clients cut without a fault", v.Cuts, v.Cuts > 0, strings.Join(head(v.CutReasons, 3), "; "))
	if v.Official > 0 {
		row("official client sessions", v.Official, false, fmt.Sprintf("reconnects recovered %d, not recovered %d", v.Recovered, v.NotRecovered))
	}
	row("requests past their timeout", v.Late, v.Late > 0, fmt.Sprintf("returned over %v late", lateMargin))
	row("gap messages reported", v.GapMessages, false, "")
	row("drops counted", v.Dropped, false, "")
	for _, r := range v.Resources {
		b.WriteString("  resources: " + r + "\n")
	}
	if v.OK() {
		b.WriteString("  PASS\n")
	} else {
		fmt.Fprintf(&b, "  FAIL: %s\n", v.Failures())
		if v.Exact && v.Accounted > 0 {
			b.WriteString("  evidence: " + v.ReportedEvidence + "\n")
		}
		for _, e := range v.Evidence {
			b.WriteString("  evidence: " + strings.ReplaceAll(e, "\n", "\n    ") + "\n")
		}
	}
	return b.String()
}

func head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// pubIndex answers questions about the publishers of a history.
type pubIndex struct {
	pubs []*pubHist
}

func newPubIndex(pubs []*pubHist) *pubIndex { return &pubIndex{pubs: pubs} }

// snapshot copies a publisher's history under its lock.
func (p *pubHist) snapshot() (status []uint8, sent []int64, sessions []pubSess) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.Status), slices.Clone(p.Sent), slices.Clone(p.Sessions)
}

func (s *sessHist) snapshot() (ready, end int64, got []recv) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.Ready, s.End, slices.Clone(s.Got)
}

// missingFor returns the events owed to s that it has not received. With
// tailToo, events after the last one received from a publisher session count
// too (a session that is still open at the end is owed everything).
func (x *pubIndex) missingFor(s *sessHist, tailToo bool) []recv {
	ready, _, got := s.snapshot()
	if ready == 0 {
		return nil
	}
	have := make(map[recv]bool, len(got))
	byPub := map[int][]uint64{}
	for _, g := range got {
		have[g] = true
		byPub[g.Pub] = append(byPub[g.Pub], g.Seq)
	}
	for _, q := range byPub {
		slices.Sort(q)
	}
	var out []recv
	for _, p := range x.pubs {
		if p.Namespace != s.Namespace {
			continue
		}
		status, sent, sessions := p.snapshot()
		for _, ps := range sessions {
			last := ps.Last
			if !tailToo {
				// The last seq received from this publisher session.
				q := byPub[p.ID]
				i, _ := slices.BinarySearch(q, ps.Last+1)
				last = 0
				if i > 0 && q[i-1] >= ps.First {
					last = q[i-1]
				}
			}
			for seq := ps.First; seq <= last && seq <= uint64(len(status)); seq++ {
				if status[seq-1] != statusOK || sent[seq-1] <= ready || !slices.Contains(s.Rooms, p.room(seq)) {
					continue
				}
				if !have[recv{p.ID, seq}] {
					out = append(out, recv{p.ID, seq})
				}
			}
		}
	}
	return out
}

// stoppedDuring reports whether faults hold a SIGSTOP of the instance
// between from and to.
func stoppedDuring(faults []fault, from, to int64) bool {
	for _, f := range faults {
		if f.What == "stop" && f.At >= from && f.At <= to {
			return true
		}
	}
	return false
}

// Check checks a finished history.
func Check(h *History) *Verdict {
	v := &Verdict{Scenario: h.Scenario, Seed: h.Seed, Steps: len(h.Steps), Sessions: len(h.Sessions)}
	inst := h.Instances
	type pubData struct {
		status   []uint8
		sent     []int64
		sessions []pubSess
	}
	pubs := make([]pubData, len(h.Publishers))
	for i, p := range h.Publishers {
		st, se, ss := p.snapshot()
		pubs[i] = pubData{st, se, ss}
		v.Sent += len(st)
		for _, s := range st {
			switch s {
			case statusOK:
				v.Accepted++
			case statusRefused:
				v.Refused++
			default:
				v.Unknown++
			}
		}
	}
	// origin returns the publisher session of (pub, seq).
	origin := func(pub int, seq uint64) (pubSess, bool) {
		if pub < 0 || pub >= len(pubs) {
			return pubSess{}, false
		}
		for _, ps := range pubs[pub].sessions {
			if seq >= ps.First && seq <= ps.Last {
				return ps, true
			}
		}
		return pubSess{}, false
	}
	// Which events reached some node other than their origin (so they were in
	// Redis): an event missing everywhere remote whose origin was SIGKILLed
	// died in that process's outbox.
	moves := map[*sessHist][]instMove{}
	for _, s := range h.Sessions {
		s.mu.Lock()
		moves[s] = slices.Clone(s.Moves)
		s.mu.Unlock()
	}
	reachedRemote := map[recv]bool{}
	for _, s := range h.Sessions {
		_, _, got := s.snapshot()
		for i, g := range got {
			if ps, ok := origin(g.Pub, g.Seq); ok && ps.Instance != instanceAtIndex(moves[s], s.Instance, i) {
				reachedRemote[g] = true
			}
		}
	}
	type lossKey struct {
		receiver int
		origin   string
	}
	lostBy := map[lossKey]map[recv]bool{}
	var firstLost, firstDup, firstReorder, firstPhantom string
	idx := newPubIndex(h.Publishers)
	final := map[*sessHist]bool{}
	missingBy := map[*sessHist][]recv{}
	for _, s := range h.Sessions {
		s.mu.Lock()
		// A session still open, or closed by the harness at the end, was owed
		// everything.
		final[s] = s.Ready != 0 && (s.End == 0 || s.Reason == reasonClosed)
		s.mu.Unlock()
	}
	for _, s := range h.Sessions {
		ready, end, got := s.snapshot()
		if ready == 0 {
			continue
		}
		// Order and uniqueness, per publisher session.
		seen := map[recv]int{}
		high := map[[2]int]uint64{} // (pub, publisher session index) -> highest seq
		for i, g := range got {
			if j, dup := seen[g]; dup {
				v.Duplicates++
				if firstDup == "" {
					firstDup = fmt.Sprintf("duplicate: session %d got publisher %d seq %d at positions %d and %d\n%s",
						s.ID, g.Pub, g.Seq, j, i, describeSession(h, s, got, i))
				}
				continue
			}
			seen[g] = i
			ps, ok := origin(g.Pub, g.Seq)
			if !ok {
				v.Phantom++
				if firstPhantom == "" {
					firstPhantom = fmt.Sprintf("phantom: session %d got publisher %d seq %d that was never sent\n%s", s.ID, g.Pub, g.Seq, describeSession(h, s, got, i))
				}
				continue
			}
			if st := pubs[g.Pub].status[g.Seq-1]; st == statusRefused && ps.Instance != instanceAtIndex(moves[s], s.Instance, i) {
				v.Phantom++
				if firstPhantom == "" {
					firstPhantom = fmt.Sprintf("phantom: session %d on instance %d got publisher %d seq %d that instance %d refused\n%s",
						s.ID, s.Instance, g.Pub, g.Seq, ps.Instance, describeSession(h, s, got, i))
				}
			}
			k := [2]int{g.Pub, sessIndex(pubs[g.Pub].sessions, g.Seq)}
			if g.Seq < high[k] {
				v.Reordered++
				if firstReorder == "" {
					firstReorder = fmt.Sprintf("reorder: session %d got publisher %d seq %d after seq %d\n%s",
						s.ID, g.Pub, g.Seq, high[k], describeSession(h, s, got, i))
				}
			}
			high[k] = max(high[k], g.Seq)
		}
		// Losses.
		missing := idx.missingFor(s, final[s])
		missingBy[s] = missing
		owed := len(missing)
		// Owed and received: accepted, sent after ready, counted once.
		counted := map[recv]bool{}
		for _, g := range got {
			if _, ok := origin(g.Pub, g.Seq); ok && !counted[g] && pubs[g.Pub].status[g.Seq-1] == statusOK &&
				pubs[g.Pub].sent[g.Seq-1] > ready && slices.Contains(s.Rooms, h.Publishers[g.Pub].room(g.Seq)) {
				counted[g] = true
				owed++
			}
		}
		v.Owed += owed
		v.Delivered += owed - len(missing)
		for _, m := range missing {
			ps, _ := origin(m.Pub, m.Seq)
			// The instance that owed it to the session: where the session was
			// when the event was sent.
			at := instanceAtTime(moves[s], s.Instance, pubs[m.Pub].sent[m.Seq-1])
			switch {
			case ps.Instance == at:
				v.LocalLost++
				if firstLost == "" {
					firstLost = fmt.Sprintf("lost locally: session %d never got publisher %d seq %d of its own node\n%s",
						s.ID, m.Pub, m.Seq, describeMissing(h, s, got, m, pubs[m.Pub].sent[m.Seq-1]))
				}
			case !reachedRemote[m] && inst[ps.Instance].killed():
				v.CrashLost++
			default:
				k := lossKey{at, ps.NodeID}
				if lostBy[k] == nil {
					lostBy[k] = map[recv]bool{}
				}
				lostBy[k][m] = true
			}
		}
		// Cuts.
		s.mu.Lock()
		reason := s.Reason
		if s.Official {
			v.Official++
			v.Recovered += s.Recovered
			if strings.HasPrefix(reason, "not recovered") {
				v.NotRecovered++
			}
		}
		s.mu.Unlock()
		if end != 0 && reason != reasonClosed && reason != reasonBounced {
			slow := strings.Contains(reason, "send queue full")
			// An official client that reconnected while Redis or a link was
			// failing may get a new session (recovery on another node needs
			// Redis): explained by that step, as a node fault explains a cut.
			during := s.Official && strings.HasPrefix(reason, "not recovered") && faultAround(h.Steps, end)
			if slow || !inst[s.Instance].faultedBefore(end) && !during {
				v.Cuts++
				if len(v.CutReasons) < 10 {
					v.CutReasons = append(v.CutReasons, fmt.Sprintf("session %d on instance %d at %.2fs: %s", s.ID, s.Instance, float64(end)/1e9, reason))
				}
			}
		}
	}
	// Account losses against what receivers reported and origins dropped.
	gapsBy := map[lossKey]int{}
	dropsBy := map[string]int{}
	for _, in := range inst {
		in.mu.Lock()
		for _, g := range in.Gaps {
			gapsBy[lossKey{in.Instance, g.Origin}] += int(g.Missing)
			v.GapMessages += int(g.Missing)
		}
		for _, d := range in.Drops {
			dropsBy[in.NodeID] += d.Count
			v.Dropped += d.Count
		}
		for _, l := range in.Late {
			if stoppedDuring(in.Faults, l.At-l.TookMs*int64(time.Millisecond), l.At) {
				continue // the node itself was frozen (SIGSTOP) while it waited
			}
			v.Late++
			if v.Late <= 3 {
				v.Evidence = append(v.Evidence, fmt.Sprintf("instance %d (%s): %s returned after %d ms, timeout %d ms",
					in.Instance, in.NodeID, l.Op, l.TookMs, l.TimeoutMs))
			}
		}
		in.mu.Unlock()
	}
	keys := make([]lossKey, 0, len(lostBy))
	for k := range lostBy {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].receiver != keys[j].receiver {
			return keys[i].receiver < keys[j].receiver
		}
		return keys[i].origin < keys[j].origin
	})
	for _, k := range keys {
		lost := len(lostBy[k])
		allowed := gapsBy[k] + dropsBy[k.origin]
		// lostBy counts events once per receiving instance; spread the result
		// over the sessions it hurt.
		sessLost := 0
		for _, s := range h.Sessions {
			for _, m := range missingBy[s] {
				if lostBy[k][m] && instanceAtTime(moves[s], s.Instance, pubs[m.Pub].sent[m.Seq-1]) == k.receiver {
					sessLost++
				}
			}
		}
		// What the origin's counted drops cover comes first; the rest is
		// covered by the receiver's gaps, or unaccounted.
		byDrops := sessLost * min(lost, dropsBy[k.origin]) / lost
		unacc := 0
		if lost > allowed {
			unacc = sessLost * (lost - allowed) / lost
		}
		v.LostDropped += byDrops
		v.Accounted += sessLost - unacc - byDrops
		v.Lost += unacc
		if unacc == 0 {
			if sessLost > byDrops && v.ReportedEvidence == "" {
				v.ReportedEvidence = fmt.Sprintf("lost and reported: instance %d (%s) missed %d events of origin %s, reported %d gap messages about it",
					k.receiver, inst[k.receiver].NodeID, lost, k.origin, gapsBy[k])
			}
			continue
		}
		if firstLost == "" || strings.HasPrefix(firstLost, "lost locally") && v.LocalLost == 0 {
			ms := make([]recv, 0, lost)
			for m := range lostBy[k] {
				ms = append(ms, m)
			}
			sort.Slice(ms, func(i, j int) bool {
				if ms[i].Pub != ms[j].Pub {
					return ms[i].Pub < ms[j].Pub
				}
				return ms[i].Seq < ms[j].Seq
			})
			m := ms[0]
			var s *sessHist
			for _, c := range h.Sessions {
				if instanceAtTime(moves[c], c.Instance, pubs[m.Pub].sent[m.Seq-1]) == k.receiver && slices.Contains(missingBy[c], m) {
					s = c
					break
				}
			}
			_, _, got := s.snapshot()
			firstLost = fmt.Sprintf("lost: instance %d (%s) missed %d events of origin %s and reported %d gap messages, origin dropped %d; first: publisher %d seq %d, in session %d\n%s",
				k.receiver, inst[k.receiver].NodeID, lost, k.origin, gapsBy[k], dropsBy[k.origin], m.Pub, m.Seq, s.ID,
				describeMissing(h, s, got, m, pubs[m.Pub].sent[m.Seq-1]))
		}
	}
	for _, in := range inst {
		in.mu.Lock()
		if n := len(in.Samples); n >= 2 {
			first, last := in.Samples[0], in.Samples[n-1]
			var peak uint64
			for _, sm := range in.Samples {
				peak = max(peak, sm.RSS)
			}
			v.Resources = append(v.Resources, fmt.Sprintf("%s (instance %d) %.0fs-%.0fs: RSS %.1f -> %.1f MiB (peak %.1f), goroutines %d -> %d",
				in.NodeID, in.Instance, float64(first.At)/1e9, float64(last.At)/1e9,
				float64(first.RSS)/(1<<20), float64(last.RSS)/(1<<20), float64(peak)/(1<<20), first.Goroutines, last.Goroutines))
		}
		in.mu.Unlock()
	}
	// Did each step bite?
	for _, st := range h.Steps {
		to := st.End + int64(5*time.Second)
		bit := false
		for _, in := range inst {
			in.mu.Lock()
			if in.Start > st.Start && in.Start <= to {
				bit = true
			}
			for _, sc := range in.States {
				if sc.At >= st.Start && sc.At <= to && sc.State != "connected" {
					bit = true
				}
			}
			in.mu.Unlock()
		}
		for _, s := range h.Sessions {
			s.mu.Lock()
			if s.End >= st.Start && s.End <= to && s.Reason != reasonClosed {
				bit = true
			}
			s.mu.Unlock()
		}
		if !bit {
			v.Blunt++
			v.BluntSteps = append(v.BluntSteps, fmt.Sprintf("%.2fs %s", float64(st.Start)/1e9, st.Op))
		}
	}
	for _, e := range []string{firstLost, firstDup, firstReorder, firstPhantom} {
		if e != "" {
			v.Evidence = append(v.Evidence, e)
		}
	}
	return v
}

// faultAround reports whether a nemesis step other than a client bounce ran
// within a second of t.
func faultAround(steps []stepHist, t int64) bool {
	for _, st := range steps {
		if !strings.HasPrefix(st.Op, OpClientBounce) && st.Start <= t+int64(time.Second) && st.End >= t-int64(time.Second) {
			return true
		}
	}
	return false
}

func sessIndex(sessions []pubSess, seq uint64) int {
	for i, ps := range sessions {
		if seq >= ps.First && seq <= ps.Last {
			return i
		}
	}
	return -1
}

// describeSession shows a session and the events it received around position i.
func describeSession(h *History, s *sessHist, got []recv, i int) string {
	var b strings.Builder
	s.mu.Lock()
	fmt.Fprintf(&b, "session %d: client %d, %s %v, instance %d (%s), ready %.3fs, end %.3fs (%s), %d events\n",
		s.ID, s.Client, s.Namespace, s.Rooms, s.Instance, h.Instances[s.Instance].NodeID,
		float64(s.Ready)/1e9, float64(s.End)/1e9, s.Reason, len(got))
	s.mu.Unlock()
	from, to := max(0, i-5), min(len(got), i+6)
	for j := from; j < to; j++ {
		mark := "  "
		if j == i {
			mark = "=>"
		}
		fmt.Fprintf(&b, "%s #%d publisher %d seq %d\n", mark, j, got[j].Pub, got[j].Seq)
	}
	return b.String()
}

// describeMissing shows where a missing event would have been.
func describeMissing(h *History, s *sessHist, got []recv, m recv, sent int64) string {
	i := len(got)
	for j, g := range got {
		if g.Pub == m.Pub && g.Seq > m.Seq {
			i = j
			break
		}
	}
	var steps []string
	for _, st := range h.Steps {
		if st.Start <= sent+int64(5*time.Second) && st.End >= sent-int64(5*time.Second) {
			steps = append(steps, fmt.Sprintf("%.2fs-%.2fs %s", float64(st.Start)/1e9, float64(st.End)/1e9, st.Op))
		}
	}
	return fmt.Sprintf("sent at %.3fs; nemesis steps around it: %v\n%s", float64(sent)/1e9, steps, describeSession(h, s, got, i))
}

// Write writes the history and the verdict as JSON files into dir.
func Write(dir string, h *History, v *Verdict) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("nemesis: %w", err)
	}
	name := fmt.Sprintf("%s-seed%d", strings.ReplaceAll(h.Scenario, "/", "_"), h.Seed)
	for _, f := range []struct {
		file string
		v    any
	}{{name + ".history.json", h}, {name + ".verdict.json", v}} {
		if err := writeJSON(filepath.Join(dir, f.file), f.v); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, name+".verdict.txt"), []byte(v.Table()), 0o644)
}

func writeJSON(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("nemesis: %w", err)
	}
	err = encode(f, v)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("nemesis: write %s: %w", path, err)
	}
	return nil
}

func encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	return enc.Encode(v)
}
