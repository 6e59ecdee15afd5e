package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
)

// Jobs (ARCHITECTURE.md, "The data flow of one fine-tuning job", steps 3-8).
//
// A job is submitted to any node (SubmitJob) once the client has uploaded
// the base model's files into that node's store; the node checks them
// there, and the job is committed through the leader. The leader starts submitted jobs one at a time (jobLoop). Every
// member of the committed epoch then runs the job (jobRunner, in
// job_runner.go): it fetches what it lacks by hash, agrees with the other
// members on where to start (sync), trains on its part of every global
// batch over a ring of the epoch's members, and rank 0 writes and
// replicates checkpoints and evaluates. Per-step progress is not
// replicated: each worker serves it (JobProgress) and the HTTP API merges
// what the members report.

// JobRequest is the body of POST /v1/jobs: a job as `braid job submit`
// asks for it. Zero fields take train.DefaultJobConfig's values.
type JobRequest struct {
	// Base names the base model's files — config.json, model.safetensors
	// (a sharded set arrives as one) and its tokenizer's files, if any — by
	// the hashes of the objects the client uploaded (PUT /v1/blobs;
	// node/push.Model reads a model directory and does it). Nothing names
	// a path: the node reads only its own store.
	Base    coordinator.ModelRef `json:"base"`
	Dataset string               `json:"dataset"` // name or ID

	Steps           int     `json:"steps"`
	GlobalBatch     int     `json:"global_batch"`
	MicroBatch      int     `json:"micro_batch,omitempty"`
	LR              float64 `json:"lr,omitempty"`
	Warmup          int     `json:"warmup,omitempty"`
	WeightDecay     float64 `json:"weight_decay,omitempty"`
	Clip            float64 `json:"clip,omitempty"`
	Seed            uint64  `json:"seed,omitempty"`
	CheckpointEvery int     `json:"checkpoint_every,omitempty"`
	EvalEvery       int     `json:"eval_every,omitempty"`
	HashEvery       int     `json:"hash_every,omitempty"`
	Replicas        int     `json:"replicas,omitempty"`
	// KeepCheckpoints is how many of the newest checkpoints the cluster
	// keeps (1..coordinator.MaxCheckpoints; 0: all MaxCheckpoints); older
	// ones are collected.
	KeepCheckpoints int `json:"keep_checkpoints,omitempty"`
	// Wire is the all-reduce's element type: fp32 (default), bf16, fp16, int8.
	Wire string `json:"wire,omitempty"`
	// Device is the device kind the job runs on: cpu (default) or cuda.
	// Only members that compute on it train; the job waits while none is
	// alive.
	Device string `json:"device,omitempty"`
	// Federated trains each member only on the local dataset it
	// registered, among Datasets (names or IDs; Dataset is then ignored).
	Federated bool     `json:"federated,omitempty"`
	Datasets  []string `json:"datasets,omitempty"`
	// InnerSteps > 0 selects DiLoCo: that many local steps between
	// all-reduces of the pseudo-gradient, with an outer Nesterov step of
	// OuterLR and OuterMomentum (defaults 0.7 and 0.9).
	InnerSteps    int     `json:"inner_steps,omitempty"`
	OuterLR       float64 `json:"outer_lr,omitempty"`
	OuterMomentum float64 `json:"outer_momentum,omitempty"`
	// LoRARank > 0 trains a LoRA adapter of that rank instead of the full
	// model (LR then defaults to train.DefaultLoRALR, weight decay to 0).
	LoRARank    int      `json:"lora_rank,omitempty"`
	LoRAAlpha   float64  `json:"lora_alpha,omitempty"`
	LoRADropout float64  `json:"lora_dropout,omitempty"`
	LoRATargets []string `json:"lora_targets,omitempty"`
}

// DiLoCo's outer optimizer defaults (the paper's).
const (
	DefaultOuterLR       = 0.7
	DefaultOuterMomentum = 0.9
)

// DefaultHashEvery is how often (in steps) the workers' weights are
// compared when the request does not say.
const DefaultHashEvery = 10

// SubmitJob validates req — its base model is read from this node's store,
// where the client uploaded it, and must decode as a checkpoint whose
// config.json and safetensors agree — and commits the job through the
// leader. It returns the job as committed.
func (n *Node) SubmitJob(ctx context.Context, req JobRequest) (coordinator.Job, error) {
	if err := coordinator.ValidDevice(req.Device); err != nil {
		return coordinator.Job{}, fmt.Errorf("node: %v", err)
	}
	// A dataset registered a moment ago through another node may not have
	// reached this node's copy of the state yet: give it a moment.
	names := append([]string{req.Dataset}, req.Datasets...)
	if req.Federated {
		names = req.Datasets
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	n.awaitState(wctx, func(st coordinator.State) bool {
		for _, k := range names {
			if _, ok := st.Dataset(k); !ok {
				return false
			}
		}
		return true
	})
	cancel()
	st := n.coord.State()
	var fed []string
	if req.Federated {
		if len(req.Datasets) == 0 {
			return coordinator.Job{}, fmt.Errorf("node: a federated job names the local datasets of its units")
		}
		units := map[string]string{}
		for _, key := range req.Datasets {
			d, ok := st.Dataset(key)
			if !ok {
				return coordinator.Job{}, fmt.Errorf("node: no dataset %q (each unit registers its own with `braid data register --local`)", key)
			}
			if !d.Local {
				return coordinator.Job{}, fmt.Errorf("node: dataset %s is shared, not local to one unit: a federated job trains only on local datasets", d.Name)
			}
			if other, dup := units[d.Source]; dup {
				return coordinator.Job{}, fmt.Errorf("node: %s holds two of the datasets (%s and %s); a federated job takes one per unit", d.Source, other, d.Name)
			}
			units[d.Source] = d.Name
			fed = append(fed, d.ID)
		}
		req.Dataset = fed[0]
	}
	ds, ok := st.Dataset(req.Dataset)
	if !ok {
		return coordinator.Job{}, fmt.Errorf("node: no dataset %q (register it with `braid data push`)", req.Dataset)
	}
	if ds.Local && !req.Federated {
		// Its shards never leave its unit: every other member would fail to
		// fetch them. Only a federated job, which trains each unit on its
		// own data, may name it.
		return coordinator.Job{}, fmt.Errorf("node: dataset %s is local to %s and never leaves it: name it in a federated job (--federated --dataset %s,...) with the other units' local datasets", ds.Name, ds.Source, ds.Name)
	}
	ck, err := n.readBaseModel(req.Base)
	if err != nil {
		return coordinator.Job{}, err
	}
	if ck.Config.Context < 1 {
		return coordinator.Job{}, fmt.Errorf("node: base model (config %s) has no context", req.Base.Config[:12])
	}
	spec, err := jobSpec(req, ck.Config, ds.ID, fed)
	if err != nil {
		return coordinator.Job{}, fmt.Errorf("node: %w", err)
	}
	if err := trainConfig(spec).Validate(); err != nil {
		return coordinator.Job{}, fmt.Errorf("node: job settings: %w", err)
	}
	var id [5]byte
	rand.Read(id[:])
	cmd := coordinator.SubmitJob{ID: "job-" + hex.EncodeToString(id[:]), Spec: spec, SubmittedBy: n.cfg.Name}
	if _, err := coordinator.EncodeCommand(cmd); err != nil {
		return coordinator.Job{}, fmt.Errorf("node: %w", err)
	}
	if err := n.applyAnywhere(ctx, cmd); err != nil {
		return coordinator.Job{}, err
	}
	n.kickJobs()
	for {
		if j, ok := n.coord.State().Job(cmd.ID); ok {
			return j, nil
		}
		_, changed := n.coord.Watch()
		if j, ok := n.coord.State().Job(cmd.ID); ok {
			return j, nil
		}
		select {
		case <-ctx.Done():
			return coordinator.Job{ID: cmd.ID, Spec: spec, State: coordinator.JobSubmitted}, nil
		case <-changed:
		}
	}
}

// readBaseModel reads and decodes the base model's objects from the store
// — config.json, the weights and its tokenizer's files — each read once and
// size-limited; errors name the object and what is wrong.
func (n *Node) readBaseModel(ref coordinator.ModelRef) (*model.Checkpoint, error) {
	objects := baseObjects(ref)
	for _, f := range objects {
		if !blobstore.ValidHash(f.hash) {
			return nil, fmt.Errorf("node: base model: %s %.80q: %w", f.name, f.hash, blobstore.ErrBadHash)
		}
		if f.max == 0 {
			return nil, fmt.Errorf("node: base model: %.64q is not a tokenizer file (want one of %v)", f.name, model.TokenizerFiles())
		}
	}
	hashes := make([]string, len(objects))
	for i, f := range objects {
		hashes[i] = f.hash
	}
	n.touch(hashes...) // about to be named by a job: not collected meanwhile
	read := map[string][]byte{}
	for _, f := range objects {
		b, err := n.readObject(f.hash, f.max)
		if err != nil {
			return nil, fmt.Errorf("node: base model: %s (object %s): %w", f.name, f.hash[:12], err)
		}
		read[f.name] = b
	}
	cfg, w := read[model.ConfigFile], read[model.WeightsFile]
	delete(read, model.ConfigFile)
	delete(read, model.WeightsFile)
	ck, err := model.DecodeCheckpointFiles(cfg, "config.json (object "+ref.Config[:12]+")", w, "model.safetensors (object "+ref.Weights[:12]+")", read)
	if err != nil {
		return nil, fmt.Errorf("node: base model: %w", err)
	}
	return ck, nil
}

// baseObject is one object of a base model: the file name it has in a
// model directory, its hash and the most bytes it may have (0: a name no
// model file has).
type baseObject struct {
	name, hash string
	max        int64
}

// baseObjects lists the objects ref names: config.json, model.safetensors,
// then its tokenizer's files by name.
func baseObjects(ref coordinator.ModelRef) []baseObject {
	out := []baseObject{{model.ConfigFile, ref.Config, model.MaxConfigBytes}, {model.WeightsFile, ref.Weights, model.MaxWeightsBytes}}
	for _, name := range slices.Sorted(maps.Keys(ref.Tokenizer)) {
		out = append(out, baseObject{name, ref.Tokenizer[name], model.MaxTokenizerFileBytes(name)})
	}
	return out
}

// CancelJob cancels a submitted or running job.
func (n *Node) CancelJob(ctx context.Context, id string) error {
	if _, ok := n.coord.State().Job(id); !ok {
		return fmt.Errorf("node: no job %q", id)
	}
	return n.applyAnywhere(ctx, coordinator.SetJobState{ID: id, State: coordinator.JobCancelled,
		From: []coordinator.JobState{coordinator.JobSubmitted, coordinator.JobRunning}})
}

// kickJobs wakes the job loop.
func (n *Node) kickJobs() { kick(n.jobKick) }

// jobLoop starts submitted jobs (on the leader) and runs this node's part
// of the running job.
func (n *Node) jobLoop() {
	defer n.wg.Done()
	ctx, cancel := n.stopContext()
	defer cancel()
	var (
		runner  *jobRunner
		done    chan struct{}
		started time.Time
	)
	stopRunner := func() {
		if runner != nil {
			runner.cancel()
			<-done
			n.keepHistory(runner) // before jobMu: it writes a file
			n.jobMu.Lock()
			n.finished[runner.id] = runner.progress() // still served after the job ends
			runner.mu.Lock()
			n.finishedLosses[runner.id] = runner.losses
			runner.mu.Unlock()
			if n.runner == runner {
				n.runner = nil // its model and optimizer are released
			}
			if len(n.finished) > 64 {
				for id := range n.finished {
					delete(n.finished, id)
					delete(n.finishedLosses, id)
					break
				}
			}
			n.jobMu.Unlock()
			runner, done = nil, nil
		}
	}
	defer stopRunner()
	for {
		st, changed := n.coord.Watch()
		if n.coord.IsLeader() {
			n.startJobs(ctx, st)
		}
		var running *coordinator.Job
		for i := range st.Jobs {
			if st.Jobs[i].State == coordinator.JobRunning {
				running = &st.Jobs[i]
				break
			}
		}
		if runner != nil && (running == nil || running.ID != runner.id) {
			stopRunner()
		}
		// A runner that gave up while its job still runs (its inputs could
		// not be fetched, and failing the job did not go through either)
		// is started again, at most every few seconds: a node that stays
		// in the epoch without a runner would hold the others' sync up.
		if runner != nil && running != nil && isClosed(done) && runner.gaveUp.Load() && time.Since(started) > restartAfter {
			stopRunner()
		}
		// Only members on the job's device run it.
		if runner == nil && running != nil && n.runsOn(running.Spec.DeviceKind()) {
			started = time.Now()
			runner = n.newJobRunner(ctx, *running)
			done = make(chan struct{})
			n.setRunner(runner)
			go func(r *jobRunner, done chan struct{}) {
				defer close(done)
				r.run()
			}(runner, done)
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-n.jobKick:
		case <-time.After(time.Second):
		}
	}
}

// restartAfter spaces the restarts of a job runner that gave up.
const restartAfter = 3 * time.Second

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// startJobs moves the oldest submitted job to running when no job runs, its
// dataset is placed and a member that computes on its device is alive. A
// job whose device has no alive member waits without holding up the jobs
// submitted after it. Leader only.
func (n *Node) startJobs(ctx context.Context, st coordinator.State) {
	for _, j := range st.Jobs {
		if j.State == coordinator.JobRunning {
			return
		}
	}
	for _, j := range st.Jobs {
		if j.State != coordinator.JobSubmitted {
			continue
		}
		d, ok := st.Dataset(j.Spec.Dataset)
		if !ok {
			n.coord.Apply(ctx, coordinator.SetJobState{ID: j.ID, State: coordinator.JobFailed,
				Error: "its dataset was deleted", From: []coordinator.JobState{coordinator.JobSubmitted}})
			continue
		}
		if len(d.Placement) == 0 {
			return // wait for the placement
		}
		if len(st.AliveOn(j.Spec.DeviceKind())) == 0 {
			continue // see JobStatus.Waiting
		}
		if err := n.coord.Apply(ctx, coordinator.SetJobState{ID: j.ID, State: coordinator.JobRunning,
			From: []coordinator.JobState{coordinator.JobSubmitted}}); err != nil {
			n.log.Warn("cannot start job", "job", j.ID, "err", err)
		} else {
			n.log.Info("job started", "job", j.ID, "dataset", d.Name, "steps", j.Spec.Steps, "device", j.Spec.DeviceKind())
		}
		return
	}
}

func (n *Node) setRunner(r *jobRunner) {
	n.jobMu.Lock()
	n.runner = r
	n.jobMu.Unlock()
}

func (n *Node) currentRunner(job string) *jobRunner {
	n.jobMu.Lock()
	defer n.jobMu.Unlock()
	if n.runner != nil && n.runner.id == job {
		return n.runner
	}
	return nil
}

// memberSources are the alive members other than this node, as fetch
// sources, those named in prefer first.
func (n *Node) memberSources(prefer ...string) []blobstore.Source {
	st := n.coord.State()
	var out []blobstore.Source
	add := func(name string) {
		if name == n.cfg.Name || slices.ContainsFunc(out, func(s blobstore.Source) bool { return string(s.Peer) == name }) {
			return
		}
		if m, ok := st.Member(name); ok && m.State == coordinator.MemberAlive {
			out = append(out, blobstore.Source{Peer: transport.PeerID(name), Addr: m.Addr})
		}
	}
	for _, p := range prefer {
		add(p)
	}
	for _, m := range st.Members {
		add(m.Name)
	}
	return out
}

// ensureObject fetches h (of size bytes, or blobstore.SizeUnknown) into the
// store unless it is there, from the preferred members first.
func (n *Node) ensureObject(ctx context.Context, h string, size int64, prefer ...string) error {
	if n.store.Has(h) {
		n.touch(h) // about to be used, perhaps named: not collected meanwhile
		return nil
	}
	return n.store.Fetch(ctx, n.tr, transport.ProtoShard, n.memberSources(prefer...), h, size, blobstore.FetchOptions{Logger: n.log})
}

// linkObject makes dir/name a hard link to (or, across file systems, a
// copy of) object h of the store.
func (n *Node) linkObject(h, dir, name string) error {
	src, err := n.store.Path(h)
	if err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return model.WriteFileAtomic(dst, b, dataFilePerm)
}

// jobError is the text a failed job records: short and naming the node.
func jobError(format string, args ...any) string {
	s := fmt.Sprintf(format, args...)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return strings.TrimSpace(s)
}

var errJobEnded = errors.New("node: the job ended")

// renewEpoch has the leader renew epoch (see coordinator.RenewEpoch).
func (n *Node) renewEpoch(ctx context.Context, epoch uint64) error {
	if n.coord.IsLeader() {
		return n.coord.RenewEpoch(ctx, epoch)
	}
	leader := n.coord.Status().Leader
	if leader == "" || leader == n.cfg.Name {
		return errors.New("node: no leader to renew the epoch")
	}
	_, err := n.callControl(ctx, leader, n.memberAddr(leader), controlRequest{Op: opRenewEpoch, Renew: &renewRequest{Epoch: epoch}})
	return err
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func transportPeer(name string) transport.PeerID { return transport.PeerID(name) }
