package train

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/safetensors"
	"github.com/braidml/braid/shard"
)

// This file is one worker's share of a data-parallel fine-tuning job
// (ARCHITECTURE.md, "The data flow of one fine-tuning job", steps 5–7):
//
//	for each step k:  the node computes this worker's part of global batch k
//	                  (shard.EpochStep + shard.Assign) and calls
//	Worker.Step       forward/backward over the part in micro-batches; during
//	                  the last backward, gradient buckets go to the reducer
//	                  (last layer first) while the layers below are computed;
//	                  then the loss is reduced, and every worker clips and
//	                  applies the same AdamW update to the same bytes.
//
// Replicas stay bitwise identical because everything after the reduction is
// a deterministic function of the reduced gradient (which the reducer gives
// bitwise the same to every member), the step and the job's settings. The
// reducer is an interface: the ring all-reduce lives in package allreduce
// and the node wires it in; tests use an in-memory one.
//
// LoRA mode (JobConfig.LoRARank > 0): the worker attaches a LoRA adapter,
// initialised from the job's seed (the same bytes on every worker), to the
// base model and trains only the adapter. Everything above then applies to
// the adapter's buffers instead of the model's: the gradient buckets are
// ranges of the adapter's gradient (Model.GradRanges in LoRA mode), the
// reduced gradient, AdamW's moments and snapshots are the adapter's size
// (NumTrainable), and the base weights, frozen, never change. Dropout masks
// are keyed by (seed, step, sequence id), so they do not depend on how a
// global batch is split among workers.

// Worker errors, wrapped with the step or the field at fault.
var (
	// ErrJobDone: Step or ApplyReduced after the job's last step.
	ErrJobDone = errors.New("train: job already done")
	// ErrWrongStep: a gradient or part for another step than the worker's.
	ErrWrongStep = errors.New("train: wrong step")
	// ErrPartition: the workers' parts do not add up to the global batch.
	ErrPartition = errors.New("train: parts do not make up the global batch")
	// ErrDiverged: the reduced gradient or the loss is not finite.
	ErrDiverged = errors.New("train: training diverged")
	// ErrNoHeldout: Eval on a dataset without held-out sequences.
	ErrNoHeldout = errors.New("train: dataset has no held-out sequences")
	// ErrSnapshot: Restore refused a snapshot (malformed, corrupt, or of
	// another model, job or dataset).
	ErrSnapshot = errors.New("train: bad snapshot")
)

// Reducer sums buffers across the workers of a job. Every worker must make
// the same calls, with buffers of the same lengths, in the same order; the
// result must be bitwise the same on every worker. Calls do not overlap:
// AllReduce is called only after the step's ReduceOp has finished.
type Reducer interface {
	// Start begins a bucketed all-reduce of step's gradient: buckets added
	// to the op are summed in place across all workers, in Add order, in
	// the background.
	Start(ctx context.Context, step uint64) ReduceOp
	// AllReduce sums buf in place across workers (used for the small loss
	// buffer).
	AllReduce(ctx context.Context, step uint64, buf []float32) error
}

// ReduceOp is one bucketed all-reduce in flight.
type ReduceOp interface {
	// Add queues bucket to be summed in place; it must not block for long
	// (it is called from inside the backward pass). The worker does not
	// touch bucket again until Wait returns.
	Add(bucket []float32)
	// Wait returns when every bucket added is reduced (or the op failed),
	// with the first error. The worker calls it exactly once per op.
	Wait() error
}

// JobConfig holds the settings of a distributed fine-tuning job that shape
// its trajectory. Every worker of a job must use the same JobConfig.
type JobConfig struct {
	Steps int `json:"steps"` // optimizer updates (global batches)
	// GlobalBatch is the sequences per step, summed over all workers (the
	// last global batch of a data-epoch may be shorter: shard.GlobalBatch).
	GlobalBatch int `json:"global_batch"`
	// MicroBatch is the most sequences one forward/backward pass takes;
	// a worker accumulates gradients over ceil(part/MicroBatch) passes.
	MicroBatch  int     `json:"micro_batch"`
	LR          float64 `json:"lr"`           // peak learning rate
	MinLRFrac   float64 `json:"min_lr_frac"`  // the cosine schedule ends at LR·MinLRFrac
	Warmup      int     `json:"warmup"`       // linear warmup steps
	WeightDecay float64 `json:"weight_decay"` // AdamW decoupled weight decay on matrices
	Clip        float64 `json:"clip"`         // global gradient-norm clip; 0 disables
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	Eps         float64 `json:"eps"`
	// Seed is the sampler's seed (shard.GlobalBatch, shard.Assign): the
	// node uses it to compute parts; the worker itself draws nothing.
	Seed uint64 `json:"seed"`
	// EvalSequences is how many held-out sequences Eval scores, the first
	// ones of the split; 0 means all of them up to DefaultEvalSequences.
	EvalSequences int `json:"eval_sequences,omitempty"`
	// BucketBytes is the least gradient bytes per all-reduce bucket:
	// consecutive layers whose gradients are smaller are merged into one
	// bucket, so that tiny layers (ln_f) do not each pay an all-reduce's
	// latency. 0 means DefaultBucketBytes. Every worker of a job must use
	// the same value: it decides the buckets' lengths.
	BucketBytes int `json:"bucket_bytes,omitempty"`

	// LoRARank > 0 selects LoRA mode: the job trains a LoRA adapter of
	// that rank (model.LoRAConfig.Rank) on the frozen base weights, and
	// WeightDecay applies to the adapter's tensors (use 0, as PEFT runs
	// do, unless you mean it). 0 trains the full model, and the other LoRA
	// fields must then be zero.
	LoRARank int `json:"lora_rank,omitempty"`
	// LoRAAlpha scales the adapter's update by LoRAAlpha/LoRARank; 0 means
	// 2·LoRARank.
	LoRAAlpha float64 `json:"lora_alpha,omitempty"`
	// LoRADropout is the dropout on the adapter's input, in [0, 1).
	LoRADropout float64 `json:"lora_dropout,omitempty"`
	// LoRATargets are the projections to adapt, PEFT's target_modules
	// (see model.LoRAConfig.Targets); none means model.DefaultLoRATargets.
	LoRATargets []string `json:"lora_targets,omitempty"`
}

// Defaults and bounds of JobConfig.
const (
	// DefaultEvalSequences is what EvalSequences 0 stands for.
	DefaultEvalSequences = 256
	// DefaultBucketBytes is what BucketBytes 0 stands for: 1 MiB, one
	// block of the small preset per bucket.
	DefaultBucketBytes = 1 << 20
	// MaxGlobalBatch bounds GlobalBatch: sequence counts are summed as
	// float32 in the loss all-reduce, exact up to 2^24.
	MaxGlobalBatch = 1 << 24
)

// DefaultJobConfig returns fine-tuning settings for the bundled base model
// (models/base-en) and models of its size.
func DefaultJobConfig() JobConfig {
	return JobConfig{
		Steps: 200, GlobalBatch: 32, MicroBatch: 8, LR: 1e-3, MinLRFrac: 0.1, Warmup: 20,
		WeightDecay: 0.1, Clip: 1, Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Seed: 1,
	}
}

// DefaultLoRAJobConfig returns DefaultJobConfig in LoRA mode: a rank-8
// adapter (alpha 16) on every projection, no dropout, the higher learning
// rate of DefaultLoRALR and no weight decay.
func DefaultLoRAJobConfig() JobConfig {
	c := DefaultJobConfig()
	c.LoRARank, c.LR, c.WeightDecay = 8, DefaultLoRALR, 0
	return c
}

// LoRA returns the adapter settings of a job in LoRA mode (LoRAAlpha 0 and
// no LoRATargets replaced by their defaults, valid targets in canonical
// form: model.CanonicalLoRATargets), and false for a full fine-tuning job.
func (c JobConfig) LoRA() (model.LoRAConfig, bool) {
	if c.LoRARank == 0 {
		return model.LoRAConfig{}, false
	}
	lc := model.LoRAConfig{Rank: c.LoRARank, Alpha: c.LoRAAlpha, Dropout: c.LoRADropout, Targets: model.DefaultLoRATargets}
	if lc.Alpha == 0 {
		lc.Alpha = 2 * float64(c.LoRARank)
	}
	if len(c.LoRATargets) > 0 {
		lc.Targets = slices.Clone(c.LoRATargets) // Validate reports bad names
	}
	if ts, err := model.CanonicalLoRATargets(lc.Targets); err == nil {
		lc.Targets = ts
	}
	return lc, true
}

// Validate checks each field and names the one at fault.
func (c JobConfig) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("%w: steps = %d, want ≥ 1", ErrConfig, c.Steps)
	case c.GlobalBatch < 1 || c.GlobalBatch > MaxGlobalBatch:
		return fmt.Errorf("%w: global batch = %d, want 1..%d", ErrConfig, c.GlobalBatch, MaxGlobalBatch)
	case c.MicroBatch < 1 || c.MicroBatch > 1<<16:
		return fmt.Errorf("%w: micro batch = %d, want 1..65536", ErrConfig, c.MicroBatch)
	}
	if err := checkOptimizer(c.LR, c.MinLRFrac, c.Warmup, c.WeightDecay, c.Beta1, c.Beta2); err != nil {
		return err
	}
	switch {
	case !(c.Clip >= 0) || math.IsInf(c.Clip, 0):
		return fmt.Errorf("%w: clip = %g, want ≥ 0 (0 disables)", ErrConfig, c.Clip)
	case !(c.Eps > 0 && c.Eps < 1):
		return fmt.Errorf("%w: eps = %g, want in (0, 1)", ErrConfig, c.Eps)
	case c.EvalSequences < 0:
		return fmt.Errorf("%w: eval sequences = %d, want ≥ 0 (0: up to %d)", ErrConfig, c.EvalSequences, DefaultEvalSequences)
	case c.BucketBytes < 0:
		return fmt.Errorf("%w: bucket bytes = %d, want ≥ 0 (0: %d)", ErrConfig, c.BucketBytes, DefaultBucketBytes)
	case c.LoRARank < 0 || c.LoRARank > model.MaxLoRARank:
		return fmt.Errorf("%w: lora rank = %d, want 0 (full fine-tuning) or 1..%d", ErrConfig, c.LoRARank, model.MaxLoRARank)
	case c.LoRARank == 0 && (c.LoRAAlpha != 0 || c.LoRADropout != 0 || len(c.LoRATargets) > 0):
		return fmt.Errorf("%w: lora alpha, dropout or targets set with lora rank = 0 (set the rank for LoRA mode)", ErrConfig)
	}
	if lc, ok := c.LoRA(); ok {
		if err := lc.Validate(); err != nil {
			return fmt.Errorf("%w: lora: %w", ErrConfig, err)
		}
	}
	return nil
}

// hash identifies the settings that decide a job's trajectory, for
// snapshots: all but EvalSequences (what Eval scores) and BucketBytes
// (how the gradient travels). LoRA settings count in their canonical form
// (alpha 0 and 2·rank are the same job); a full fine-tuning job hashes as
// it did before LoRA mode existed.
//
// The targets hash as one comma-separated string, as they were stored
// when JobConfig held them so: snapshots made then still match.
func (c JobConfig) hash() string {
	c.EvalSequences, c.BucketBytes = 0, 0
	if lc, ok := c.LoRA(); ok {
		c.LoRAAlpha, c.LoRATargets = lc.Alpha, lc.Targets
	}
	type fields JobConfig // without methods; its LoRATargets is shadowed below
	b, _ := json.Marshal(struct {
		fields
		LoRATargets string `json:"lora_targets,omitempty"`
	}{fields(c), strings.Join(c.LoRATargets, ",")}) // cannot fail: plain numbers and strings
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// StepResult describes one applied step.
type StepResult struct {
	Step     int     // steps applied after this one, as StepStats.Step: the first step is 1 (it used the global batch of index Step-1)
	Loss     float64 // global mean loss of the step over all workers' sequences (after the loss all-reduce)
	GradNorm float32 // global gradient norm before clipping
	LR       float64
	Tokens   int           // tokens this worker processed
	Compute  time.Duration // forward/backward time of this worker
	Wait     time.Duration // time blocked on the reducer after compute (communication not hidden by compute)
}

// Worker is one replica's training engine for a job: a model with its
// optimizer, the job's dataset, and the number of steps applied. Workers of
// a job that start from the same weights and are stepped with the parts of
// the same global batches hold bitwise the same weights after every step.
//
// A Worker is not safe for concurrent use: one goroutine calls its methods
// (the kernels spread each pass over the CPU's cores). It owns
// Model.GradReady.
type Worker struct {
	Config JobConfig
	Model  *model.Model
	Opt    *Optimizer // over the model's parameters, or the adapter's in LoRA mode
	Data   *shard.Dataset
	Done   int // steps applied so far (== Opt.Step)

	// LocalBatch makes Step train on its part alone, as the whole batch
	// (DiLoCo's inner steps, with a reducer that does not communicate).
	// FixedBatch makes every global batch exactly GlobalBatch sequences,
	// with no short batch at the end of a data-epoch (federated jobs,
	// whose units draw their shares from their own data). Set either
	// before the first Step; every worker of a job must agree.
	LocalBatch, FixedBatch bool

	// What the worker trains: the model's buffers, or, in LoRA mode, the
	// adapter's (Model.LoRA()).
	params, grads []float32
	baseHash      string   // LoRA mode: WeightsHash of the frozen base, taken by NewWorker
	streams       []uint64 // (MicroBatch) dropout streams of one pass (LoRA mode with dropout)

	sched Schedule
	T     int   // tokens per sequence: the dataset's seq_len
	n     int64 // train sequences in the dataset

	tokens, targets []int32 // (MicroBatch, T) inputs of one pass; an untrained target is −1
	seq             []int32 // (T+1) one sequence as the dataset returns it
	mask            []bool  // (T+1) its loss mask, when the dataset has one

	// Gradient buckets: runs of consecutive model.GradRanges (of grads),
	// in the order Backward reports them. buckets[i] ends with range
	// bucketEnd[i]-1.
	ranges    [][2]int
	buckets   [][]float32
	bucketEnd []int
	ready     func(lo, hi int) // w.gradReady, made once so that Step does not allocate
	op        ReduceOp         // the reduction the last backward feeds
	nextRange int              // ranges reported so far in this backward
	added     int              // buckets added to op so far

	// lossBuf is what the loss all-reduce sums: {this worker's share of the
	// mean loss, its sequences, its counted targets ÷ 4096, its counted
	// targets mod 4096}. The count travels in two parts so that its sum
	// is exact in float32 (each part's sum stays below 2^24) for global
	// batches of up to 2^36 targets over up to 4096 workers.
	lossBuf [4]float32

	reduced     []float32 // the reduced, unclipped gradient of step reducedStep
	reducedStep int       // -1: none

	dev *deviceWorker // the GPU side of a worker made by NewWorkerOnDevice, or nil
}

// NewWorker returns a worker at step 0 that trains m on data's train split
// with cfg (m holds the starting weights: Init or a base checkpoint). m must
// be a training model (model.New) whose activations fit MicroBatch
// sequences of the dataset's seq_len, and data's vocabulary must fit m's.
//
// In LoRA mode (cfg.LoRARank > 0) NewWorker attaches a new adapter to m,
// initialised from cfg.Seed, and m's weights are the frozen base: they must
// not change while the worker runs (it hashes them once, here). m must not
// have an adapter attached already.
func NewWorker(cfg JobConfig, m *model.Model, data *shard.Dataset) (*Worker, error) {
	if m == nil {
		return nil, fmt.Errorf("train: NewWorker needs a model and an opened dataset")
	}
	maxB, maxT := m.MaxBatch()
	return newWorker(cfg, m, data, maxB, maxT, false)
}

// newWorker is NewWorker for a model whose passes run where activations
// for maxB × maxT positions are allocated (on the GPU when onDevice: then
// m is only the host copy of the weights).
func newWorker(cfg JobConfig, m *model.Model, data *shard.Dataset, maxB, maxT int, onDevice bool) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if m == nil || data == nil || data.Manifest == nil {
		return nil, fmt.Errorf("train: NewWorker needs a model and an opened dataset")
	}
	if m.Grads == nil && m.LoRA() == nil && !onDevice && !m.BaseHeldBF16() {
		return nil, fmt.Errorf("train: the model has no gradients (made by NewInference?); a worker needs model.New")
	}
	if m.BaseHeldBF16() && (onDevice || cfg.LoRARank == 0) {
		return nil, fmt.Errorf("train: the model holds its base in bf16 (model.NewFrozenBF16), which only a LoRA job on the CPU trains; use model.New")
	}
	man := data.Manifest
	T := man.SeqLen
	switch {
	case man.Vocab > m.Config.Vocab:
		return nil, fmt.Errorf("train: dataset %s has %d token ids (%s tokenizer), the model only %d", man.Name, man.Vocab, man.Tokenizer, m.Config.Vocab)
	case T < 1 || T > m.Config.Context:
		return nil, fmt.Errorf("train: dataset %s has sequences of %d tokens, longer than the model's context of %d", man.Name, T, m.Config.Context)
	case T > maxT || cfg.MicroBatch*T > maxB*maxT:
		return nil, fmt.Errorf("%w: micro batch %d×%d tokens does not fit the model's activations for %d×%d (allocate the model with model.New(c, %d, %d))",
			ErrConfig, cfg.MicroBatch, T, maxB, maxT, cfg.MicroBatch, T)
	}
	n := data.NumSequences(shard.Train)
	if n < 1 {
		return nil, fmt.Errorf("%w: dataset %s has no train sequences", ErrTooSmall, man.Name)
	}
	if m.LoRA() != nil {
		return nil, fmt.Errorf("train: the model already has a LoRA adapter attached; a worker makes its own from JobConfig.LoRARank")
	}
	w := &Worker{
		Config: cfg, Model: m, Data: data, T: T, n: n,
		params:      m.Params,
		grads:       m.Grads,
		sched:       Schedule{LR: cfg.LR, MinLR: cfg.LR * cfg.MinLRFrac, Warmup: cfg.Warmup, Steps: cfg.Steps},
		tokens:      make([]int32, cfg.MicroBatch*T),
		targets:     make([]int32, cfg.MicroBatch*T),
		streams:     make([]uint64, cfg.MicroBatch),
		seq:         make([]int32, 0, T+1),
		mask:        make([]bool, 0, T+1),
		reducedStep: -1,
	}
	layout := m.Config.Layout()
	if lc, ok := cfg.LoRA(); ok {
		a, err := model.NewLoRA(m.Config, lc)
		if err != nil {
			return nil, err
		}
		a.Init(cfg.Seed)
		if err := m.AttachLoRA(a); err != nil {
			return nil, err
		}
		w.params, w.grads, layout = a.Params, a.Grads, a.Layout()
		w.baseHash = BaseWeightsHash(m)
		// The frozen base's gradient buffer is never written in LoRA mode.
		if err := m.DropBaseGrads(); err != nil {
			return nil, err
		}
		// A Llama-family base whose matrices are all bf16 values (a
		// checkpoint stored in bf16) is held in bf16: half the memory,
		// and the same maths (model.Model.HoldBaseBF16).
		if !onDevice && m.Config.Arch != model.ArchGPT2 && m.BaseIsBF16() {
			if err := m.HoldBaseBF16(); err != nil {
				return nil, err
			}
		}
	}
	w.Opt = NewLayoutOptimizer(layout, float32(cfg.Beta1), float32(cfg.Beta2), float32(cfg.Eps), float32(cfg.WeightDecay))
	w.ready = w.gradReady
	if onDevice {
		return w, nil // NewWorkerOnDevice makes the gradient buffer and its buckets
	}
	w.ranges = m.GradRanges()
	w.reduced = make([]float32, len(w.grads))
	w.makeBuckets()
	return w, nil
}

// makeBuckets groups the gradient ranges into buckets of at least
// BucketBytes: a bucket takes ranges, in report order, until it is that
// large. Ranges come last layer first and each ends where the one before
// it starts, so a bucket is one contiguous slice of Grads.
func (w *Worker) makeBuckets() {
	minElems := w.Config.BucketBytes / 4
	if w.Config.BucketBytes == 0 {
		minElems = DefaultBucketBytes / 4
	}
	g, rs := w.grads, w.ranges
	first := 0 // the open bucket holds ranges first..i: Grads[rs[i][0]:rs[first][1]]
	for i := range rs {
		lo, hi := rs[i][0], rs[first][1]
		last := i == len(rs)-1
		if hi-lo >= minElems || last || rs[i+1][1] != lo { // large enough, or the next range is not adjacent
			w.buckets = append(w.buckets, g[lo:hi])
			w.bucketEnd = append(w.bucketEnd, i+1)
			first = i + 1
		}
	}
}

// NumTrainable is the number of parameters the worker trains: the model's,
// or the adapter's in LoRA mode. It is the length of the gradient that
// LastReduced returns and ApplyReduced takes, of the optimizer's moments
// and of the tensors of a snapshot.
func (w *Worker) NumTrainable() int { return len(w.params) }

// Trainable returns the buffer the worker's optimizer updates: Model.Params,
// or the adapter's parameters (LoRA().Params) in LoRA mode. Code that works
// on "the weights" of a worker (an outer optimizer, a checksum) should use
// it rather than Model.Params, which in LoRA mode is the frozen base.
//
// On a GPU worker it first brings the host copy up to date (a failure to
// read the device is left for the next step to report); whoever changes
// the returned weights must call PushTrainable before the next step.
func (w *Worker) Trainable() []float32 {
	w.syncHost()
	return w.params
}

// PushTrainable makes a GPU worker take the host copy of its weights and
// AdamW moments (after a caller changed Trainable or Opt); a CPU worker
// has nothing to do.
func (w *Worker) PushTrainable() error { return w.pushHost() }

// LoRA returns the adapter the worker trains in LoRA mode, or nil.
func (w *Worker) LoRA() *model.LoRA { return w.Model.LoRA() }

// Buckets returns the lengths of the gradient buckets Step hands to the
// reducer, in order: the same on every worker of a job.
func (w *Worker) Buckets() []int {
	out := make([]int, len(w.buckets))
	for i, b := range w.buckets {
		out[i] = len(b)
	}
	return out
}

// gradReady is Model.GradReady during the last backward of a step: it
// counts the reported ranges and hands each bucket to the op once its last
// range is final.
func (w *Worker) gradReady(lo, hi int) {
	i := w.nextRange
	if i >= len(w.ranges) || w.ranges[i] != [2]int{lo, hi} {
		panic(fmt.Sprintf("train: Model.GradReady reported [%d, %d) as range %d, want %v", lo, hi, i, w.ranges))
	}
	w.nextRange++
	for w.added < len(w.buckets) && w.bucketEnd[w.added] <= w.nextRange {
		w.op.Add(w.buckets[w.added])
		w.added++
	}
}

// batchSize is the number of sequences in global batch step: GlobalBatch,
// or fewer for the last batch of a data-epoch.
func (w *Worker) batchSize(step int) int {
	G := w.Config.GlobalBatch
	_, k := shard.EpochStep(int64(step), w.n, G)
	return int(min((k+1)*int64(G), w.n) - k*int64(G))
}

// Step runs global batch number w.Done: part is this worker's sequence ids
// (shard.Train split) from shard.Assign for that batch. It zeroes the
// gradients and runs forward/backward over part in micro-batches of
// MicroBatch, so that the sum over all workers is the gradient of the mean
// loss over the global batch's counted targets: all of them, or, for a
// dataset with a loss mask, those the mask marks (the others are −1,
// targets model.Forward ignores).
//
// The mean is over the whole global batch's count, which no worker knows
// before the step without another collective: each micro-batch's gradient
// is accumulated with scale (its counted targets)/(size·T), size·T being
// every target of the global batch; the loss all-reduce also sums the
// counted targets N; then the reduced gradient and the loss are multiplied
// by size·T/N, the same factor on every worker. One worker and N workers
// thus compute the same mean, to the rounding of the sums' order. Without
// a loss mask N is size·T and nothing is rescaled. A global batch with no
// counted target has loss 0 and a zero gradient.
//
// During the last micro-batch's backward it
// hands the gradient buckets to red.Start(ctx, Done) as they are final
// (last layer first), so that communication overlaps compute; then it
// waits, all-reduces the loss, keeps a copy of the reduced gradient
// (LastReduced), clips it by global norm, applies AdamW at the schedule's
// rate for the step and increments Done.
//
// An empty part (more workers than sequences) still takes part in every
// reduction, with a zero gradient. If a data read or the reducer fails, the
// weights, the optimizer and Done are untouched and the error names the
// step; the gradient buffer is then garbage. (A failure before the
// reduction starts, such as a shard that cannot be read, leaves this
// worker out of it: its peers' reduction fails on the reducer's timeout.)
// The reduced sequence count is checked against the global batch
// (ErrPartition), and a non-finite loss or gradient is refused
// (ErrDiverged), also before anything is applied. In steady state Step
// allocates nothing (if the reducer does not).
func (w *Worker) Step(ctx context.Context, part []int64, red Reducer) (StepResult, error) {
	step := w.Done
	if step >= w.Config.Steps {
		return StepResult{}, fmt.Errorf("%w: step %d of a %d-step job", ErrJobDone, step, w.Config.Steps)
	}
	size := w.batchSize(step)
	switch {
	case w.LocalBatch:
		size = max(len(part), 1)
	case w.FixedBatch:
		size = w.Config.GlobalBatch
	}
	if len(part) > size {
		return StepResult{}, fmt.Errorf("%w: step %d: a part of %d sequences, the global batch has %d", ErrPartition, step, len(part), size)
	}
	if err := ctx.Err(); err != nil {
		return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
	}
	T, MB := w.T, w.Config.MicroBatch
	start := time.Now()
	if err := w.zeroGrad(); err != nil {
		return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
	}
	w.op, w.nextRange, w.added = nil, 0, 0
	all := float64(size) * float64(T) // the global batch's targets
	var lossSum float64               // Σ micro-batch mean loss × counted targets ÷ T
	var counted int64                 // targets the loss counts on in part
	for lo := 0; lo < len(part); lo += MB {
		ids := part[lo:min(lo+MB, len(part))]
		B := len(ids)
		n, err := w.load(shard.Train, ids)
		if err != nil {
			return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
		}
		counted += int64(n)
		if err := w.setDropout(step, ids); err != nil {
			return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
		}
		loss, err := w.forward(B)
		if err != nil {
			return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
		}
		lossSum += float64(loss) * float64(n) / float64(T) // B·loss when every target counts
		last := lo+MB >= len(part)
		if last {
			w.op = red.Start(ctx, uint64(step))
		}
		err = w.backward(float32(float64(n)/all), last) // B/size when every target counts
		if err != nil {
			if w.op != nil {
				w.op.Wait()
			}
			return StepResult{}, fmt.Errorf("train: step %d: %w", step, err)
		}
	}
	if w.op == nil { // empty part: nothing computed, every bucket is zero
		if w.dev != nil {
			clear(w.grads) // the host side of a GPU worker's gradient still holds the last reduced one
		}
		w.op = red.Start(ctx, uint64(step))
	}
	for ; w.added < len(w.buckets); w.added++ { // buckets Backward did not report (none, normally)
		w.op.Add(w.buckets[w.added])
	}
	computed := time.Now()
	err := w.op.Wait()
	w.op = nil
	if err != nil {
		return StepResult{}, fmt.Errorf("train: step %d: gradient all-reduce: %w", step, err)
	}
	w.lossBuf = [4]float32{float32(lossSum / float64(size)), float32(len(part)), float32(counted / countSplit), float32(counted % countSplit)}
	if err := red.AllReduce(ctx, uint64(step), w.lossBuf[:]); err != nil {
		return StepResult{}, fmt.Errorf("train: step %d: loss all-reduce: %w", step, err)
	}
	waited := time.Since(computed)
	if got := w.lossBuf[1]; got != float32(size) { // exact: counts are below 2^24
		return StepResult{}, fmt.Errorf("%w: step %d: the workers' parts hold %v sequences, the global batch has %d", ErrPartition, step, got, size)
	}
	N := float64(w.lossBuf[2])*countSplit + float64(w.lossBuf[3])
	if !(N >= 0 && N <= all) {
		return StepResult{}, fmt.Errorf("%w: step %d: the workers' parts count %v targets, the global batch has %v", ErrPartition, step, N, all)
	}
	loss := float64(w.lossBuf[0])
	if N > 0 && N < all { // the mean over the counted targets
		loss *= all / N
		kernels.Scale(w.grads, float32(all/N))
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return StepResult{}, fmt.Errorf("%w: step %d: loss %v; lower the learning rate", ErrDiverged, step, loss)
	}
	norm, lr, err := w.apply(step)
	if err != nil {
		return StepResult{}, err
	}
	return StepResult{Step: step + 1, Loss: loss, GradNorm: norm, LR: lr, Tokens: len(part) * T,
		Compute: computed.Sub(start), Wait: waited}, nil
}

// setDropout sets the adapter's dropout streams for a pass over sequences
// ids of step: sequence id of step k draws the mask of stream (Seed, k,
// id), whichever worker and micro-batch computes it. Without LoRA dropout it
// does nothing.
func (w *Worker) setDropout(step int, ids []int64) error {
	if a := w.Model.LoRA(); a == nil || a.Config.Dropout == 0 {
		return nil
	}
	s := w.streams[:len(ids)]
	for b, id := range ids {
		s[b] = model.DropoutStream(w.Config.Seed, uint64(step), uint64(id))
	}
	return w.Model.SetDropoutStreams(s)
}

// countSplit splits a count of targets in two for the loss all-reduce
// (lossBuf).
const countSplit = 4096

// load fills the first len(ids) rows of w.tokens and w.targets with
// sequences ids of split s: inputs are a sequence's first T tokens, targets
// its last T, −1 where the dataset's loss mask leaves a target out. It
// returns the number of targets the loss counts on.
func (w *Worker) load(s shard.Split, ids []int64) (counted int, err error) {
	T := w.T
	masked := w.Data.Manifest.LossMask
	for b, id := range ids {
		seq, err := w.Data.Sequence(s, id, w.seq[:0])
		if err != nil {
			return 0, err
		}
		if len(seq) != T+1 {
			return 0, fmt.Errorf("train: %s sequence %d has %d tokens, want %d", s, id, len(seq), T+1)
		}
		copy(w.tokens[b*T:(b+1)*T], seq[:T])
		targets := w.targets[b*T : (b+1)*T]
		copy(targets, seq[1:])
		if !masked {
			counted += T
			continue
		}
		mask, err := w.Data.SequenceMask(s, id, w.mask[:0])
		if err != nil {
			return 0, err
		}
		for j, trained := range mask[1:] {
			if trained {
				counted++
			} else {
				targets[j] = -1
			}
		}
	}
	return counted, nil
}

// apply finishes step with the reduced gradient in w.grads (Model.Grads,
// or the adapter's): it keeps a copy (LastReduced), clips, applies AdamW at
// the step's rate and increments Done. Step and ApplyReduced share it, so
// that both give the same bytes from the same gradient.
func (w *Worker) apply(step int) (norm float32, lr float64, err error) {
	copy(w.reduced, w.grads)
	w.reducedStep = -1 // until the update is applied
	if w.dev != nil {
		if norm, lr, err = w.applyOnDevice(step); err != nil {
			return 0, 0, err
		}
	} else {
		norm = kernels.ClipGradNorm(w.grads, float32(w.Config.Clip))
		if math.IsNaN(float64(norm)) || math.IsInf(float64(norm), 0) {
			return 0, 0, fmt.Errorf("%w: step %d: gradient norm %v; lower the learning rate", ErrDiverged, step, norm)
		}
		lr = w.sched.At(step)
		w.Opt.Apply(w.params, w.grads, float32(lr))
	}
	w.Done++
	w.reducedStep = step
	return norm, lr, nil
}

// LastReduced returns the reduced (unclipped) gradient of the last applied
// step (Done-1): what a peer that failed during that step's all-reduce
// needs to catch up with ApplyReduced. It has NumTrainable elements (the
// adapter's gradient in LoRA mode). ok is false before the first step,
// after Restore and after a step refused as diverged. grads is the worker's own buffer: it stays valid
// until the next Step or ApplyReduced overwrites it; copy it to keep it,
// and do not modify it.
func (w *Worker) LastReduced() (step int, grads []float32, ok bool) {
	if w.reducedStep < 0 {
		return 0, nil, false
	}
	return w.reducedStep, w.reduced, true
}

// ApplyReduced applies a peer's reduced gradient for step w.Done (what the
// peer's LastReduced returned) exactly as Step would after its reduction:
// clip, AdamW at the same rate, Done++. From the same weights and optimizer
// state, the result is bitwise what the peer computed. grads is not
// retained.
func (w *Worker) ApplyReduced(step int, grads []float32) error {
	switch {
	case step != w.Done:
		return fmt.Errorf("%w: a reduced gradient of step %d, the worker is at step %d", ErrWrongStep, step, w.Done)
	case w.Done >= w.Config.Steps:
		return fmt.Errorf("%w: step %d of a %d-step job", ErrJobDone, step, w.Config.Steps)
	case len(grads) != len(w.grads):
		return fmt.Errorf("train: a reduced gradient of %d elements for a worker that trains %d parameters", len(grads), len(w.grads))
	}
	copy(w.grads, grads)
	_, _, err := w.apply(step)
	return err
}

// WeightsHash identifies the weights: WeightsHash of the parameters, or, in
// LoRA mode, a SHA-256 over the frozen base's WeightsHash and the adapter's
// parameters (so it changes with the adapter and differs between bases).
// Replicas at the same step compare it.
//
// On a GPU worker that cannot read its weights back (a GPU fault) it
// returns ""; WeightsHashErr says why.
func (w *Worker) WeightsHash() string {
	h, _ := w.WeightsHashErr()
	return h
}

// WeightsHashErr is WeightsHash with the error of a GPU worker that cannot
// read its weights back.
func (w *Worker) WeightsHashErr() (string, error) {
	if err := w.syncHost(); err != nil {
		return "", err
	}
	return w.weightsHash(), nil
}

func (w *Worker) weightsHash() string {
	if w.baseHash == "" {
		return WeightsHash(w.params)
	}
	return loraWeightsHash(w.baseHash, w.params)
}

// loraWeightsHash is WeightsHash of a base (given by its hash) with an
// adapter: SHA-256 of "braid-lora", the base's hash and the adapter's
// float32 bits, little-endian.
func loraWeightsHash(base string, adapter []float32) string {
	h := sha256.New()
	h.Write([]byte("braid-lora\x00" + base + "\x00"))
	var buf [4096]byte
	for len(adapter) > 0 {
		n := min(len(adapter), len(buf)/4)
		for i, p := range adapter[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(p))
		}
		h.Write(buf[:4*n])
		adapter = adapter[n:]
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Eval returns the mean loss over the counted targets (all, or those the
// loss mask marks) of the first EvalSequences held-out sequences
// (shard.Heldout), in micro-batches of MicroBatch; ErrNoHeldout if none
// counts. It uses the model's activations, so call it between steps.
func (w *Worker) Eval() (float64, error) {
	n := w.Data.NumSequences(shard.Heldout)
	if n == 0 {
		return 0, fmt.Errorf("%w: %s", ErrNoHeldout, w.Data.Manifest.Name)
	}
	k := int64(w.Config.EvalSequences)
	if k == 0 {
		k = DefaultEvalSequences
	}
	k = min(k, n)
	w.Model.SetDropoutStreams(nil) // evaluation runs without dropout; Step sets it again
	ids := make([]int64, 0, w.Config.MicroBatch)
	var sum, weight float64 // in sequences' worth of targets: Σ loss·B and Σ B without a mask
	for lo := int64(0); lo < k; lo += int64(len(ids)) {
		ids = ids[:0]
		for id := lo; id < min(lo+int64(w.Config.MicroBatch), k); id++ {
			ids = append(ids, id)
		}
		n, err := w.load(shard.Heldout, ids)
		if err != nil {
			return 0, fmt.Errorf("train: eval: %w", err)
		}
		loss, err := w.forward(len(ids))
		if err != nil {
			return 0, fmt.Errorf("train: eval: %w", err)
		}
		sum += float64(loss) * float64(n) / float64(w.T)
		weight += float64(n) / float64(w.T)
	}
	if weight == 0 {
		return 0, fmt.Errorf("%w: the loss mask of the first %d held-out sequences of %s counts no target", ErrNoHeldout, k, w.Data.Manifest.Name)
	}
	return sum / weight, nil
}

// Snapshot format: one safetensors file with three F32 tensors of shape
// (NumTrainable), in model.Config.Layout order (model.LoRA.Layout order in
// LoRA mode), and metadata:
//
//	format          "braid-worker-snapshot"
//	version         "1"
//	step            Done, decimal
//	model_config    the model.Config as JSON
//	job_sha256      JobConfig.hash: the settings that shape the trajectory
//	dataset         the dataset's id (shard.Manifest.ID)
//	weights_sha256  WeightsHash of the params tensor
//	state_sha256    SHA-256 of the three tensors' data, in the order below
//	base_sha256     LoRA mode only: WeightsHash of the frozen base weights,
//	                which the snapshot does not hold
const (
	snapshotFormat  = "braid-worker-snapshot"
	snapshotVersion = "1"
)

// snapshotTensors are the tensor names, in state_sha256 order.
var snapshotTensors = [3]string{"params", "adamw.m", "adamw.v"}

// Snapshot encodes the worker's state — weights, AdamW moments and Done,
// with the model config, the job's settings hash and the dataset id to
// check them against — as one safetensors file. Restore on a worker of the
// same model, job and dataset continues bitwise where this one is. In LoRA
// mode the weights and moments are the adapter's, and the snapshot names
// the base by its hash instead of holding it. Call it between steps.
func (w *Worker) Snapshot() ([]byte, error) {
	if err := w.syncHost(); err != nil {
		return nil, err
	}
	n := len(w.params)
	ts := []safetensors.Tensor{
		safetensors.F32Tensor(snapshotTensors[0], []int{n}, w.params),
		safetensors.F32Tensor(snapshotTensors[1], []int{n}, w.Opt.M),
		safetensors.F32Tensor(snapshotTensors[2], []int{n}, w.Opt.V),
	}
	mc, err := json.Marshal(w.Model.Config)
	if err != nil {
		return nil, err
	}
	md := map[string]string{
		"format":         snapshotFormat,
		"version":        snapshotVersion,
		"step":           strconv.Itoa(w.Done),
		"model_config":   string(mc),
		"job_sha256":     w.Config.hash(),
		"dataset":        w.Data.Manifest.ID,
		"weights_sha256": WeightsHash(w.params),
		"state_sha256":   stateHash(ts[0].Data, ts[1].Data, ts[2].Data),
	}
	if w.baseHash != "" {
		md["base_sha256"] = w.baseHash
	}
	var buf bytes.Buffer
	buf.Grow(3*4*n + 1024)
	err = safetensors.Encode(&buf, ts, md)
	if err != nil {
		return nil, fmt.Errorf("train: snapshot: %w", err)
	}
	return buf.Bytes(), nil
}

func stateHash(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Restore loads a snapshot made by Snapshot. It first checks everything —
// the file's structure, format and version, that the model config, the
// job's settings and the dataset are this worker's, that the step is in
// 0..Steps, that the tensors have the size of what the worker trains and
// their checksum matches, and that every value is finite (and the second
// moments non-negative); in LoRA mode also that the snapshot was made on
// this worker's base weights (base_sha256) — and changes nothing if any
// check fails: it returns an error wrapping ErrSnapshot that says what is
// wrong. It never panics. After Restore, LastReduced has nothing until the
// next step.
func (w *Worker) Restore(b []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...)
	}
	f, err := safetensors.Decode(b)
	if err != nil {
		return bad("%w", err)
	}
	md := f.Metadata
	if md["format"] != snapshotFormat {
		return bad("format %q, want %q (not a worker snapshot)", md["format"], snapshotFormat)
	}
	if md["version"] != snapshotVersion {
		return bad("version %q, this build reads version %s", md["version"], snapshotVersion)
	}
	var mc model.Config
	if err := json.Unmarshal([]byte(md["model_config"]), &mc); err != nil {
		return bad("model_config: %v", err)
	}
	if mc != w.Model.Config {
		return bad("it is of another model: %+v, this worker's is %+v", mc, w.Model.Config)
	}
	switch base, ok := md["base_sha256"]; {
	case ok && w.baseHash == "":
		return bad("it is of a LoRA job (it holds an adapter), this worker trains the full model")
	case !ok && w.baseHash != "":
		return bad("it is of a full fine-tuning job, this worker trains a LoRA adapter")
	case ok && base != w.baseHash:
		return bad("it was made on other base weights (base_sha256 %.12s…, this worker's base %.12s…)", base, w.baseHash)
	}
	if md["job_sha256"] != w.Config.hash() {
		return bad("it was made with other job settings (job_sha256 %.12s…, this job's %.12s…)", md["job_sha256"], w.Config.hash())
	}
	if md["dataset"] != w.Data.Manifest.ID {
		return bad("it is of dataset %.12s…, this worker trains on %.12s…", md["dataset"], w.Data.Manifest.ID)
	}
	step, err := strconv.Atoi(md["step"])
	if err != nil || step < 0 || step > w.Config.Steps {
		return bad("step %q, want 0..%d", md["step"], w.Config.Steps)
	}
	n := len(w.params)
	if len(f.Tensors) != len(snapshotTensors) {
		return bad("%d tensors, want %d (%v)", len(f.Tensors), len(snapshotTensors), snapshotTensors)
	}
	var data [3][]byte
	for i, name := range snapshotTensors {
		t, ok := f.Tensor(name)
		switch {
		case !ok:
			return bad("tensor %s is missing", name)
		case t.Dtype != safetensors.F32 || len(t.Shape) != 1 || t.Shape[0] != n:
			return bad("tensor %s is %s %v, want F32 [%d]", name, t.Dtype, t.Shape, n)
		}
		data[i] = t.Data
	}
	if got := stateHash(data[0], data[1], data[2]); got != md["state_sha256"] {
		return bad("checksum mismatch: the tensors hash to %.12s…, state_sha256 says %.12s… (corrupt or truncated in transit?)", got, md["state_sha256"])
	}
	var vals [3][]float32
	for i, name := range snapshotTensors {
		t, _ := f.Tensor(name)
		if vals[i], err = t.Float32s(); err != nil {
			return bad("tensor %s: %v", name, err)
		}
		for j, v := range vals[i] {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || (i == 2 && v < 0) {
				return bad("tensor %s: element %d is %v", name, j, v)
			}
		}
	}
	if got := WeightsHash(vals[0]); got != md["weights_sha256"] {
		return bad("weights_sha256 %.12s… does not match the weights (%.12s…)", md["weights_sha256"], got)
	}
	w.hostCurrent() // the host copy is what counts now: no refresh from the GPU may overwrite it
	copy(w.params, vals[0])
	copy(w.Opt.M, vals[1])
	copy(w.Opt.V, vals[2])
	w.Opt.Step, w.Done = step, step
	w.reducedStep = -1
	return w.pushHost()
}
