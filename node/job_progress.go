package node

import (
	"math"
	"slices"
	"time"

	"github.com/braidml/braid/train"
)

// What a worker reports of the job it runs (JobProgress, served to
// JobStatus and the metrics) and the loss history kept for it.

// JobPhase is where a worker is in its part of a job.
type JobPhase string

const (
	PhasePreparing JobPhase = "preparing" // fetching the inputs, building the worker
	PhaseWaiting   JobPhase = "waiting"   // for an epoch that includes this node
	PhaseSyncing   JobPhase = "syncing"   // entering an epoch in step with the others (job_sync.go)
	PhaseTraining  JobPhase = "training"  // taking steps on the epoch's ring
	PhaseFinished  JobPhase = "finished"  // the job ended, or this node's part of it
)

// JobProgress is one worker's view of the running job.
type JobProgress struct {
	Job             string   `json:"job"`
	Node            string   `json:"node"`
	Phase           JobPhase `json:"phase"`
	Device          string   `json:"device,omitempty"` // where this worker computes: "cpu" or "cuda:N NAME"
	Epoch           uint64   `json:"epoch"`
	Rank            int      `json:"rank"`
	Members         []string `json:"members"`
	Step            int      `json:"step"` // steps applied
	Loss            float64  `json:"loss"`
	HeldoutLoss     float64  `json:"heldout_loss,omitempty"`
	HeldoutStep     int      `json:"heldout_step,omitempty"`
	BaseHeldoutLoss float64  `json:"base_heldout_loss,omitempty"`
	TokensPerSec    float64  `json:"tokens_per_sec"`
	StepMS          float64  `json:"step_ms"`
	WaitMS          float64  `json:"wait_ms"` // of StepMS, blocked on the all-reduce
	// MeanStepMS and MeanWaitMS average StepMS and WaitMS over the steps
	// this worker ran, the first two of each epoch left out (warm-up).
	MeanStepMS float64 `json:"mean_step_ms,omitempty"`
	MeanWaitMS float64 `json:"mean_wait_ms,omitempty"`
	Steps      int     `json:"steps_timed,omitempty"`
	// WireBytesPerStep is what this node sent to its ring neighbour in
	// the last step (all-reduce frames); WireBytes in all of the job here.
	WireBytesPerStep int64  `json:"wire_bytes_per_step"`
	WireBytes        int64  `json:"wire_bytes"`
	WeightsHash      string `json:"weights_hash,omitempty"`
	Error            string `json:"error,omitempty"`
	// ResumedFrom is the step of the checkpoint this worker restored when
	// it started the job (0: it started from the base model).
	ResumedFrom int `json:"resumed_from,omitempty"`
	// ResumedHash is the weights hash of the state restored then (DiLoCo:
	// of the outer weights), to compare with the checkpoint's.
	ResumedHash string `json:"resumed_hash,omitempty"`
	// Restores counts the times this worker replaced its whole state: from
	// the job's checkpoint at start, or from a peer's snapshot when their
	// weights differed at an epoch change. GradCatchUps counts the steps it
	// caught up by applying a peer's reduced gradient instead.
	Restores     int `json:"restores,omitempty"`
	GradCatchUps int `json:"grad_catch_ups,omitempty"`
	// EpochChanges is the timeline of the last epoch changes this worker
	// went through (failover.go).
	EpochChanges []EpochChange `json:"epoch_changes,omitempty"`
}

func (r *jobRunner) setPhase(p JobPhase) {
	r.mu.Lock()
	r.prog.Phase = p
	r.mu.Unlock()
}

// progress returns a copy of the worker's progress.
func (r *jobRunner) progress() JobProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.prog
	p.Members = slices.Clone(p.Members)
	p.EpochChanges = slices.Clone(p.EpochChanges)
	return p
}

// maxLossHistory bounds the per-step losses a worker keeps (JobLosses).
const maxLossHistory = 1 << 20

// recordStepLocked updates the progress with the step res, which took
// elapsed, and keeps its loss; r.mu is held.
func (r *jobRunner) recordStepLocked(res train.StepResult, elapsed time.Duration) {
	r.prog.Step, r.prog.Loss, r.prog.Error = res.Step, res.Loss, ""
	r.prog.StepMS, r.prog.WaitMS = float64(elapsed.Microseconds())/1e3, float64(res.Wait.Microseconds())/1e3
	if elapsed > 0 {
		r.prog.TokensPerSec = float64(res.Tokens) / elapsed.Seconds()
	}
	if i := res.Step - 1; i < maxLossHistory {
		for len(r.losses) <= i {
			r.losses = append(r.losses, math.NaN())
		}
		r.losses[i] = res.Loss
	}
	r.recordHistoryLocked(res)
}

// JobLosses returns the global loss of every step of job id that this
// node's worker ran: element i is the loss of step i+1 (NaN for steps it
// did not run: before it joined, or restored from a peer). Nil when it does not run the job.
func (n *Node) JobLosses(id string) []float64 {
	r := n.currentRunner(id)
	if r == nil {
		n.jobMu.Lock()
		defer n.jobMu.Unlock()
		return slices.Clone(n.finishedLosses[id])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.losses)
}
