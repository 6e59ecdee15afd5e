package node

import (
	"context"
	"errors"
	"fmt"
	"os"
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
	recorded := false // this epoch's service (recordEpochServed)
	for d.Boundary() < spec.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if rank == 0 && d.Boundary() == 0 && spec.EvalEvery > 0 && r.progress().BaseHeldoutLoss == 0 {
			r.eval(true)
		}
		if r.w.Done < spec.Steps && !d.Due() {
			step := r.w.Done
			part, err := r.fetchPart(ctx, step, e.Members, rank)
			if err != nil {
				return err
			}
			start := time.Now()
			res, err := d.InnerStep(ctx, part)
			if err != nil {
				return err
			}
			elapsed := time.Since(start)
			r.steppedAfterChange()
			r.mu.Lock()
			r.recordStepLocked(res, elapsed) // this member's own loss: inner steps are local
			r.mu.Unlock()
			continue
		}
		// The outer step: H inner steps done (or the job's last).
		roundStart := d.Boundary()
		start, sent0 := time.Now(), ring.BytesSent()
		err := d.OuterStep(ctx, red, len(e.Members))
		sent := ring.BytesSent() - sent0
		n.wireBytes.Add(sent)
		if err != nil {
			return err
		}
		r.steppedAfterChange()
		// A round broken by a failure is redone from its start: an epoch
		// served the steps of the rounds it completed.
		if !recorded && rank == 0 {
			r.recordEpochServed(e, roundStart+1)
			recorded = true
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
		ckptDue := dilocoCheckpointDue(boundary, spec.InnerSteps, spec.CheckpointEvery) && boundary < spec.Steps
		if ckptDue {
			r.saveOwnState(boundary)
		}
		if rank != 0 {
			continue
		}
		go r.compareReplicas(ctx, e, boundary)
		if ee := spec.EvalEvery; ee > 0 && (boundary-r.progress().HeldoutStep >= ee || boundary == spec.Steps) {
			r.eval(false)
		}
		if ckptDue {
			if err := r.checkpoint(r.ctx, e); err != nil {
				n.log.Warn("checkpoint failed", "job", r.id, "step", boundary, "err", err)
			}
		}
	}
	return r.finishJob(ctx, e, rank, d.Boundary())
}

// dilocoCheckpointDue reports whether a DiLoCo job checkpoints at outer
// step boundary: the first boundary at or past each multiple of every,
// with boundaries h steps apart. A function of the step alone, so that
// whichever member is rank 0 (after a failover too) checkpoints where the
// others keep their own state (saveOwnState), and a failed checkpoint does
// not shift the ones after it.
func dilocoCheckpointDue(boundary, h, every int) bool {
	return every > 0 && boundary > 0 && boundary/every > (boundary-h)/every
}

// A DiLoCo member's own state. The members agree on the outer state at
// every outer step (weights, momentum), but each keeps its own inner AdamW
// moments, from the steps on its own data. A checkpoint holds one member's
// snapshot, so a job resumed from it alone would give every member the
// checkpointing member's moments and go on differently from an
// uninterrupted run. So each member also keeps, on its own disk, its own
// snapshot of every boundary where the job checkpoints, and restores it
// instead when it is of the checkpoint's step and weights. Snapshots older
// than the job's last recorded checkpoint are deleted.

// ownStatePath is where a member keeps its own DiLoCo state of step.
func (r *jobRunner) ownStatePath(step int) string {
	return filepath.Join(r.dir, fmt.Sprintf("diloco-own-%d.state", step))
}

// saveOwnState keeps this member's DiLoCo snapshot of the boundary just
// reached and deletes those older than the last recorded checkpoint. A
// failure is logged: resuming then falls back to the checkpoint's moments.
func (r *jobRunner) saveOwnState(boundary int) {
	b, err := r.dl.Snapshot()
	if err == nil {
		err = atomicfile.WriteBytes(r.ownStatePath(boundary), b, dataFilePerm)
		if errors.Is(err, atomicfile.ErrSyncDir) {
			err = nil
		}
	}
	if err != nil {
		r.n.log.Warn("could not keep this member's DiLoCo state; a resume will use the checkpoint's inner moments", "job", r.id, "step", boundary, "err", err)
	}
	last := 0
	if j, ok := r.n.coord.State().Job(r.id); ok {
		if cp, ok := j.LastCheckpoint(); ok {
			last = cp.Step
		}
	}
	old, _ := filepath.Glob(filepath.Join(r.dir, "diloco-own-*.state"))
	for _, p := range old {
		var step int
		if _, err := fmt.Sscanf(filepath.Base(p), "diloco-own-%d.state", &step); err == nil && step < last {
			os.Remove(p)
		}
	}
}

// restoreOwnState replaces the state restored from checkpoint cp with this
// member's own, when it kept one of the same step and weights. The own
// state is restored through the DiLoCo loop directly: it refines the
// restore that prepare counted, it is not another.
func (r *jobRunner) restoreOwnState(cp coordinator.Checkpoint) error {
	shared, err := r.snapshot()
	if err != nil {
		return err
	}
	// Its size is the checkpoint's, give or take the header: a larger file
	// is not one.
	b, err := safefile.ReadFileNoFollow(r.ownStatePath(cp.Step), int64(len(shared))+1<<20)
	if err != nil {
		return nil // none kept (a new member, a lost disk): the checkpoint's moments stand
	}
	if err := r.dl.Restore(b); err == nil && r.w.Done == cp.Step && r.w.WeightsHash() == cp.Hash {
		r.n.log.Info("resumed with this member's own DiLoCo inner state", "job", r.id, "step", cp.Step)
		return nil
	}
	// Not of this checkpoint: back to the checkpoint's state.
	if err := r.dl.Restore(shared); err != nil {
		return fmt.Errorf("restoring the checkpoint of step %d again: %w", cp.Step, err)
	}
	return nil
}
