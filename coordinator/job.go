package coordinator

import (
	"fmt"
	"maps"
	"math"
	"slices"
)

// Jobs in the replicated state: what was submitted, in which state it is,
// and where its checkpoints are. Per-step progress is not replicated (it is
// served by the workers); only what must survive a restart of the whole
// cluster is.

// Bounds on jobs.
const (
	// MaxJobs bounds the jobs the FSM holds (finished ones included,
	// deleted ones not: see DeleteJob).
	MaxJobs = 256
	// MaxCheckpoints bounds the checkpoint records kept per job (the
	// newest are kept), and is the default of JobSpec.KeepCheckpoints.
	MaxCheckpoints = 8
	// MaxJobSteps bounds a job's steps.
	MaxJobSteps = 100_000_000
)

// JobState is where a job is in its life.
type JobState string

// The job states. Submitted → running → completed | failed | cancelled; a
// submitted job may also be cancelled or fail before it runs.
const (
	JobSubmitted JobState = "submitted"
	JobRunning   JobState = "running"
	JobCompleted JobState = "completed"
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
)

// Final reports whether the job has ended.
func (s JobState) Final() bool { return s == JobCompleted || s == JobFailed || s == JobCancelled }

func (s JobState) valid() bool {
	return s == JobSubmitted || s == JobRunning || s.Final()
}

// ModelRef names a model by the content hashes of its files, fetched from
// peers like dataset shards.
type ModelRef struct {
	Config  string `json:"config"`  // config.json
	Weights string `json:"weights"` // model.safetensors
	// Tokenizer names the files of a tokenizer read from a tokenizer.json
	// (file name → hash; see ValidTokenizerFile), none for a model whose
	// tokenizer is built in. Omitted when empty, so a spec without them
	// encodes, and hashes, as it did before they existed.
	Tokenizer map[string]string `json:"tokenizer,omitempty"`
}

// tokenizerFiles are the file names a model's Tokenizer may hold, sorted:
// those package model's TokenizerFiles lists (a test in package node keeps
// them equal), which this package does not import.
var tokenizerFiles = []string{"chat_template.jinja", "tokenizer.json", "tokenizer_config.json"}

// TokenizerFiles lists, sorted, the file names a model's Tokenizer may
// hold. The slice is the caller's.
func TokenizerFiles() []string { return slices.Clone(tokenizerFiles) }

// ValidTokenizerFile reports whether name may be a file of a model's
// tokenizer: tokenizer.json, tokenizer_config.json or chat_template.jinja.
// Such a name is a plain file name, safe to join to a directory.
func ValidTokenizerFile(name string) bool { return slices.Contains(tokenizerFiles, name) }

// validTokenizer checks the tokenizer files of a model: known names (so at
// most one of each), tokenizer.json among them where there are any, and
// hashes.
func validTokenizer(files map[string]string) error {
	if len(files) == 0 {
		return nil
	}
	if len(files) > len(tokenizerFiles) {
		return fmt.Errorf("%d tokenizer files, at most %d", len(files), len(tokenizerFiles))
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if !ValidTokenizerFile(name) {
			return fmt.Errorf("tokenizer file %q: want one of %v", truncate(name, 40), tokenizerFiles)
		}
		if err := validHash(files[name]); err != nil {
			return fmt.Errorf("tokenizer file %s: %v", name, err)
		}
	}
	if _, ok := files["tokenizer.json"]; !ok {
		return fmt.Errorf("tokenizer files without tokenizer.json")
	}
	return nil
}

func (r ModelRef) validate() error {
	if err := validHash(r.Config); err != nil {
		return fmt.Errorf("base config: %v", err)
	}
	if err := validHash(r.Weights); err != nil {
		return fmt.Errorf("base weights: %v", err)
	}
	if err := validTokenizer(r.Tokenizer); err != nil {
		return fmt.Errorf("base: %v", err)
	}
	return nil
}

// JobSpec is what a job trains: fixed at submission.
type JobSpec struct {
	Base        ModelRef `json:"base"`
	Dataset     string   `json:"dataset"` // dataset ID
	Steps       int      `json:"steps"`
	GlobalBatch int      `json:"global_batch"`
	MicroBatch  int      `json:"micro_batch"`
	LR          float64  `json:"lr"`
	MinLRFrac   float64  `json:"min_lr_frac"`
	Warmup      int      `json:"warmup"`
	WeightDecay float64  `json:"weight_decay"`
	Clip        float64  `json:"clip"`
	Seed        uint64   `json:"seed"`
	// Beta1, Beta2 and Eps are AdamW's; recorded at submission so that
	// every member trains with the same values whatever its binary's
	// defaults (0: the trainer's default, in specs written before them).
	Beta1 float64 `json:"beta1,omitempty"`
	Beta2 float64 `json:"beta2,omitempty"`
	Eps   float64 `json:"eps,omitempty"`
	// BucketBytes is the least gradient bytes per all-reduce bucket
	// (train.JobConfig.BucketBytes): every member must cut the gradient
	// alike (0: the trainer's default, in specs written before it).
	BucketBytes int `json:"bucket_bytes,omitempty"`
	// CheckpointEvery and EvalEvery are in steps (0: only at the end).
	CheckpointEvery int `json:"checkpoint_every"`
	EvalEvery       int `json:"eval_every"`
	// HashEvery is how often the workers' weights are compared.
	HashEvery int `json:"hash_every"`
	// Replicas is how many members hold each checkpoint.
	Replicas int `json:"replicas"`
	// KeepCheckpoints is how many of the job's newest checkpoint records
	// the state keeps, 1..MaxCheckpoints (0: MaxCheckpoints); the objects
	// of older ones are collected. Omitted when 0, so a spec without it
	// encodes as it did before it existed. It does not change what is
	// trained.
	KeepCheckpoints int `json:"keep_checkpoints,omitempty"`

	// Wire is the all-reduce's element type on the wire: fp32 (the
	// default, exact), bf16, fp16 or int8.
	Wire string `json:"wire,omitempty"`

	// Device is the device kind the job runs on: DeviceCPU (also when
	// empty) or DeviceCUDA. Only members that compute on it train (see
	// State.EpochCandidates).
	Device string `json:"device,omitempty"`

	// LoRA, when LoRARank > 0, trains low-rank adapters on LoRATargets
	// (c_attn, c_proj, c_fc) instead of the full model.
	LoRARank    int      `json:"lora_rank,omitempty"`
	LoRAAlpha   float64  `json:"lora_alpha,omitempty"`
	LoRADropout float64  `json:"lora_dropout,omitempty"`
	LoRATargets []string `json:"lora_targets,omitempty"`

	// Federated jobs train each member only on the local datasets it
	// registered (Datasets, one or more; Dataset is the first); no shard
	// crosses the wire, and each member's share of the global batch is
	// proportional to its training sequences.
	Federated bool     `json:"federated,omitempty"`
	Datasets  []string `json:"datasets,omitempty"`

	// DiLoCo, when InnerSteps > 0: every member takes InnerSteps local
	// AdamW steps on its own part, then the members all-reduce the
	// pseudo-gradient (the change of the weights) and apply an outer
	// Nesterov step with OuterLR and OuterMomentum.
	InnerSteps    int     `json:"inner_steps,omitempty"`
	OuterLR       float64 `json:"outer_lr,omitempty"`
	OuterMomentum float64 `json:"outer_momentum,omitempty"`
}

// Checkpoint records a checkpoint of a job: the step it was taken after,
// the hashes of its files, and the members that hold them.
type Checkpoint struct {
	Step    int      `json:"step"`
	Config  string   `json:"config"`  // config.json
	Weights string   `json:"weights"` // model.safetensors
	State   string   `json:"state"`   // the workers' snapshot (weights, optimizer, step)
	Hash    string   `json:"weights_hash"`
	Holders []string `json:"holders"`
	// Tokenizer names the files of the tokenizer config.json names, as
	// ModelRef.Tokenizer does (omitted when empty).
	Tokenizer map[string]string `json:"tokenizer,omitempty"`
	// At is when the checkpoint was taken, in Unix milliseconds by the
	// recording member's clock (0: unknown, in records made before it).
	At int64 `json:"at,omitempty"`
}

// Job is a submitted job.
type Job struct {
	ID          string       `json:"id"`
	Spec        JobSpec      `json:"spec"`
	State       JobState     `json:"state"`
	Error       string       `json:"error,omitempty"`
	SubmittedBy string       `json:"submitted_by"`
	Seq         uint64       `json:"seq"` // submission order
	Checkpoints []Checkpoint `json:"checkpoints,omitempty"`
	// Epochs are the epochs that served the job's steps, oldest first
	// (job_epoch.go).
	Epochs []JobEpoch `json:"epochs,omitempty"`
}

// Clone returns a deep copy of j.
func (j Job) Clone() Job {
	j.Spec.Base.Tokenizer = maps.Clone(j.Spec.Base.Tokenizer)
	j.Checkpoints = slices.Clone(j.Checkpoints)
	for i := range j.Checkpoints {
		j.Checkpoints[i].Holders = slices.Clone(j.Checkpoints[i].Holders)
		j.Checkpoints[i].Tokenizer = maps.Clone(j.Checkpoints[i].Tokenizer)
	}
	j.Epochs = slices.Clone(j.Epochs)
	for i := range j.Epochs {
		j.Epochs[i] = j.Epochs[i].Clone()
	}
	return j
}

// LastCheckpoint is the newest checkpoint record, if any.
func (j Job) LastCheckpoint() (Checkpoint, bool) {
	if len(j.Checkpoints) == 0 {
		return Checkpoint{}, false
	}
	return j.Checkpoints[len(j.Checkpoints)-1], true
}

// Job returns the job with id.
func (s State) Job(id string) (Job, bool) {
	for _, j := range s.Jobs {
		if j.ID == id {
			return j, true
		}
	}
	return Job{}, false
}

// SubmitJob adds a job in state submitted.
type SubmitJob struct {
	ID          string  `json:"id"`
	Spec        JobSpec `json:"spec"`
	SubmittedBy string  `json:"submitted_by"`
}

// SetJobState moves a job to State (with Error for failed). A final job
// does not change again; From, when set, must contain the current state
// (so that, say, a late "running" cannot undo a cancel).
type SetJobState struct {
	ID    string     `json:"id"`
	State JobState   `json:"state"`
	Error string     `json:"error,omitempty"`
	From  []JobState `json:"from,omitempty"`
}

// RecordCheckpoint appends a checkpoint record; its step must be after the
// last one's.
type RecordCheckpoint struct {
	ID         string     `json:"id"`
	Checkpoint Checkpoint `json:"checkpoint"`
}

func (SubmitJob) Type() CommandType        { return TypeSubmitJob }
func (SetJobState) Type() CommandType      { return TypeSetJobState }
func (RecordCheckpoint) Type() CommandType { return TypeRecordCheckpoint }

// ValidJobID checks a job ID as the state does (1..64 bytes of a-z, 0-9
// and -): one that passes is safe as a file name.
func ValidJobID(id string) error { return validJobID(id) }

func validJobID(id string) error {
	if len(id) < 1 || len(id) > 64 {
		return fmt.Errorf("job id %q: want 1..64 bytes", truncate(id, 70))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return fmt.Errorf("job id %q: want a-z, 0-9 and -", truncate(id, 70))
		}
	}
	return nil
}

func finite(name string, v float64, lo, hi float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < lo || v > hi {
		return fmt.Errorf("%s %v out of range [%v, %v]", name, v, lo, hi)
	}
	return nil
}

func (s JobSpec) validate() error {
	if err := s.Base.validate(); err != nil {
		return err
	}
	if err := validHash(s.Dataset); err != nil {
		return fmt.Errorf("dataset: %v", err)
	}
	switch {
	case s.Steps < 1 || s.Steps > MaxJobSteps:
		return fmt.Errorf("steps %d out of range 1..%d", s.Steps, MaxJobSteps)
	case s.GlobalBatch < 1 || s.GlobalBatch > 1<<20:
		return fmt.Errorf("global batch %d out of range 1..%d", s.GlobalBatch, 1<<20)
	case s.MicroBatch < 1 || s.MicroBatch > s.GlobalBatch:
		return fmt.Errorf("micro batch %d out of range 1..global batch %d", s.MicroBatch, s.GlobalBatch)
	case s.Warmup < 0 || s.CheckpointEvery < 0 || s.EvalEvery < 0 || s.HashEvery < 0:
		return fmt.Errorf("warmup, checkpoint_every, eval_every and hash_every must not be negative")
	case s.Replicas < 1 || s.Replicas > MaxReplicas:
		return fmt.Errorf("replicas %d out of range 1..%d", s.Replicas, MaxReplicas)
	case s.KeepCheckpoints < 0 || s.KeepCheckpoints > MaxCheckpoints:
		return fmt.Errorf("keep_checkpoints %d out of range 1..%d (0: %d)", s.KeepCheckpoints, MaxCheckpoints, MaxCheckpoints)
	}
	switch s.Wire {
	case "", "fp32", "bf16", "fp16", "int8":
	default:
		return fmt.Errorf("wire %q: want fp32, bf16, fp16 or int8", truncate(s.Wire, 20))
	}
	if err := ValidDevice(s.Device); err != nil {
		return err
	}
	if s.BucketBytes < 0 || s.BucketBytes > 1<<30 {
		return fmt.Errorf("bucket_bytes %d out of range 0..%d", s.BucketBytes, 1<<30)
	}
	if s.LoRARank < 0 || s.LoRARank > 1024 || len(s.LoRATargets) > 8 {
		return fmt.Errorf("lora rank %d (want 0..1024) with %d targets (at most 8)", s.LoRARank, len(s.LoRATargets))
	}
	for _, t := range s.LoRATargets {
		if len(t) == 0 || len(t) > 32 {
			return fmt.Errorf("lora target %q", truncate(t, 40))
		}
	}
	if len(s.Datasets) > 64 {
		return fmt.Errorf("%d datasets, at most 64", len(s.Datasets))
	}
	for _, d := range s.Datasets {
		if err := validHash(d); err != nil {
			return fmt.Errorf("datasets: %v", err)
		}
	}
	if s.Federated && (len(s.Datasets) == 0 || s.Datasets[0] != s.Dataset) {
		return fmt.Errorf("a federated job lists its datasets, the first being dataset")
	}
	if s.InnerSteps < 0 || s.InnerSteps > 100_000 {
		return fmt.Errorf("inner_steps %d out of range 0..100000", s.InnerSteps)
	}
	for _, f := range []struct {
		name      string
		v, lo, hi float64
	}{{"lr", s.LR, 0, 10}, {"min_lr_frac", s.MinLRFrac, 0, 1}, {"weight_decay", s.WeightDecay, 0, 0.9999}, {"clip", s.Clip, 0, 1e6},
		{"lora_alpha", s.LoRAAlpha, 0, 1e6}, {"lora_dropout", s.LoRADropout, 0, 0.99}, {"outer_lr", s.OuterLR, 0, 100}, {"outer_momentum", s.OuterMomentum, 0, 0.9999},
		{"beta1", s.Beta1, 0, 0.9999}, {"beta2", s.Beta2, 0, 0.999999}, {"eps", s.Eps, 0, 0.1}} {
		if err := finite(f.name, f.v, f.lo, f.hi); err != nil {
			return err
		}
	}
	return nil
}

func (c SubmitJob) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if err := validName(c.SubmittedBy); err != nil {
		return fmt.Errorf("%w: %s %s: submitted_by: %v", ErrInvalidCommand, c.Type(), c.ID, err)
	}
	if err := c.Spec.validate(); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.ID, err)
	}
	return nil
}

func (c SetJobState) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if !c.State.valid() || c.State == JobSubmitted {
		return fmt.Errorf("%w: %s %s: state %q", ErrInvalidCommand, c.Type(), c.ID, truncate(string(c.State), 20))
	}
	for _, f := range c.From {
		if !f.valid() {
			return fmt.Errorf("%w: %s %s: from state %q", ErrInvalidCommand, c.Type(), c.ID, truncate(string(f), 20))
		}
	}
	if len(c.Error) > MaxSettingValueLen {
		return fmt.Errorf("%w: %s %s: error of %d bytes", ErrInvalidCommand, c.Type(), c.ID, len(c.Error))
	}
	return nil
}

func (c Checkpoint) validate() error {
	if c.Step < 0 || c.Step > MaxJobSteps {
		return fmt.Errorf("checkpoint step %d", c.Step)
	}
	if c.At < 0 {
		return fmt.Errorf("checkpoint at step %d: time %d before 1970", c.Step, c.At)
	}
	for _, h := range []string{c.Config, c.Weights, c.State, c.Hash} {
		if err := validHash(h); err != nil {
			return fmt.Errorf("checkpoint at step %d: %v", c.Step, err)
		}
	}
	if len(c.Holders) < 1 || len(c.Holders) > MaxReplicas {
		return fmt.Errorf("checkpoint at step %d: %d holders", c.Step, len(c.Holders))
	}
	for _, h := range c.Holders {
		if err := validName(h); err != nil {
			return fmt.Errorf("checkpoint at step %d: holder: %v", c.Step, err)
		}
	}
	if err := validTokenizer(c.Tokenizer); err != nil {
		return fmt.Errorf("checkpoint at step %d: %v", c.Step, err)
	}
	return nil
}

func (c RecordCheckpoint) validate() error {
	if err := validJobID(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if err := c.Checkpoint.validate(); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.ID, err)
	}
	return nil
}

func (c SubmitJob) apply(s *fsmState) error {
	if _, ok := s.jobs[c.ID]; ok {
		return fmt.Errorf("%w: %s: job %s exists", ErrConflict, c.Type(), c.ID)
	}
	for _, d := range append([]string{c.Spec.Dataset}, c.Spec.Datasets...) {
		if _, ok := s.datasets[d]; !ok {
			return fmt.Errorf("%w: %s %s: dataset %s", ErrUnknownDataset, c.Type(), c.ID, d[:12])
		}
	}
	if len(s.jobs) >= MaxJobs {
		return fmt.Errorf("%w: %s: %d jobs, limit %d; delete finished ones (braid job rm)", ErrLimit, c.Type(), len(s.jobs), MaxJobs)
	}
	s.jobSeq++
	s.jobs[c.ID] = Job{ID: c.ID, Spec: c.Spec, State: JobSubmitted, SubmittedBy: c.SubmittedBy, Seq: s.jobSeq}.Clone()
	return nil
}

func (c SetJobState) apply(s *fsmState) error {
	j, ok := s.jobs[c.ID]
	if !ok {
		return fmt.Errorf("%w: %s: job %s", ErrUnknownJob, c.Type(), c.ID)
	}
	if j.State.Final() {
		return fmt.Errorf("%w: %s %s: the job is already %s", ErrJobFinal, c.Type(), c.ID, j.State)
	}
	if len(c.From) > 0 && !slices.Contains(c.From, j.State) {
		return fmt.Errorf("%w: %s %s: the job is %s, not %v", ErrJobFinal, c.Type(), c.ID, j.State, c.From)
	}
	j = j.Clone()
	j.State, j.Error = c.State, c.Error
	s.jobs[c.ID] = j
	return nil
}

func (c RecordCheckpoint) apply(s *fsmState) error {
	j, ok := s.jobs[c.ID]
	if !ok {
		return fmt.Errorf("%w: %s: job %s", ErrUnknownJob, c.Type(), c.ID)
	}
	if last, ok := j.LastCheckpoint(); ok && c.Checkpoint.Step <= last.Step {
		return fmt.Errorf("%w: %s %s: step %d is not after the last checkpoint's %d", ErrStaleEpoch, c.Type(), c.ID, c.Checkpoint.Step, last.Step)
	}
	if c.Checkpoint.Step > j.Spec.Steps {
		return fmt.Errorf("%w: %s %s: step %d beyond the job's %d steps", ErrInvalidCommand, c.Type(), c.ID, c.Checkpoint.Step, j.Spec.Steps)
	}
	j = j.Clone()
	cp := c.Checkpoint
	cp.Holders, cp.Tokenizer = slices.Clone(cp.Holders), maps.Clone(cp.Tokenizer)
	j.Checkpoints = append(j.Checkpoints, cp)
	if keep := j.Spec.keepCheckpoints(); len(j.Checkpoints) > keep {
		j.Checkpoints = j.Checkpoints[len(j.Checkpoints)-keep:]
	}
	s.jobs[c.ID] = j
	return nil
}

// exportJobs returns the jobs in submission order, deep-copied.
func (s *fsmState) exportJobs() []Job {
	out := make([]Job, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, j.Clone())
	}
	slices.SortFunc(out, func(a, b Job) int {
		if a.Seq < b.Seq {
			return -1
		}
		if a.Seq > b.Seq {
			return 1
		}
		return 0
	})
	return out
}
