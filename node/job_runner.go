package node

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
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
type jobRunner struct {
	n      *Node
	id     string
	spec   coordinator.JobSpec
	ctx    context.Context
	cancel context.CancelFunc
	dir    string // DataDir/jobs/ID: links to the base model and the shards
	// datasetID is the dataset this worker trains on: the job's, or in a
	// federated job the one this node registered as local.
	datasetID string

	w  *train.Worker
	dl *train.DiLoCo // the outer loop, in DiLoCo mode (spec.InnerSteps > 0)
	// closeGPU releases the worker's GPU (its device model and device) when
	// the worker computes on one (jobRunner.gpu); nil otherwise.
	closeGPU func()
	data     *shard.Dataset
	manifest *shard.Manifest
	cfg      model.Config
	tok      model.Tokenizer

	// gaveUp is set when run returned without the job having ended (its
	// inputs could not be prepared): the job loop starts a new runner.
	gaveUp atomic.Bool

	mu       sync.Mutex
	prog     JobProgress
	losses   []float64     // global loss of each step this worker ran, by step (NaN: not run here)
	sumStep  time.Duration // over the timed steps (see JobProgress.MeanStepMS)
	sumWait  time.Duration
	frozen   map[uint64]syncStatus // epoch → status as this node entered it
	hashes   map[int]string        // steps applied → weights hash then
	lastCkpt int                   // step of the last checkpoint this node recorded
	// placement is the dataset's placement as frozen by sync for the
	// epoch: every member splits the batches with the same one.
	placement shard.Placement
	// shares are a federated job's per-member shares of the batch for the
	// ring sharesKey (the members, joined).
	shares    []int
	sharesKey string
}

// JobProgress is one worker's view of the running job.
type JobProgress struct {
	Job             string   `json:"job"`
	Node            string   `json:"node"`
	Phase           string   `json:"phase"`            // preparing, waiting, syncing, training, finished
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
}

// syncStatus is a member's state when it entered an epoch.
type syncStatus struct {
	Ready   bool   `json:"ready"` // false: not in that epoch yet
	Done    int    `json:"done"`
	Reduced int    `json:"reduced"` // step of the reduced gradient kept, -1 if none
	Hash    string `json:"hash"`
	// Placement is the version of the dataset's placement this member
	// froze for the epoch (the batch split depends on it).
	Placement uint64 `json:"placement"`
}

func (n *Node) newJobRunner(parent context.Context, j coordinator.Job) *jobRunner {
	ctx, cancel := context.WithCancel(parent)
	r := &jobRunner{n: n, id: j.ID, spec: j.Spec, ctx: ctx, cancel: cancel,
		dir: filepath.Join(n.cfg.DataDir, "jobs", j.ID), frozen: map[uint64]syncStatus{}, hashes: map[int]string{}}
	r.prog = JobProgress{Job: j.ID, Node: n.cfg.Name, Phase: "preparing", Rank: -1, Device: r.deviceName()}
	return r
}

func (r *jobRunner) setPhase(p string) {
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
	return p
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
			r.setPhase("finished")
			return
		}
		e := st.Epoch
		if !e.Has(r.n.cfg.Name) || !epochOnDevice(st, e, r.spec.DeviceKind()) {
			r.setPhase("waiting")
			select {
			case <-r.ctx.Done():
				return
			case <-changed:
			}
			continue
		}
		doneBefore := r.w.Done
		err := r.runEpoch(e)
		switch {
		case errors.Is(err, errJobEnded) || r.ctx.Err() != nil:
			r.setPhase("finished")
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

// awaitNewEpoch asks the leader for a fresh epoch (if membership does not
// bring one first) and waits until it is committed.
func (r *jobRunner) awaitNewEpoch(epoch uint64) {
	asked := false
	deadline := time.Now().Add(renewAfter)
	for r.ctx.Err() == nil {
		st, changed := r.n.coord.Watch()
		if st.Epoch.ID != epoch {
			return
		}
		if j, ok := st.Job(r.id); !ok || j.State != coordinator.JobRunning {
			return
		}
		if !asked && time.Now().After(deadline) {
			r.n.renewEpoch(r.ctx, epoch)
			asked = true
		}
		select {
		case <-r.ctx.Done():
		case <-changed:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// maxEpochFailures is how many epochs in a row may end in an error on a
// node without any step getting done before the node fails the job.
const maxEpochFailures = 8

// renewAfter is how long a worker whose ring broke waits for membership to
// produce a new epoch before it asks the leader for one (the ring may have
// broken with everyone alive).
const renewAfter = 1500 * time.Millisecond

// prepare fetches the job's inputs and builds the worker.
func (r *jobRunner) prepare() error {
	n, spec := r.n, r.spec
	st := n.coord.State()
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
	for _, f := range []struct{ hash, name string }{{spec.Base.Config, "config.json"}, {spec.Base.Weights, "model.safetensors"}} {
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
		m, err := model.New(ck.Config, cfg.MicroBatch, data.Manifest.SeqLen)
		if err != nil {
			return nil, err
		}
		copy(m.Params, ck.Params)
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

// ringReducer adapts an allreduce.Ring to train.Reducer.
type ringReducer struct{ r *allreduce.Ring }

func (rr ringReducer) Start(ctx context.Context, step uint64) train.ReduceOp {
	return rr.r.Start(ctx, step)
}
func (rr ringReducer) AllReduce(ctx context.Context, step uint64, buf []float32) error {
	return rr.r.AllReduce(ctx, step, buf)
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
	r.prog.Epoch, r.prog.Rank, r.prog.Members, r.prog.Phase = e.ID, rank, slices.Clone(e.Members), "syncing"
	r.mu.Unlock()
	if err := r.sync(ctx, e); err != nil {
		return err
	}
	var members []allreduce.Member
	st := n.coord.State()
	for _, name := range e.Members {
		m, ok := st.Member(name)
		if !ok {
			return fmt.Errorf("epoch %d member %s is unknown", e.ID, name)
		}
		members = append(members, allreduce.Member{ID: transportPeer(name), Addr: m.Addr})
	}
	n.ringMu.Lock()
	defer n.ringMu.Unlock()
	rcfg := allreduce.DefaultConfig()
	if r.spec.Wire != "" {
		dt, err := allreduce.ParseDtype(r.spec.Wire)
		if err != nil {
			return err
		}
		rcfg.Dtype = dt
	}
	ring, err := allreduce.NewRing(rcfg, n.tr, members)
	if err != nil {
		return err
	}
	defer ring.Close()
	red := ringReducer{ring}
	r.setPhase("training")
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
		part, err := r.part(step, e.Members, rank)
		if err != nil {
			return err
		}
		if err := r.ensureShards(ctx, part); err != nil {
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
		r.mu.Lock()
		r.prog.Step, r.prog.Loss, r.prog.Error = r.w.Done, res.Loss, ""
		r.prog.WireBytesPerStep = sent
		if res.Step < maxLossHistory {
			for len(r.losses) <= res.Step {
				r.losses = append(r.losses, math.NaN())
			}
			r.losses[res.Step] = res.Loss
		}
		r.prog.StepMS, r.prog.WaitMS = float64(elapsed.Microseconds())/1e3, float64(res.Wait.Microseconds())/1e3
		if elapsed > 0 {
			r.prog.TokensPerSec = float64(res.Tokens) / elapsed.Seconds()
		}
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
	if rank == 0 {
		if r.spec.EvalEvery > 0 && r.progress().HeldoutStep != r.w.Done {
			r.eval(false)
		}
		if r.lastCkpt != r.w.Done {
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
		n.log.Info("job completed", "job", r.id, "steps", r.w.Done)
		return errJobEnded
	}
	if r.spec.Federated && r.spec.EvalEvery > 0 && r.progress().HeldoutStep != r.w.Done {
		r.eval(false) // this unit's held-out split, after the last step
	}
	r.setPhase("finished")
	<-ctx.Done() // rank 0 completes the job (or a new epoch makes another rank 0)
	if r.ctx.Err() != nil {
		return errJobEnded
	}
	if j, ok := n.coord.State().Job(r.id); !ok || j.State != coordinator.JobRunning {
		return errJobEnded
	}
	return ctx.Err()
}

// part is this member's share of global batch step.
func (r *jobRunner) part(step int, members []string, rank int) ([]int64, error) {
	nseq := r.data.NumSequences(shard.Train)
	if nseq == 0 {
		return nil, fmt.Errorf("dataset has no training sequences")
	}
	if r.spec.Federated {
		return r.unitPart(step, members, rank, nseq)
	}
	dataEpoch, k := shard.EpochStep(int64(step), nseq, r.spec.GlobalBatch)
	parts, err := shard.Assign(shard.AssignParams{Seed: r.spec.Seed, DataEpoch: dataEpoch, Step: k,
		GlobalBatch: r.spec.GlobalBatch, Members: members, Placement: r.placement,
		Shards: r.manifest.SplitShards(shard.Train)})
	if err != nil {
		return nil, err
	}
	return parts[rank], nil
}

// unitPart is this member's share of global batch step in a federated
// job: the batch is apportioned over the epoch's members by the training
// sequences each one's local dataset holds, and each member draws its
// share from its own data (shard.Apportion, shard.UnitBatch).
func (r *jobRunner) unitPart(step int, members []string, rank int, mine int64) ([]int64, error) {
	// The shares depend only on the members and their (immutable)
	// datasets: computed once per ring, not every step.
	if key := strings.Join(members, ","); key != r.sharesKey {
		r.shares, r.sharesKey = r.unitShares(members), key
	}
	return shard.UnitBatch(r.spec.Seed, int64(step), r.shares[rank], mine)
}

// unitShares apportions the global batch over members by the training
// sequences of each one's local dataset.
func (r *jobRunner) unitShares(members []string) []int {
	st := r.n.coord.State()
	counts := make([]int64, len(members))
	for i, m := range members {
		for _, id := range r.spec.Datasets {
			d, ok := st.Dataset(id)
			if !ok || !d.Local || d.Source != m {
				continue
			}
			for _, s := range d.Shards {
				if s.Split == string(shard.Train) {
					counts[i] += int64(s.Sequences)
				}
			}
			break
		}
	}
	return shard.Apportion(r.spec.GlobalBatch, counts)
}

// ensureShards makes the shards of part's sequences local (fetched from
// their holders when this node does not hold them) and visible to the
// dataset.
func (r *jobRunner) ensureShards(ctx context.Context, part []int64) error {
	seen := map[string]bool{}
	for _, id := range part {
		e, _, err := r.data.Locate(shard.Train, id)
		if err != nil {
			return err
		}
		if seen[e.Hash] {
			continue
		}
		seen[e.Hash] = true
		if err := r.ensureShard(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// ensureHeldout makes the held-out shards local.
func (r *jobRunner) ensureHeldout(ctx context.Context) error {
	for _, e := range r.manifest.SplitShards(shard.Heldout) {
		if err := r.ensureShard(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// ensureShard makes one shard local and visible to the dataset. The
// replicated state is read (a copy of all of it) only when the shard must
// be fetched, not on every step.
func (r *jobRunner) ensureShard(ctx context.Context, e shard.ShardEntry) error {
	link := filepath.Join(r.data.Dir, e.Hash+shard.ShardExt)
	if !r.n.store.Has(e.Hash) {
		// Gone from the store (Scrub deleted a corrupt copy): the old
		// link would keep the bad bytes alive; fetch afresh.
		os.Remove(link)
		d, _ := r.n.coord.State().Dataset(r.datasetID)
		if err := r.n.ensureObject(ctx, e.Hash, e.Bytes, append(slices.Clone(d.Placement[e.Hash]), d.Source)...); err != nil {
			return fmt.Errorf("fetching shard %s: %w", e.Hash[:12], err)
		}
	}
	return r.n.linkObject(e.Hash, r.data.Dir, e.Hash+shard.ShardExt)
}

// eval scores the held-out split (rank 0).
func (r *jobRunner) eval(base bool) {
	if r.data.NumSequences(shard.Heldout) == 0 {
		return
	}
	if err := r.ensureHeldout(r.ctx); err != nil {
		r.n.log.Warn("held-out shards unavailable", "job", r.id, "err", err)
		return
	}
	loss, err := r.w.Eval()
	if err != nil {
		r.n.log.Warn("held-out evaluation failed", "job", r.id, "err", err)
		return
	}
	r.mu.Lock()
	if base {
		r.prog.BaseHeldoutLoss = loss
	}
	r.prog.HeldoutLoss, r.prog.HeldoutStep = loss, r.w.Done
	r.mu.Unlock()
}

// sync agrees with e's members on the step to start from (see jobRunner).
func (r *jobRunner) sync(ctx context.Context, e coordinator.Epoch) error {
	n := r.n
	r.mu.Lock()
	if r.dl != nil {
		// A DiLoCo round that did not finish is redone from its start.
		r.dl.Rollback()
	}
	d, _ := n.coord.State().Dataset(r.datasetID)
	r.placement = shard.Placement(d.Placement)
	me := syncStatus{Ready: true, Done: r.w.Done, Reduced: -1, Hash: r.w.WeightsHash(), Placement: d.PlacementVersion}
	if r.spec.Federated {
		me.Placement = 0 // each unit its own local dataset: no placement in the split
	}
	if step, _, ok := r.w.LastReduced(); ok && r.dl == nil {
		me.Reduced = step
	}
	r.frozen[e.ID] = me
	for k := range r.frozen {
		if k+8 < e.ID {
			delete(r.frozen, k)
		}
	}
	r.mu.Unlock()
	st := n.coord.State()
	statuses := map[string]syncStatus{n.cfg.Name: me}
	for _, name := range e.Members {
		if name == n.cfg.Name {
			continue
		}
		m, _ := st.Member(name)
		for {
			resp, err := n.callControl(ctx, name, m.Addr, controlRequest{Op: opJobSync, JobSync: &jobSyncRequest{Job: r.id, Epoch: e.ID}})
			if err == nil && resp.JobSync != nil && resp.JobSync.Ready {
				statuses[name] = *resp.JobSync
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("sync of epoch %d: waiting for %s: %w", e.ID, name, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	plan, err := planSync(n.cfg.Name, e.Members, statuses)
	if err != nil {
		return fmt.Errorf("sync of epoch %d: %w", e.ID, err)
	}
	return r.catchUp(ctx, e.ID, plan, runnerCatchUp{r})
}

// syncPlan is how a member enters an epoch, decided from the statuses every
// member froze for it (planSync).
type syncPlan struct {
	Target  int    // the step every member must have done
	Ref     string // the reference: the first member in ring order at Target
	RefHash string // its weights hash, which every member must end with
	InStep  bool   // this member is at Target with RefHash: nothing to do
	// GradFrom are the members, in ring order, that kept the reduced
	// gradient of step Target−1 and are in step with the reference: when
	// this member is exactly one step behind, applying that gradient
	// catches it up (a step the ring completed while it was cut off).
	GradFrom []string
	// SnapshotFrom are the members in step with the reference, the
	// reference first, whose full snapshot this member can take instead.
	SnapshotFrom []string
}

// planSync decides how member self enters an epoch with members (in ring
// order), given every member's frozen status. Every member reads the same
// statuses, so all pick the same target step and the same reference. Being
// at the target is not enough to be in sync: a member that completed a step
// on an older ring may hold other bytes than members that redid it on a
// newer one; the weights hash decides. The members must also agree on the
// dataset's placement, which the batch split depends on: a placement
// committed while members synced is an error, and they resync on a fresh
// epoch.
func planSync(self string, members []string, statuses map[string]syncStatus) (syncPlan, error) {
	me, ok := statuses[self]
	if !ok {
		return syncPlan{}, fmt.Errorf("no status of this node (%s)", self)
	}
	for _, name := range members {
		s, ok := statuses[name]
		if !ok {
			return syncPlan{}, fmt.Errorf("no status of member %s", name)
		}
		if s.Placement != me.Placement {
			return syncPlan{}, fmt.Errorf("%s sees placement version %d, this node %d", name, s.Placement, me.Placement)
		}
	}
	var p syncPlan
	for _, name := range members {
		p.Target = max(p.Target, statuses[name].Done)
	}
	for _, name := range members {
		if statuses[name].Done == p.Target {
			p.Ref = name
			break
		}
	}
	p.RefHash = statuses[p.Ref].Hash
	if me.Done == p.Target && me.Hash == p.RefHash {
		p.InStep = true
		return p, nil
	}
	inStep := func(name string) bool {
		s := statuses[name]
		return name != self && s.Done == p.Target && s.Hash == p.RefHash
	}
	if me.Done == p.Target-1 {
		for _, name := range members {
			if inStep(name) && statuses[name].Reduced == p.Target-1 {
				p.GradFrom = append(p.GradFrom, name)
			}
		}
	}
	if inStep(p.Ref) {
		p.SnapshotFrom = append(p.SnapshotFrom, p.Ref)
	}
	for _, name := range members {
		if name != p.Ref && inStep(name) {
			p.SnapshotFrom = append(p.SnapshotFrom, name)
		}
	}
	return p, nil
}

// catchUpper is what catchUp needs of a worker: its position, and the two
// ways to catch up with a peer. The job runner is one (runnerCatchUp);
// tests inject others.
type catchUpper interface {
	Done() int
	Hash() string
	Grad(ctx context.Context, peer string, step int) error // apply peer's reduced gradient of step
	Snapshot(ctx context.Context, peer string) error       // restore peer's snapshot
}

// catchUp carries out plan: the reduced gradient from the first member of
// GradFrom that gives the reference's weights, else the snapshot of the
// first member of SnapshotFrom that does. A source that fails, or leaves
// the weights anywhere but the reference's, is recorded and the next one
// tried; when none is left the error names each.
func (r *jobRunner) catchUp(ctx context.Context, epoch uint64, plan syncPlan, w catchUpper) error {
	if plan.InStep {
		return nil
	}
	var errs []error
	for _, name := range plan.GradFrom {
		if err := w.Grad(ctx, name, plan.Target-1); err != nil {
			errs = append(errs, fmt.Errorf("reduced gradient from %s: %w", name, err))
			continue
		}
		if h := w.Hash(); h != plan.RefHash {
			// Applied to other weights than the reference's: take the
			// reference's state instead.
			errs = append(errs, fmt.Errorf("the gradient from %s gave weights %s, the reference %s has %s", name, short(h), plan.Ref, short(plan.RefHash)))
			break
		}
		r.n.log.Info("caught up with the step the ring completed elsewhere", "job", r.id, "step", plan.Target-1, "from", name)
		return nil
	}
	for _, name := range plan.SnapshotFrom {
		if err := w.Snapshot(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("snapshot from %s: %w", name, err))
			continue
		}
		if w.Done() != plan.Target || w.Hash() != plan.RefHash {
			errs = append(errs, fmt.Errorf("the snapshot from %s is at step %d, want %d with weights %s", name, w.Done(), plan.Target, short(plan.RefHash)))
			continue
		}
		r.n.log.Info("caught up from a peer's snapshot", "job", r.id, "step", plan.Target, "from", name)
		return nil
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no member in step with the reference to copy from"))
	}
	return fmt.Errorf("sync of epoch %d: cannot reach step %d (weights %s of %s) from step %d: %w", epoch, plan.Target, short(plan.RefHash), plan.Ref, w.Done(), errors.Join(errs...))
}

// short is a hash as logs and errors show it.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// runnerCatchUp is the job runner's own worker as a catchUpper.
type runnerCatchUp struct{ r *jobRunner }

func (c runnerCatchUp) Done() int    { return c.r.w.Done }
func (c runnerCatchUp) Hash() string { return c.r.w.WeightsHash() }
func (c runnerCatchUp) Grad(ctx context.Context, peer string, step int) error {
	return c.r.catchUpGrad(ctx, peer, step)
}
func (c runnerCatchUp) Snapshot(ctx context.Context, peer string) error {
	return c.r.catchUpSnapshot(ctx, peer)
}

// peerObject asks peer (a member of this epoch, syncing) to put its
// reduced gradient of step (op job-grad) or its snapshot (job-snapshot)
// into its store as an object, fetches that object and returns its bytes.
func (r *jobRunner) peerObject(ctx context.Context, peer, op string, step int) ([]byte, error) {
	resp, err := r.n.callControl(ctx, peer, r.n.memberAddr(peer), controlRequest{Op: op,
		JobObject: &jobObjectRequest{Job: r.id, Step: step, Epoch: r.progress().Epoch}})
	if err != nil {
		return nil, err
	}
	if resp.Object == nil {
		return nil, fmt.Errorf("%s answered %s without an object", peer, op)
	}
	if err := r.n.ensureObject(ctx, resp.Object.Hash, resp.Object.Size, peer); err != nil {
		return nil, err
	}
	return r.readObject(resp.Object.Hash)
}

// catchUpGrad fetches peer's reduced gradient of step and applies it.
func (r *jobRunner) catchUpGrad(ctx context.Context, peer string, step int) error {
	b, err := r.peerObject(ctx, peer, opJobGrad, step)
	if err != nil {
		return err
	}
	gstep, grads, err := decodeGrads(b, r.w.NumTrainable())
	if err != nil {
		return err
	}
	if gstep != step {
		return fmt.Errorf("%s sent the gradient of step %d, want %d", peer, gstep, step)
	}
	if err := r.w.ApplyReduced(step, grads); err != nil {
		return err
	}
	r.mu.Lock()
	r.prog.GradCatchUps++
	r.mu.Unlock()
	return nil
}

// catchUpSnapshot restores peer's full snapshot.
func (r *jobRunner) catchUpSnapshot(ctx context.Context, peer string) error {
	b, err := r.peerObject(ctx, peer, opJobSnapshot, 0)
	if err != nil {
		return err
	}
	return r.restore(b)
}

// snapshot and restore are the worker's, or in DiLoCo mode the outer
// loop's (the state of the last outer step).
func (r *jobRunner) snapshot() ([]byte, error) {
	if r.dl != nil {
		return r.dl.Snapshot()
	}
	return r.w.Snapshot()
}

func (r *jobRunner) restore(b []byte) error {
	var err error
	if r.dl != nil {
		err = r.dl.Restore(b)
	} else {
		err = r.w.Restore(b)
	}
	if err == nil {
		r.mu.Lock()
		r.prog.Restores++
		r.mu.Unlock()
	}
	return err
}

// The reduced-gradient object: "BRDG" | step u64 | n u32 | n float32, all
// little-endian.
func encodeGrads(step int, g []float32) []byte {
	b := make([]byte, 16+4*len(g))
	copy(b, "BRDG")
	binary.LittleEndian.PutUint64(b[4:], uint64(step))
	binary.LittleEndian.PutUint32(b[12:], uint32(len(g)))
	for i, v := range g {
		binary.LittleEndian.PutUint32(b[16+4*i:], math.Float32bits(v))
	}
	return b
}

func decodeGrads(b []byte, n int) (int, []float32, error) {
	if len(b) < 16 || string(b[:4]) != "BRDG" {
		return 0, nil, errors.New("node: not a reduced-gradient object")
	}
	step := binary.LittleEndian.Uint64(b[4:])
	if step > coordinator.MaxJobSteps || int(binary.LittleEndian.Uint32(b[12:])) != n || len(b) != 16+4*n {
		return 0, nil, fmt.Errorf("node: reduced-gradient object of %d bytes for step %d does not hold %d values", len(b), step, n)
	}
	g := make([]float32, n)
	for i := range g {
		g[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[16+4*i:]))
	}
	return int(step), g, nil
}

// checkpoint runs under the runner's context, not the epoch's: a new epoch
// committed meanwhile must not abort the recording of a checkpoint already
// written (a restart of the whole cluster resumes from the last recorded).
//
// checkpoint writes the weights (Hugging Face layout) and the worker's
// snapshot into the store, has the next Replicas−1 members of the ring
// copy them, and records the checkpoint through the leader.
func (r *jobRunner) checkpoint(ctx context.Context, e coordinator.Epoch) error {
	n := r.n
	snap, err := r.snapshot()
	if err != nil {
		return err
	}
	stateHash, _, err := n.store.Put(bytesReader(snap))
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(r.dir, "ckpt-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// The model's files in Hugging Face's layout, or in LoRA mode the
	// adapter's in PEFT's (the frozen base is the job's).
	cfgName, wName := "config.json", "model.safetensors"
	if a := r.w.LoRA(); a != nil {
		cfgName, wName = model.AdapterConfigFile, model.AdapterWeightsFile
		if err := model.SaveAdapter(tmp, a); err != nil {
			return err
		}
	} else {
		params, err := r.w.Weights() // from the GPU, when the worker trains there
		if err != nil {
			return err
		}
		if err := model.SaveCheckpoint(tmp, r.cfg, r.tok, params); err != nil {
			return err
		}
	}
	cfgHash, _, err := n.store.PutFile(filepath.Join(tmp, cfgName))
	if err != nil {
		return err
	}
	wHash, _, err := n.store.PutFile(filepath.Join(tmp, wName))
	if err != nil {
		return err
	}
	holders := []string{n.cfg.Name}
	rank := slices.Index(e.Members, n.cfg.Name)
	for i := 1; i < len(e.Members) && len(holders) < r.spec.Replicas; i++ {
		peer := e.Members[(rank+i)%len(e.Members)]
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err := n.callControl(fctx, peer, n.memberAddr(peer), controlRequest{Op: opFetch,
			Fetch: &fetchRequest{Hashes: []string{cfgHash, wHash, stateHash}, From: []string{n.cfg.Name}}})
		cancel()
		if err != nil {
			n.log.Warn("checkpoint replica failed", "job", r.id, "peer", peer, "err", err)
			continue
		}
		holders = append(holders, peer)
	}
	cp := coordinator.Checkpoint{Step: r.w.Done, Config: cfgHash, Weights: wHash, State: stateHash, Hash: r.w.WeightsHash(), Holders: holders}
	if err := n.applyAnywhere(ctx, coordinator.RecordCheckpoint{ID: r.id, Checkpoint: cp}); err != nil {
		return err
	}
	r.lastCkpt = r.w.Done
	n.log.Info("checkpoint recorded", "job", r.id, "step", cp.Step, "holders", holders)
	return nil
}

// awaitUnitEvals waits (a bounded time) until every member of a federated
// job has scored its own held-out split after the last step, so that the
// job ends with each unit's figure.
func (r *jobRunner) awaitUnitEvals(ctx context.Context, e coordinator.Epoch) {
	deadline := time.Now().Add(2 * time.Minute)
	for _, name := range e.Members {
		if name == r.n.cfg.Name {
			continue
		}
		for time.Now().Before(deadline) && ctx.Err() == nil {
			resp, err := r.n.callControl(ctx, name, r.n.memberAddr(name), controlRequest{Op: opJobProgress, JobObject: &jobObjectRequest{Job: r.id}})
			if err == nil && resp.JobProgress != nil && resp.JobProgress.HeldoutStep == r.spec.Steps {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// compareReplicas asks every member for its weights hash after step steps
// and fails the job, naming the node, when one differs from rank 0's.
func (r *jobRunner) compareReplicas(ctx context.Context, e coordinator.Epoch, step int) {
	r.mu.Lock()
	mine, ok := r.hashes[step]
	r.mu.Unlock()
	if !ok {
		return
	}
	for _, name := range e.Members {
		if name == r.n.cfg.Name {
			continue
		}
		resp, err := r.n.callControl(ctx, name, r.n.memberAddr(name), controlRequest{Op: opJobProgress, JobObject: &jobObjectRequest{Job: r.id, Step: step}})
		if err != nil || resp.JobProgress == nil || resp.JobProgress.WeightsHash == "" {
			continue // gone or not there yet: a later comparison will tell
		}
		if h := resp.JobProgress.WeightsHash; h != mine {
			msg := jobError("replicas diverged after step %d: %s's weights hash %s differs from %s's %s", step, name, h[:16], r.n.cfg.Name, mine[:16])
			r.n.log.Error("stopping the job", "job", r.id, "err", msg)
			r.n.applyAnywhere(ctx, coordinator.SetJobState{ID: r.id, State: coordinator.JobFailed, Error: msg,
				From: []coordinator.JobState{coordinator.JobRunning}})
			return
		}
	}
}

// inEpoch reports whether the runner is still in epoch.
func (r *jobRunner) inEpoch(epoch uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.prog.Epoch == epoch
}

// maxLossHistory bounds the per-step losses a worker keeps (JobLosses).
const maxLossHistory = 1 << 20

// JobLosses returns the global loss of every step of job id that this
// node's worker ran, indexed by step (NaN for steps it did not run: before
// it joined, or restored from a peer). Nil when it does not run the job.
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

// memberAddr is name's transport address in the replicated state.
func (n *Node) memberAddr(name string) string {
	m, _ := n.coord.Member(name)
	return m.Addr
}
