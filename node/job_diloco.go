package node

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/internal/safefile"
)

// trainDiLoCo is runEpoch's loop in DiLoCo mode (spec.InnerSteps = H > 0):
// every member takes inner steps on its part of each global batch without
// communicating, and every H steps (and after the last) the members
// all-reduce the pseudo-gradient over the ring and apply the same outer
// step (train.DiLoCo). The members' weights agree only at those outer
// steps, so that is where they are compared, checkpointed and evaluated;
// a round broken by a failure is redone from its start (sync rolls back).
func (r *jobRunner) trainDiLoCo(ctx context.Context, e coordinator.Epoch, rank int, ring *allreduce.Ring) error {
	n, spec, d := r.n, r.spec, r.dl
	red := ringReducer{ring}
	for d.Boundary() < spec.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rank == 0 && d.Boundary() == 0 && spec.EvalEvery > 0 && r.progress().BaseHeldoutLoss == 0 {
			r.eval(true)
		}
		if r.w.Done < spec.Steps && !d.Due() {
			step := r.w.Done
			part, err := r.part(step, e.Members, rank)
			if err != nil {
				return err
			}
			if err := r.ensureShards(ctx, part); err != nil {
				return err
			}
			start := time.Now()
			res, err := d.InnerStep(ctx, part)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			r.mu.Lock()
			r.prog.Step, r.prog.Loss, r.prog.Error = r.w.Done, res.Loss, ""
			r.prog.StepMS, r.prog.WaitMS = float64(elapsed.Microseconds())/1e3, 0
			if elapsed > 0 {
				r.prog.TokensPerSec = float64(res.Tokens) / elapsed.Seconds()
			}
			if res.Step < maxLossHistory {
				for len(r.losses) <= res.Step {
					r.losses = append(r.losses, math.NaN())
				}
				r.losses[res.Step] = res.Loss // this member's own loss: inner steps are local
			}
			r.mu.Unlock()
			continue
		}
		// The outer step: H inner steps done (or the job's last).
		start, sent0 := time.Now(), ring.BytesSent()
		err := d.OuterStep(ctx, red, len(e.Members))
		sent := ring.BytesSent() - sent0
		n.wireBytes.Add(sent)
		if err != nil {
			return err
		}
		if n.deps.PerturbWeights != nil && n.deps.PerturbWeights(r.w.Done) {
			d.Base[0] += 1e-3 // a fault injected by a test: replicas diverge
		}
		boundary := d.Boundary()
		h := d.WeightsHash()
		r.mu.Lock()
		r.prog.WireBytes += sent
		r.prog.WireBytesPerStep = sent / int64(spec.InnerSteps) // averaged over the round's steps
		r.prog.WaitMS = float64(time.Since(start).Microseconds()) / 1e3
		r.prog.WeightsHash = h
		r.hashes[boundary] = h
		r.mu.Unlock()
		if ce := spec.CheckpointEvery; ce > 0 && boundary-r.lastOwnState >= ce {
			r.saveOwnState(boundary)
		}
		if rank != 0 {
			continue
		}
		go r.compareReplicas(ctx, e, boundary)
		if ee := spec.EvalEvery; ee > 0 && (boundary-r.progress().HeldoutStep >= ee || boundary == spec.Steps) {
			r.eval(false)
		}
		if ce := spec.CheckpointEvery; ce > 0 && boundary-r.lastCkpt >= ce && boundary < spec.Steps {
			if err := r.checkpoint(r.ctx, e); err != nil {
				n.log.Warn("checkpoint failed", "job", r.id, "step", boundary, "err", err)
			}
		}
	}
	return r.finishJob(ctx, e, rank, d.Boundary())
}

// A DiLoCo member's own state. The members agree on the outer state at
// every outer step (weights, momentum), but each keeps its own inner AdamW
// moments, from the steps on its own data. A checkpoint holds one member's
// snapshot, so a job resumed from it alone would give every member the
// checkpointing member's moments and go on differently from an
// uninterrupted run. So each member also keeps, on its own disk, its own
// snapshot of the boundaries where the job checkpoints (the same cadence:
// every CheckpointEvery steps since the last), and restores it instead when
// it is of the checkpoint's step and weights.

// ownStateFile is where a member keeps its own DiLoCo state.
const ownStateFile = "diloco-own.state"

// saveOwnState keeps this member's DiLoCo snapshot of the boundary just
// reached. A failure is logged: resuming then falls back to the
// checkpoint's moments.
func (r *jobRunner) saveOwnState(boundary int) {
	b, err := r.dl.Snapshot()
	if err == nil {
		err = atomicfile.WriteBytes(filepath.Join(r.dir, ownStateFile), b, dataFilePerm)
		if errors.Is(err, atomicfile.ErrSyncDir) {
			err = nil
		}
	}
	if err != nil {
		r.n.log.Warn("could not keep this member's DiLoCo state; a resume will use the checkpoint's inner moments", "job", r.id, "step", boundary, "err", err)
		return
	}
	r.lastOwnState = boundary
}

// restoreOwnState replaces the state restored from checkpoint cp with this
// member's own, when it kept one of the same step and weights.
func (r *jobRunner) restoreOwnState(cp coordinator.Checkpoint) {
	path := filepath.Join(r.dir, ownStateFile)
	b, err := safefile.ReadFileNoFollow(path, maxOwnStateBytes)
	if err != nil {
		return // none kept (a new member, a lost disk): the checkpoint's moments stand
	}
	shared, err := r.snapshot()
	if err != nil {
		return
	}
	if err := r.restore(b); err != nil || r.w.Done != cp.Step || r.w.WeightsHash() != cp.Hash {
		// Not of this checkpoint: back to the checkpoint's state.
		if err := r.restore(shared); err != nil {
			r.n.log.Error("restoring the checkpoint again", "job", r.id, "err", err)
		}
		return
	}
	r.n.log.Info("resumed with this member's own DiLoCo inner state", "job", r.id, "step", cp.Step)
}

// maxOwnStateBytes bounds the own-state file read back: weights, two
// moments and the outer momentum of the largest model braid trains, with
// room to spare.
const maxOwnStateBytes = 64 << 30
