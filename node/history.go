package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/train"
)

// A job's history: one point per step a worker ran (its loss, learning
// rate, throughput, bytes sent), and the held-out loss of the steps it
// evaluated. Each worker keeps its own, bounded, with the job (jobRunner),
// keeps it after the job ends (Node.histories), and writes it to the job's
// directory when its part ends, so that a restarted node serves it too.
// GET /v1/jobs/{id}/history serves the history of the worker that ran the
// job furthest (asking the epoch's members), which is rank 0's in a job
// that evaluates: the loss of a synchronous job is global, the same on
// every worker, while tokens/s and wire bytes are that worker's own.

// HistoryPoint is one step of a job as one worker ran it.
type HistoryPoint struct {
	Step int     `json:"step"` // steps applied after this one: the first is 1
	Loss float64 `json:"loss"` // the step's training loss (global in a synchronous job)
	// HeldoutLoss is the held-out loss evaluated after this step; absent
	// (nil), not 0, when the step was not evaluated.
	HeldoutLoss  *float64  `json:"heldout_loss,omitempty"`
	LR           float64   `json:"lr"`
	TokensPerSec float64   `json:"tokens_per_sec"` // this worker's
	WireBytes    int64     `json:"wire_bytes"`     // sent by this worker in the job up to this step
	Time         time.Time `json:"time"`
}

// JobHistory is the answer of GET /v1/jobs/{id}/history.
type JobHistory struct {
	Job  string `json:"job"`
	Node string `json:"node,omitempty"` // the worker whose points these are ("" when none ran the job yet)
	// BaseHeldoutLoss is the base model's held-out loss, evaluated before
	// the first step; absent when the job does not evaluate.
	BaseHeldoutLoss *float64 `json:"base_heldout_loss,omitempty"`
	// Thinned counts the points dropped to keep the history bounded
	// (MaxHistoryPoints): older steps are kept at a coarser spacing, and
	// every evaluated step is kept.
	Thinned int            `json:"thinned,omitempty"`
	Points  []HistoryPoint `json:"points"`
}

// MaxHistoryPoints bounds the points a worker keeps of one job. When full,
// every other point of the older half is dropped (an evaluated one is
// kept), so the recent steps stay at full resolution and the whole run
// stays visible at a coarser one.
const MaxHistoryPoints = 1024

// historyFile is the name of a worker's history in the job's directory.
const historyFile = "history.json"

// maxHistoryFileBytes bounds what decodeHistory reads: MaxHistoryPoints
// points of about 200 bytes each, with room to spare.
const maxHistoryFileBytes = 1 << 20

// add appends p, first dropping the points at or after p.Step (the worker
// went back to a checkpoint and runs those steps again), and thins the
// older half when the history is full.
func (h *JobHistory) add(p HistoryPoint) {
	if math.IsNaN(p.Loss) || math.IsInf(p.Loss, 0) {
		return // JSON has no NaN; the job's status reports the diverged loss
	}
	i, _ := slices.BinarySearchFunc(h.Points, p.Step, func(q HistoryPoint, step int) int { return q.Step - step })
	h.Points = append(h.Points[:i], p)
	if len(h.Points) < MaxHistoryPoints {
		return
	}
	// Evaluated steps are kept unless they are so many (a job that
	// evaluates every step or two) that keeping them would not free room.
	keepEvaluated := 0
	for _, q := range h.Points[:len(h.Points)/2] {
		if q.HeldoutLoss != nil {
			keepEvaluated++
		}
	}
	half := len(h.Points) / 2
	n := len(h.Points)
	kept := h.Points[:0]
	for i, q := range h.Points {
		if i >= half || i%2 == 0 || q.HeldoutLoss != nil && keepEvaluated < half/2 {
			kept = append(kept, q)
		}
	}
	h.Thinned += n - len(kept)
	h.Points = kept
}

// heldout records the held-out loss evaluated after step (step 0: the
// base model's).
func (h *JobHistory) heldout(step int, loss float64) {
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return
	}
	if step == 0 {
		h.BaseHeldoutLoss = &loss
		return
	}
	if i, ok := slices.BinarySearchFunc(h.Points, step, func(q HistoryPoint, step int) int { return q.Step - step }); ok {
		h.Points[i].HeldoutLoss = &loss
	}
}

// clone returns a deep copy (the held-out losses are shared: never
// written through).
func (h *JobHistory) clone() JobHistory {
	c := *h
	c.Points = slices.Clone(h.Points)
	if c.Points == nil {
		c.Points = []HistoryPoint{}
	}
	return c
}

// last is the step of the last point (0 when there is none).
func (h *JobHistory) last() int {
	if len(h.Points) == 0 {
		return 0
	}
	return h.Points[len(h.Points)-1].Step
}

// evaluated counts the points with a held-out loss.
func (h *JobHistory) evaluated() int {
	k := 0
	for _, p := range h.Points {
		if p.HeldoutLoss != nil {
			k++
		}
	}
	return k
}

// validate checks what a decoder cannot: at most MaxHistoryPoints points,
// steps positive and increasing, figures finite and not negative.
func (h *JobHistory) validate() error {
	if len(h.Points) > MaxHistoryPoints {
		return fmt.Errorf("%d points, at most %d are kept", len(h.Points), MaxHistoryPoints)
	}
	finite := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if h.BaseHeldoutLoss != nil && !finite(*h.BaseHeldoutLoss) {
		return errors.New("base held-out loss is not a finite number")
	}
	prev := 0
	for i, p := range h.Points {
		if p.Step <= prev {
			return fmt.Errorf("point %d: step %d after step %d", i, p.Step, prev)
		}
		prev = p.Step
		if !finite(p.Loss) || !finite(p.LR) || !finite(p.TokensPerSec) || p.TokensPerSec < 0 || p.WireBytes < 0 ||
			p.HeldoutLoss != nil && !finite(*p.HeldoutLoss) {
			return fmt.Errorf("point %d (step %d): a figure that is negative or not a finite number", i, p.Step)
		}
	}
	return nil
}

// decodeHistory parses a history file, strictly: unknown fields, trailing
// data, more than maxHistoryFileBytes or a history validate refuses are
// errors.
func decodeHistory(r io.Reader) (JobHistory, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxHistoryFileBytes+1))
	if err != nil {
		return JobHistory{}, err
	}
	if len(b) > maxHistoryFileBytes {
		return JobHistory{}, fmt.Errorf("node: job history: larger than %d bytes", maxHistoryFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var h JobHistory
	if err := dec.Decode(&h); err != nil {
		return JobHistory{}, fmt.Errorf("node: job history: %w", err)
	}
	if dec.More() {
		return JobHistory{}, errors.New("node: job history: trailing data after the JSON value")
	}
	if err := h.validate(); err != nil {
		return JobHistory{}, fmt.Errorf("node: job history: %w", err)
	}
	return h, nil
}

// recordHistoryLocked adds the step res, which took elapsed, to the
// worker's history; r.mu is held and r.prog already counts the step's
// bytes.
func (r *jobRunner) recordHistoryLocked(res train.StepResult) {
	r.hist.add(HistoryPoint{Step: res.Step, Loss: res.Loss, LR: res.LR, TokensPerSec: r.prog.TokensPerSec,
		WireBytes: r.prog.WireBytes, Time: r.n.now()})
}

// historyStore keeps the histories of the jobs this node's worker ran after
// their runners end (the last maxKeptHistories in memory; the files in the
// jobs' directories beyond that).
type historyStore struct {
	mu   sync.Mutex
	jobs map[string]JobHistory
	ids  []string // oldest first
}

const maxKeptHistories = 64

func (s *historyStore) put(h JobHistory) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobs == nil {
		s.jobs = map[string]JobHistory{}
	}
	if _, ok := s.jobs[h.Job]; !ok {
		s.ids = append(s.ids, h.Job)
	}
	s.jobs[h.Job] = h
	if len(s.ids) > maxKeptHistories {
		delete(s.jobs, s.ids[0])
		s.ids = s.ids[1:]
	}
}

func (s *historyStore) get(id string) (JobHistory, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.jobs[id]
	return h, ok
}

// historyPath is where this node keeps its worker's history of job id.
func (n *Node) historyPath(id string) string {
	return filepath.Join(n.cfg.DataDir, "jobs", id, historyFile)
}

// keepHistory keeps the history of runner, which ended, in memory and in
// the job's directory.
func (n *Node) keepHistory(r *jobRunner) {
	if h, ok := n.writeHistory(r); ok {
		n.histories.put(h)
	}
}

// writeHistory writes runner's history so far to the job's directory (at
// the checkpoint steps, and when the runner ends) and returns it; ok is
// false when there is nothing to write.
func (n *Node) writeHistory(r *jobRunner) (h JobHistory, ok bool) {
	r.mu.Lock()
	h = r.hist.clone()
	r.mu.Unlock()
	if len(h.Points) == 0 && h.BaseHeldoutLoss == nil {
		return h, false // it never trained (a job it could not prepare): nothing to show, nor to overwrite a file with
	}
	b, err := json.Marshal(h)
	if err == nil {
		if err = os.MkdirAll(filepath.Dir(n.historyPath(h.Job)), dataDirPerm); err == nil {
			err = atomicfile.WriteBytes(n.historyPath(h.Job), b, dataFilePerm)
		}
	}
	if err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		n.log.Warn("could not keep the job's history on disk: it is served until the node stops", "job", h.Job, "err", err)
	}
	return h, true
}

// savedHistory returns the history this node's worker kept of job id: the
// one of a worker that ended, else the file a previous run of the node
// wrote. ok is false when there is none.
func (n *Node) savedHistory(id string) (JobHistory, bool) {
	if h, ok := n.histories.get(id); ok {
		return h.clone(), true
	}
	if coordinator.ValidJobID(id) != nil {
		return JobHistory{}, false // never a path
	}
	// Opened once, non-blocking, and only as a regular file within the
	// bound decodeHistory reads.
	f, _, err := safefile.OpenNoFollow(n.historyPath(id), maxHistoryFileBytes)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			n.log.Warn("job history unreadable", "job", id, "err", err)
		}
		return JobHistory{}, false
	}
	defer f.Close()
	h, err := decodeHistory(f)
	if err != nil {
		n.log.Warn("job history unreadable", "job", id, "file", f.Name(), "err", err)
		return JobHistory{}, false
	}
	h.Job = id
	return h, true
}

// localHistory is this node's worker's history of job id: the running
// one's, else the saved one.
func (n *Node) localHistory(id string) (JobHistory, bool) {
	if r := n.currentRunner(id); r != nil {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.hist.clone(), true
	}
	return n.savedHistory(id)
}

// serveJobHistory answers the control request job-history with this
// worker's history of the job.
func (n *Node) serveJobHistory(_ context.Context, req controlRequest, resp *controlResponse) error {
	h, ok := n.localHistory(req.JobObject.Job)
	if !ok {
		return fmt.Errorf("no history of job %s here", req.JobObject.Job)
	}
	resp.JobHistory = &h
	return nil
}

// JobHistory returns the history of job id from the worker that ran it
// furthest, asking the members of the job's rings besides this node (an
// answer is named after the peer that gave it, and cut at the job's last
// step); a tie
// goes to the one with more evaluated steps, then to one with the base
// model's held-out loss (rank 0's). An error means no such job;
// a job no worker has run yet has no points.
func (n *Node) JobHistory(ctx context.Context, id string) (JobHistory, error) {
	j, ok := n.awaitJob(ctx, id)
	if !ok {
		return JobHistory{}, fmt.Errorf("node: no job %q (see `braid job list`)", id)
	}
	best := JobHistory{Job: id, Points: []HistoryPoint{}}
	var mu sync.Mutex
	consider := func(h JobHistory) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case h.last() != best.last():
			if h.last() > best.last() {
				best = h
			}
		case h.evaluated() != best.evaluated():
			if h.evaluated() > best.evaluated() {
				best = h
			}
		case h.BaseHeldoutLoss != nil && best.BaseHeldoutLoss == nil:
			best = h
		}
	}
	if h, ok := n.localHistory(id); ok {
		consider(h)
	}
	var wg sync.WaitGroup
	for _, name := range historyRing(j, n.coord.State().Epoch) {
		if name == n.cfg.Name {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			resp, err := n.callControl(cctx, name, n.memberAddr(name), controlRequest{Op: opJobHistory, JobObject: &jobObjectRequest{Job: id}})
			if err != nil || resp.JobHistory == nil {
				return // a member that never ran the job, or cannot be reached: the others may have it
			}
			if h := *resp.JobHistory; h.validate() == nil {
				// A peer's answer is its own, whatever it says: named by
				// the certificate it answered with, and no step beyond
				// the job's.
				h.Job, h.Node = id, name
				consider(h.upTo(j.Spec.Steps))
			}
		})
	}
	wg.Wait()
	if best.Points == nil {
		best.Points = []HistoryPoint{}
	}
	return best, nil
}

// historyRing is whom JobHistory asks for a job's history: the members
// of the rings that recorded serving it (its epoch records), or the
// committed epoch's while it has none. Nobody else ran its steps, so
// nobody else's figures are taken.
func historyRing(j coordinator.Job, current coordinator.Epoch) []string {
	if len(j.Epochs) == 0 {
		return slices.Clone(current.Members)
	}
	var ring []string
	for _, e := range j.Epochs {
		for _, m := range e.Members {
			if !slices.Contains(ring, m) {
				ring = append(ring, m)
			}
		}
	}
	return ring
}

// upTo returns h without its points past step last (the job's steps: a
// worker cannot have done more).
func (h JobHistory) upTo(last int) JobHistory {
	i := len(h.Points)
	for i > 0 && h.Points[i-1].Step > last {
		i--
	}
	h.Points = h.Points[:i]
	return h
}

// historyRoutes serves GET /v1/jobs/{id}/history (JobHistory; 404 for a
// job this node does not know).
func (n *Node) historyRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/jobs/{id}/history", func(w http.ResponseWriter, r *http.Request) {
		h, err := n.JobHistory(r.Context(), r.PathValue("id"))
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, h)
	})
}
