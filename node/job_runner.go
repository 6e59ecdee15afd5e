package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/train"
)

// jobRunner is this node's worker for one running job. Its life:
//
//  1. prepare: fetch the base model, the dataset's manifest and (if the job
//     has one) the last checkpoint by hash; build the model and the
//     train.Worker; start from the checkpoint or from the base weights.
//  2. For every committed epoch that includes this node (runEpoch):
//     sync with the epoch's other members on the step to start from, then
//     train step after step on a ring of the epoch's members until the
//     epoch changes, the ring breaks, or the job ends.
//
// sync is what keeps replicas identical across failures. Entering an
// epoch, each member freezes its status (steps applied, whether it kept
// the reduced gradient of its last step) and serves it to the others; all
// read the same frozen statuses and so compute the same target, the most
// steps any member has applied. A step's all-reduce may have completed on
// some members and not on others when a peer died; those at target−1 then
// apply the reduced gradient a member at target kept (bitwise the update
// the others applied), and those further behind (a joining node, one
// restarted from a checkpoint) restore a member's full snapshot. If the
// member that completed a step died, nobody has it and the survivors all
// redo that step on the new ring.
//
// The runner is spread over files by concern: its life here; sync in
// job_sync.go; each member's share of a batch and its shards in
// job_data.go; checkpoints, evaluations and replica checks in
// job_checkpoint.go; what it reports in job_progress.go; the DiLoCo loop
// in job_diloco.go.
type jobRunner struct {
	// Set by newJobRunner, never changed.
	n      *Node
	id     string
	spec   coordinator.JobSpec
	ctx    context.Context
	cancel context.CancelFunc
	dir    string // DataDir/jobs/ID: links to the base model and the shards

	// Set by prepare, then owned by the run goroutine. Control handlers
	// read w (and dl) only in the window the sync protocol makes safe
	// (syncingRunner, control_ops.go).
	//
	// datasetID is the dataset this worker trains on: the job's, or in a
	// federated job the one this node registered as local.
	datasetID string
	w         *train.Worker
	dl        *train.DiLoCo // the outer loop, in DiLoCo mode (spec.InnerSteps > 0)
	// closeGPU releases the worker's GPU (its device model and device) when
	// the worker computes on one (jobRunner.gpu); nil otherwise.
	closeGPU func()
	data     *shard.Dataset
	manifest *shard.Manifest
	cfg      model.Config
	tok      model.Tokenizer

	// Owned by the run goroutine: read and written only there, no lock.
	lastCkpt int // step of the last checkpoint this node recorded
	// shares are a federated job's per-member shares of the batch for the
	// ring sharesKey (the members, joined).
	shares    []int
	sharesKey string

	// The epoch changes being timed (failover.go), owned by the run
	// goroutine: the epoch last trained in, and the change to the current
	// one until its first step. epochSeen is when runEpoch's watcher saw
	// the next epoch committed.
	lastEpoch coordinator.Epoch
	change    *epochChange
	epochSeen atomic.Pointer[epochSighting]

	// gaveUp is set when run returned without the job having ended (its
	// inputs could not be prepared): the job loop starts a new runner.
	gaveUp atomic.Bool

	// Guarded by mu: also read by control handlers, JobStatus and the
	// metrics.
	mu      sync.Mutex
	prog    JobProgress
	losses  []float64     // global loss of each step this worker ran, by step (NaN: not run here)
	hist    JobHistory    // the steps this worker ran, bounded (history.go)
	sumStep time.Duration // over the timed steps (see JobProgress.MeanStepMS)
	sumWait time.Duration
	frozen  map[uint64]syncStatus // epoch → status as this node entered it
	hashes  map[int]string        // steps applied → weights hash then
	// placement is the dataset's placement as frozen by sync for the
	// epoch: every member splits the batches with the same one. Written
	// under mu by sync, read by the run goroutine.
	placement shard.Placement
}

func (n *Node) newJobRunner(parent context.Context, j coordinator.Job) *jobRunner {
	ctx, cancel := context.WithCancel(parent)
	r := &jobRunner{n: n, id: j.ID, spec: j.Spec, ctx: ctx, cancel: cancel,
		dir: filepath.Join(n.cfg.DataDir, "jobs", j.ID), frozen: map[uint64]syncStatus{}, hashes: map[int]string{}}
	r.prog = JobProgress{Job: j.ID, Node: n.cfg.Name, Phase: PhasePreparing, Rank: -1, Device: r.deviceName()}
	// A worker that runs the job again (this node restarted) goes on with
	// the history it kept; the steps it runs again replace theirs.
	r.hist, _ = n.savedHistory(j.ID)
	r.hist.Job, r.hist.Node = j.ID, n.cfg.Name
	return r
}

func (r *jobRunner) run() {
	log := r.n.log.With("job", r.id)
	if err := r.prepare(); err != nil {
		if r.closeGPU != nil {
			r.closeGPU()
		}
		if r.ctx.Err() != nil {
			return
		}
		if errors.Is(err, cuda.ErrDeviceFault) { // this node's GPU, not the job, is at fault
			go r.n.leaveAfterFault(fmt.Errorf("job %s: %w", r.id, err))
			return
		}
		log.Error("job cannot start here", "err", err)
		r.gaveUp.Store(true)
		r.mu.Lock()
		r.prog.Error = err.Error()
		r.mu.Unlock()
		// A job that cannot even load its inputs fails for everyone.
		r.n.applyAnywhere(r.ctx, coordinator.SetJobState{ID: r.id, State: coordinator.JobFailed,
			Error: jobError("node %s: %v", r.n.cfg.Name, err), From: []coordinator.JobState{coordinator.JobRunning}})
		return
	}
	defer r.data.Close()
	if r.closeGPU != nil {
		defer r.closeGPU()
	}
	failures := 0 // epochs in a row that ended in an error without a step done
	for r.ctx.Err() == nil {
		st, changed := r.n.coord.Watch()
		if j, ok := st.Job(r.id); !ok || j.State != coordinator.JobRunning {
			r.setPhase(PhaseFinished)
			return
		}
		e := st.Epoch
		if !e.Has(r.n.cfg.Name) || !epochOnDevice(st, e, r.spec.DeviceKind()) {
			r.setPhase(PhaseWaiting)
			select {
			case <-r.ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		doneBefore := r.w.Done
		seen := time.Now()
		if s := r.epochSeen.Load(); s != nil && s.id == e.ID {
			seen = s.at
		}
		if r.change != nil && r.change.to.ID != e.ID {
			// The epoch changed again before a step was done on the last
			// one: one change, through it.
			r.change.via = append(r.change.via, r.change.to.ID)
			r.change.to = e
		} else if c := r.beginChange(r.lastEpoch, e, seen); c != nil {
			r.change = c
		}
		r.lastEpoch = e
		err := r.runEpoch(e)
		switch {
		case errors.Is(err, errJobEnded) || r.ctx.Err() != nil:
			r.setPhase(PhaseFinished)
			return
		case errors.Is(err, cuda.ErrDeviceFault):
			r.mu.Lock()
			r.prog.Error = err.Error()
			r.mu.Unlock()
			go r.n.leaveAfterFault(fmt.Errorf("job %s: %w", r.id, err))
			return
		case err != nil:
			log.Warn("training on this epoch's ring stopped; resynchronising", "epoch", e.ID, "err", err)
			r.mu.Lock()
			r.prog.Error = err.Error()
			r.mu.Unlock()
			// Membership changes and stalls are survived; an error that
			// comes back epoch after epoch without a step getting done is
			// not going away: fail the job, naming this node and the cause.
			// An epoch that ended because membership moved on is not a
			// failure of this node's.
			if r.w.Done > doneBefore {
				failures = 0
			} else if r.n.coord.State().Epoch.ID != e.ID {
				// not counted
			} else if failures++; failures >= maxEpochFailures {
				r.n.applyAnywhere(r.ctx, coordinator.SetJobState{ID: r.id, State: coordinator.JobFailed,
					Error: jobError("node %s: no step done in %d attempts; last error: %v", r.n.cfg.Name, failures, err),
					From:  []coordinator.JobState{coordinator.JobRunning}})
			}
			r.awaitNewEpoch(e.ID)
		}
	}
}

// prepare fetches the job's inputs and builds the worker.
func (r *jobRunner) prepare() error {
	n, spec := r.n, r.spec
	st := r.currentState()
	j, _ := st.Job(r.id)
	r.datasetID = spec.Dataset
	if spec.Federated {
		r.datasetID = ""
		for _, id := range spec.Datasets {
			if d, ok := st.Dataset(id); ok && d.Local && d.Source == n.cfg.Name {
				r.datasetID = id
				break
			}
		}
		if r.datasetID == "" {
			return fmt.Errorf("this federated job trains every member on its own local dataset, and %s registered none of its datasets (`braid data register --local`)", n.cfg.Name)
		}
	}
	d, ok := st.Dataset(r.datasetID)
	if !ok {
		return fmt.Errorf("dataset %s is not registered", r.datasetID[:12])
	}
	if err := os.MkdirAll(filepath.Join(r.dir, "base"), dataDirPerm); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(r.dir, "data"), dataDirPerm); err != nil {
		return err
	}
	// The base's files under their names in a directory of this node's
	// own: the names are model file names (the coordinator admits only
	// those for a tokenizer's files), never a path.
	for _, f := range baseObjects(spec.Base) {
		if f.max == 0 {
			return fmt.Errorf("the base model names %.64q, which is no model file", f.name)
		}
		if err := n.ensureObject(r.ctx, f.hash, blobstore.SizeUnknown, j.SubmittedBy); err != nil {
			return fmt.Errorf("fetching the base model's %s: %w", f.name, err)
		}
		if err := n.linkObject(f.hash, filepath.Join(r.dir, "base"), f.name); err != nil {
			return err
		}
	}
	if err := n.ensureObject(r.ctx, d.Manifest, blobstore.SizeUnknown, d.Source); err != nil {
		return fmt.Errorf("fetching the manifest of %s: %w", d.Name, err)
	}
	if err := n.linkObject(d.Manifest, filepath.Join(r.dir, "data"), shard.ManifestName); err != nil {
		return err
	}
	data, err := shard.Open(filepath.Join(r.dir, "data"))
	if err != nil {
		return err
	}
	ck, err := model.LoadCheckpoint(filepath.Join(r.dir, "base"))
	if err != nil {
		data.Close()
		return err
	}
	if data.Manifest.Vocab > ck.Config.Vocab {
		data.Close()
		return fmt.Errorf("dataset %s has a vocabulary of %d, the base model %d", d.Name, data.Manifest.Vocab, ck.Config.Vocab)
	}
	w, err := r.newWorker(trainConfig(spec), ck, data)
	if err != nil {
		data.Close()
		return err
	}
	r.w, r.data, r.manifest, r.cfg, r.tok = w, data, data.Manifest, ck.Config, ck.Tokenizer
	w.FixedBatch = spec.Federated // each unit draws a fixed share from its own data
	if spec.InnerSteps > 0 {
		w.LocalBatch = true
		if r.dl, err = train.NewDiLoCo(w, spec.InnerSteps, orF(spec.OuterLR, DefaultOuterLR), orF(spec.OuterMomentum, DefaultOuterMomentum)); err != nil {
			data.Close()
			return err
		}
	}
	// A job that has a checkpoint resumes from it: after a restart of the
	// whole cluster every member does, so they agree.
	if cp, ok := j.LastCheckpoint(); ok {
		if err := n.ensureObject(r.ctx, cp.State, blobstore.SizeUnknown, cp.Holders...); err != nil {
			data.Close()
			return fmt.Errorf("fetching the checkpoint of step %d: %w", cp.Step, err)
		}
		b, err := r.readObject(cp.State)
		if err != nil {
			data.Close()
			return err
		}
		if err := r.restore(b); err != nil {
			data.Close()
			return fmt.Errorf("restoring the checkpoint of step %d: %w", cp.Step, err)
		}
		r.lastCkpt = cp.Step
		if r.dl != nil {
			if err := r.restoreOwnState(cp); err != nil {
				data.Close()
				return err
			}
		}
		n.log.Info("job resumes from its checkpoint", "job", r.id, "step", cp.Step)
	}
	r.mu.Lock()
	if _, ok := j.LastCheckpoint(); ok {
		r.prog.ResumedFrom = w.Done // where the restored state is, not where the checkpoint says it is
		r.prog.ResumedHash = w.WeightsHash()
	}
	r.prog.Step = w.Done
	r.prog.WeightsHash = w.WeightsHash()
	r.mu.Unlock()
	return nil
}

// newWorker builds the job's worker from the base checkpoint: on this
// node's GPU when the job runs on GPUs (jobRunner.gpu, in bf16 mixed
// precision; r.closeGPU then releases it), else on the CPU.
func (r *jobRunner) newWorker(cfg train.JobConfig, ck *model.Checkpoint, data *shard.Dataset) (*train.Worker, error) {
	g := r.gpu()
	if g == nil {
		newModel := model.New
		if _, lora := cfg.LoRA(); lora && ck.Config.Arch != model.ArchGPT2 && ck.Format.Dtype == safetensors.BF16 {
			newModel = model.NewFrozenBF16 // the frozen base stays in bf16: no float32 copy of it
		}
		m, err := newModel(ck.Config, cfg.MicroBatch, data.Manifest.SeqLen)
		if err != nil {
			return nil, err
		}
		m.SetBaseWeights(ck.Params)
		return train.NewWorker(cfg, m, data)
	}
	dev, err := cuda.Open(g.Index)
	if err != nil {
		return nil, err
	}
	host, err := model.NewInference(ck.Config, 1, 1) // the host copy of the weights
	if err != nil {
		dev.Close()
		return nil, err
	}
	copy(host.Params, ck.Params)
	dm, err := cudamodel.New(dev, ck.Config, cfg.MicroBatch, data.Manifest.SeqLen, cuda.BF16)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("%w (a job's --micro-batch sets the batch on each GPU)", err)
	}
	w, err := train.NewWorkerOnDevice(cfg, host, dm, data)
	if err != nil {
		dm.Close()
		dev.Close()
		return nil, err
	}
	r.closeGPU = func() { w.Close(); dm.Close(); dev.Close() }
	r.n.log.Info("job trains on the GPU", "job", r.id, "gpu", dev.Info.String(), "precision", cuda.BF16.String())
	return w, nil
}

func (r *jobRunner) readObject(h string) ([]byte, error) {
	p, err := r.n.store.Path(h)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// runEpoch syncs with epoch e's members and trains until the epoch or the
// job changes. It returns errJobEnded when the job is over.
func (r *jobRunner) runEpoch(e coordinator.Epoch) error {
	n := r.n
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	// The epoch (or the job) changing ends this epoch's work at once: a
	// step in flight fails and its ring closes.
	go func() {
		for {
			st, changed := n.coord.Watch()
			j, ok := st.Job(r.id)
			if st.Epoch.ID != e.ID || !ok || j.State != coordinator.JobRunning {
				if st.Epoch.ID != e.ID {
					r.epochSeen.Store(&epochSighting{st.Epoch.ID, time.Now()})
				}
				cancel()
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()
	rank := slices.Index(e.Members, n.cfg.Name)
	r.mu.Lock()
	r.prog.Epoch, r.prog.Rank, r.prog.Members, r.prog.Phase = e.ID, rank, slices.Clone(e.Members), PhaseSyncing
	r.mu.Unlock()
	if err := r.sync(ctx, e); err != nil {
		return err
	}
	r.change.synced(r)
	n.ringMu.Lock()
	defer n.ringMu.Unlock()
	ring, err := r.epochRing(ctx, e)
	if err != nil {
		return err
	}
	defer ring.Close()
	r.change.ringUp()
	red := ringReducer{ring}
	r.setPhase(PhaseTraining)
	if r.dl != nil {
		return r.trainDiLoCo(ctx, e, rank, ring)
	}
	epochSteps := 0
	for r.w.Done < r.spec.Steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Rank 0 evaluates the job's held-out split; in a federated job every
		// member evaluates its own unit's.
		evaluates := rank == 0 || r.spec.Federated
		if evaluates && r.w.Done == 0 && r.spec.EvalEvery > 0 && r.progress().BaseHeldoutLoss == 0 {
			r.eval(true)
		}
		step := r.w.Done
		part, err := r.fetchPart(ctx, step, e.Members, rank)
		if err != nil {
			return err
		}
		if n.deps.DeviceFault != nil && n.deps.DeviceFault(r.w.Done) {
			return fmt.Errorf("step %d: %w (injected by a test)", r.w.Done, cuda.ErrDeviceFault)
		}
		start, sent0 := time.Now(), ring.BytesSent()
		res, err := r.w.Step(ctx, part, red)
		sent := ring.BytesSent() - sent0
		n.wireBytes.Add(sent)
		r.mu.Lock()
		r.prog.WireBytes += sent
		r.mu.Unlock()
		if err != nil {
			return err
		}
		if n.deps.PerturbWeights != nil && n.deps.PerturbWeights(r.w.Done) {
			r.w.Model.Params[0] += 1e-3 // a fault injected by a test: replicas diverge
		}
		elapsed := time.Since(start)
		r.steppedAfterChange()
		if epochSteps == 0 && rank == 0 {
			r.recordEpochServed(e, r.w.Done)
		}
		r.mu.Lock()
		r.recordStepLocked(res, elapsed)
		r.prog.WireBytesPerStep = sent
		if epochSteps++; epochSteps > 2 {
			r.sumStep += elapsed
			r.sumWait += res.Wait
			r.prog.Steps++
			r.prog.MeanStepMS = float64(r.sumStep.Microseconds()) / 1e3 / float64(r.prog.Steps)
			r.prog.MeanWaitMS = float64(r.sumWait.Microseconds()) / 1e3 / float64(r.prog.Steps)
		}
		r.mu.Unlock()
		if r.spec.HashEvery > 0 && r.w.Done%r.spec.HashEvery == 0 || r.w.Done == r.spec.Steps {
			// Read outside the lock: on a GPU it waits for the device.
			h, err := r.w.WeightsHashErr()
			if err != nil {
				return err // a GPU fault: run leaves the cluster
			}
			r.mu.Lock()
			r.hashes[r.w.Done] = h
			r.prog.WeightsHash = h
			delete(r.hashes, r.w.Done-10*max(r.spec.HashEvery, 1))
			r.mu.Unlock()
		}
		if ee := r.spec.EvalEvery; ee > 0 && r.w.Done%ee == 0 && evaluates {
			r.eval(false)
		}
		if ce := r.spec.CheckpointEvery; ce > 0 && r.w.Done%ce == 0 {
			// Every worker's history reaches its disk at the checkpoint
			// steps: a kill -9 loses at most one interval of points.
			n.writeHistory(r)
		}
		if rank != 0 {
			continue
		}
		// Rank 0's duties: compare replicas, evaluate, checkpoint.
		if he := r.spec.HashEvery; he > 0 && step > 0 && step%he == 0 {
			go r.compareReplicas(ctx, e, step)
		}
		if ce := r.spec.CheckpointEvery; ce > 0 && r.w.Done%ce == 0 && r.w.Done < r.spec.Steps {
			if err := r.checkpoint(r.ctx, e); err != nil {
				n.log.Warn("checkpoint failed", "job", r.id, "step", r.w.Done, "err", err)
			}
		}
	}
	// All steps applied.
	return r.finishJob(ctx, e, rank, r.w.Done)
}

// finishJob ends the last epoch of the job, for the synchronous and the
// DiLoCo loops alike, once done steps are applied. Rank 0 evaluates (unless
// it has at done), writes the final checkpoint, waits for the units'
// evaluations of a federated job, and completes the job. The other ranks (a
// federated unit after evaluating its own held-out split) wait until the
// job ends, or until a new epoch makes one of them rank 0.
func (r *jobRunner) finishJob(ctx context.Context, e coordinator.Epoch, rank, done int) error {
	n := r.n
	if rank == 0 {
		if r.spec.EvalEvery > 0 && r.progress().HeldoutStep != done {
			r.eval(false)
		}
		if r.lastCkpt != done {
			if err := r.checkpoint(r.ctx, e); err != nil {
				return fmt.Errorf("final checkpoint: %w", err)
			}
		}
		if r.spec.Federated && r.spec.EvalEvery > 0 {
			r.awaitUnitEvals(ctx, e)
		}
		if err := n.applyAnywhere(ctx, coordinator.SetJobState{ID: r.id, State: coordinator.JobCompleted,
			From: []coordinator.JobState{coordinator.JobRunning}}); err != nil && !errors.Is(err, coordinator.ErrJobFinal) {
			return err
		}
		n.log.Info("job completed", "job", r.id, "steps", done)
		return errJobEnded
	}
	if r.spec.Federated && r.spec.EvalEvery > 0 && r.progress().HeldoutStep != done {
		r.eval(false) // this unit's held-out split, after the last step
	}
	r.setPhase(PhaseFinished)
	<-ctx.Done()
	if r.ctx.Err() != nil || !r.jobRunning() {
		return errJobEnded
	}
	return ctx.Err()
}

// currentState is the replicated state once this node has caught up with
// the cluster's (Coordinator.CurrentState), waiting at most
// currentStateWait. A node that has just restarted may not have applied its
// whole log yet: without the wait it could miss the job's last checkpoint,
// start from the base model and have to copy a peer's snapshot (for a
// DiLoCo job, with that peer's inner moments instead of its own). After
// the wait it goes on with the state it has: sync catches it up.
func (r *jobRunner) currentState() coordinator.State {
	ctx, cancel := context.WithTimeout(r.ctx, currentStateWait)
	defer cancel()
	for {
		if st, err := r.n.coord.CurrentState(ctx); err == nil {
			return st
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return r.n.coord.State()
		case <-t.C:
		}
	}
}

// currentStateWait bounds currentState's wait (an election, a restart's
// log replay).
const currentStateWait = 10 * time.Second

// jobRunning reports whether the replicated state still has the job
// running.
func (r *jobRunner) jobRunning() bool {
	j, ok := r.n.coord.State().Job(r.id)
	return ok && j.State == coordinator.JobRunning
}

// inEpoch reports whether the runner is still in epoch.
func (r *jobRunner) inEpoch(epoch uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prog.Epoch == epoch
}

// memberAddr is name's transport address in the replicated state.
func (n *Node) memberAddr(name string) string {
	m, _ := n.coord.Member(name)
	return m.Addr
}
