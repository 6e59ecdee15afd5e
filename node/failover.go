package node

import (
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/coordinator"
)

// The failover timeline: for every change of a running job's epoch, when
// this node saw each phase of it, from the first sign of a member's failure
// to the first step on the new ring. The phases, in order:
//
//	suspected  this node's gossip suspected the lost member (no probe ack)
//	declared   gossip declared it failed (or it left): the coordinator is told
//	committed  the new epoch reached this node's replicated state (the
//	           first, when several follow before a step is done)
//	resynced   the members agreed on the step (sync), catching up if needed
//	connected  the new ring's streams are up
//	first step the first step on the new ring completed here
//
// A phase this node did not see (it was not the one that suspected, or the
// change was a join) is absent. Each worker keeps its last changes in its
// JobProgress (served with JobStatus, and by `braid job events`), and the
// durations between phases go to a Prometheus histogram.

// EpochChange is one change of a running job's epoch as this node saw it.
// The times are milliseconds after Start, the earliest event known.
type EpochChange struct {
	Epoch uint64 `json:"epoch"`
	From  uint64 `json:"from_epoch"`
	// Via are the epochs committed in between, in which no step was done
	// (a ring that failed to form, say): the change is timed through them.
	Via    []uint64  `json:"via,omitempty"`
	Lost   []string  `json:"lost,omitempty"`
	Joined []string  `json:"joined,omitempty"`
	Start  time.Time `json:"start"`
	// Suspected and Declared are absent when this node saw no suspicion
	// or failure of a lost member (a member that left, a join).
	Suspected *float64 `json:"suspected_ms,omitempty"`
	Declared  *float64 `json:"declared_ms,omitempty"`
	Committed float64  `json:"committed_ms"`
	Resynced  float64  `json:"resynced_ms"`
	// Resync is how this node caught up: "none" (it was at the agreed
	// step), "gradient" (a peer's reduced gradient) or "snapshot" (a
	// peer's whole state).
	Resync    string  `json:"resync"`
	Connected float64 `json:"connected_ms"`
	FirstStep float64 `json:"first_step_ms"`
}

// maxEpochChanges bounds the changes a worker keeps.
const maxEpochChanges = 32

// memberFailures remembers when gossip first suspected and declared each
// member failed, for the timelines of the epochs that follow.
type memberFailures struct {
	mu        sync.Mutex
	suspected map[string]time.Time // the first suspicion since the member was last alive
	declared  map[string]time.Time
}

func (f *memberFailures) note(kind, name string, at time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.suspected == nil {
		f.suspected, f.declared = map[string]time.Time{}, map[string]time.Time{}
	}
	switch kind {
	case "suspect":
		if _, ok := f.suspected[name]; !ok {
			f.suspected[name] = at
		}
	case "failed":
		f.declared[name] = at
	case "alive":
		delete(f.suspected, name)
		delete(f.declared, name)
	}
}

// suspicionWindow is how long before a member was declared failed (or the
// epoch without it committed) a suspicion of it counts as the start of
// that failure: an older one was refuted.
const suspicionWindow = 30 * time.Second

// earliest returns the first declaration among names, and the first
// suspicion that preceded the change (at by) by at most suspicionWindow,
// each zero when none.
func (f *memberFailures) earliest(names []string, by time.Time) (suspected, declared time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	first := func(m map[string]time.Time) time.Time {
		var t time.Time
		for _, n := range names {
			if v, ok := m[n]; ok && (t.IsZero() || v.Before(t)) {
				t = v
			}
		}
		return t
	}
	suspected, declared = first(f.suspected), first(f.declared)
	if !declared.IsZero() {
		by = declared
	}
	// A suspicion counts if it came before the failure was known here (this
	// node may suspect a member after gossip from others declared it) and
	// not too long before (an older one was refuted).
	if !suspected.IsZero() && (suspected.After(by) || by.Sub(suspected) > suspicionWindow) {
		suspected = time.Time{}
	}
	return suspected, declared
}

// epochChange is a change being timed by the runner.
type epochChange struct {
	from, to  coordinator.Epoch
	via       []uint64 // epochs in between, in which no step was done
	suspected time.Time
	declared  time.Time
	committed time.Time
	resynced  time.Time
	resync    string
	connected time.Time
	restores  int // the worker's counts when the change began
	gradCatch int
}

// beginChange starts timing the change from epoch prev to e, which this
// node saw committed at seen; nil when there was no previous epoch (the
// job's first) or it is the same.
func (r *jobRunner) beginChange(prev, e coordinator.Epoch, seen time.Time) *epochChange {
	if prev.ID == 0 || prev.ID == e.ID {
		return nil
	}
	c := &epochChange{from: prev, to: e, committed: seen}
	lost := diffNames(prev.Members, e.Members)
	c.suspected, c.declared = r.n.failures.earliest(lost, seen)
	p := r.progress()
	c.restores, c.gradCatch = p.Restores, p.GradCatchUps
	return c
}

// synced records that the members agreed on the step.
func (c *epochChange) synced(r *jobRunner) {
	if c == nil {
		return
	}
	c.resynced = time.Now()
	p := r.progress()
	switch {
	case p.Restores > c.restores:
		c.resync = "snapshot"
	case p.GradCatchUps > c.gradCatch:
		c.resync = "gradient"
	default:
		c.resync = "none"
	}
}

// ringUp records that the new ring's streams are up.
func (c *epochChange) ringUp() {
	if c != nil {
		c.connected = time.Now()
	}
}

// stepped ends the change at the first step on the new ring: it is added to
// the worker's progress and its phases to the metrics.
func (c *epochChange) stepped(r *jobRunner) {
	if c == nil {
		return
	}
	now := time.Now()
	start := c.committed
	for _, t := range []time.Time{c.suspected, c.declared} {
		if !t.IsZero() && t.Before(start) {
			start = t
		}
	}
	ms := func(t time.Time) float64 { return float64(t.Sub(start).Microseconds()) / 1e3 }
	opt := func(t time.Time) *float64 {
		if t.IsZero() {
			return nil
		}
		v := ms(t)
		return &v
	}
	ch := EpochChange{Epoch: c.to.ID, From: c.from.ID, Via: c.via, Lost: diffNames(c.from.Members, c.to.Members),
		Joined: diffNames(c.to.Members, c.from.Members), Start: start, Suspected: opt(c.suspected), Declared: opt(c.declared),
		Committed: ms(c.committed), Resynced: ms(c.resynced), Resync: c.resync, Connected: ms(c.connected), FirstStep: ms(now)}
	r.mu.Lock()
	r.prog.EpochChanges = append(r.prog.EpochChanges, ch)
	if len(r.prog.EpochChanges) > maxEpochChanges {
		r.prog.EpochChanges = slices.Delete(r.prog.EpochChanges, 0, len(r.prog.EpochChanges)-maxEpochChanges)
	}
	r.mu.Unlock()
	h := r.n.failoverPhases
	if h == nil {
		return
	}
	if !c.declared.IsZero() {
		if !c.suspected.IsZero() && c.suspected.Before(c.declared) {
			h.WithLabelValues("detect").Observe(c.declared.Sub(c.suspected).Seconds())
		}
		h.WithLabelValues("commit").Observe(c.committed.Sub(c.declared).Seconds())
	}
	h.WithLabelValues("resync").Observe(c.resynced.Sub(c.committed).Seconds())
	h.WithLabelValues("connect").Observe(c.connected.Sub(c.resynced).Seconds())
	h.WithLabelValues("first_step").Observe(now.Sub(c.connected).Seconds())
	h.WithLabelValues("total").Observe(now.Sub(start).Seconds())
}

// epochSighting is when this node saw epoch id committed.
type epochSighting struct {
	id uint64
	at time.Time
}

// steppedAfterChange ends the change being timed, if any, at a step done
// on its ring.
func (r *jobRunner) steppedAfterChange() {
	if r.change != nil {
		r.change.stepped(r)
		r.change = nil
	}
}

// diffNames returns the names in a that are not in b.
func diffNames(a, b []string) []string {
	var out []string
	for _, n := range a {
		if !slices.Contains(b, n) {
			out = append(out, n)
		}
	}
	return out
}

// newFailoverPhases is the histogram of the phases' durations.
func newFailoverPhases() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "braid", Name: "failover_phase_seconds",
		Help:    "Durations of the phases of a running job's epoch changes on this node: detect (suspected→declared), commit (declared→epoch committed), resync, connect (the new ring), first_step, and total (first sign→first step).",
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 1.5, 2, 2.5, 3, 4, 5, 7.5, 10, 20}}, []string{"phase"})
}
