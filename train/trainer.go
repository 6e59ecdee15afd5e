package train

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/cudamodel"
)

// ErrConfig is wrapped by every Config validation error.
var ErrConfig = errors.New("train: invalid config")

// Config holds the hyper-parameters of a training run.
type Config struct {
	Steps       int     // optimizer updates
	Batch       int     // sequences per update
	SeqLen      int     // tokens per sequence; 0 means the model's context
	LR          float64 // peak learning rate
	MinLRFrac   float64 // the cosine schedule ends at LR·MinLRFrac
	Warmup      int     // linear warmup steps
	WeightDecay float64 // AdamW decoupled weight decay on matrices
	Beta1       float64
	Beta2       float64
	Eps         float64
	Clip        float64 // global gradient-norm clip; 0 disables
	Seed        uint64  // seeds model init (when training from scratch) and the sampler
	EvalEvery   int     // held-out evaluation every N steps (and at the end); 0 disables
	EvalBatches int     // batches per held-out evaluation
}

// DefaultConfig returns settings that train the tiny and small presets well
// on a few megabytes of text.
func DefaultConfig() Config {
	return Config{
		Steps: 200, Batch: 8, LR: 3e-3, MinLRFrac: 0.1, Warmup: 20, WeightDecay: 0.1,
		Beta1: 0.9, Beta2: 0.95, Eps: 1e-8, Clip: 1.0, Seed: 1, EvalEvery: 50, EvalBatches: 4,
	}
}

// DefaultLoRAConfig returns settings for training a LoRA adapter on a base
// like models/base-en: DefaultConfig with the higher learning rate a
// low-rank update needs (B starts at zero and only rank-r directions move)
// and no weight decay (the Hugging Face Trainer's default, which PEFT runs
// use).
func DefaultLoRAConfig() Config {
	c := DefaultConfig()
	c.LR, c.WeightDecay = DefaultLoRALR, 0
	return c
}

// DefaultLoRALR is the peak learning rate of DefaultLoRAConfig and
// DefaultLoRAJobConfig.
const DefaultLoRALR = 5e-3

// Validate checks each field and names the one at fault.
func (c Config) Validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("%w: steps = %d, want ≥ 1", ErrConfig, c.Steps)
	case c.Batch < 1 || c.Batch > 1<<16:
		return fmt.Errorf("%w: batch = %d, want 1..65536", ErrConfig, c.Batch)
	case c.SeqLen < 0:
		return fmt.Errorf("%w: seq-len = %d, want ≥ 0", ErrConfig, c.SeqLen)
	}
	if err := checkOptimizer(c.LR, c.MinLRFrac, c.Warmup, c.WeightDecay, c.Beta1, c.Beta2); err != nil {
		return err
	}
	switch {
	case !(c.Eps > 0):
		return fmt.Errorf("%w: eps = %g, want > 0", ErrConfig, c.Eps)
	case !(c.Clip >= 0):
		return fmt.Errorf("%w: clip = %g, want ≥ 0", ErrConfig, c.Clip)
	case c.EvalEvery < 0:
		return fmt.Errorf("%w: eval-every = %d, want ≥ 0", ErrConfig, c.EvalEvery)
	case c.EvalBatches < 1:
		return fmt.Errorf("%w: eval-batches = %d, want ≥ 1 (the end of a run is always evaluated)", ErrConfig, c.EvalBatches)
	}
	return nil
}

// checkOptimizer checks the learning-rate schedule and AdamW settings that
// the single-process Config and the cluster JobConfig share.
func checkOptimizer(lr, minLRFrac float64, warmup int, weightDecay, beta1, beta2 float64) error {
	switch {
	case !(lr > 0 && lr < 10):
		return fmt.Errorf("%w: lr = %g, want in (0, 10)", ErrConfig, lr)
	case !(minLRFrac >= 0 && minLRFrac <= 1):
		return fmt.Errorf("%w: min-lr fraction = %g, want 0..1", ErrConfig, minLRFrac)
	case warmup < 0:
		return fmt.Errorf("%w: warmup = %d, want ≥ 0", ErrConfig, warmup)
	case !(weightDecay >= 0 && weightDecay < 1):
		return fmt.Errorf("%w: weight decay = %g, want 0 ≤ wd < 1", ErrConfig, weightDecay)
	case !(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1):
		return fmt.Errorf("%w: betas = (%g, %g), want each in [0, 1)", ErrConfig, beta1, beta2)
	}
	return nil
}

// StepStats describe one optimizer update.
type StepStats struct {
	Step     int // 1-based count of updates done
	Loss     float32
	LR       float64
	GradNorm float32 // before clipping
	Tokens   int     // tokens processed by this step
	Duration time.Duration
}

// Trainer runs the training loop of one process.
//
// It trains the model's weights, or, when the model has a LoRA adapter
// attached (model.Model.AttachLoRA) at New, the adapter only: the optimizer
// then holds the adapter's moments, checkpoints hold the adapter (PEFT's
// files) and the training state, and the base weights stay as they are.
type Trainer struct {
	Config Config
	Model  *model.Model
	// LoRA is the adapter being trained, or nil when the model's own
	// weights are.
	LoRA    *model.LoRA
	Opt     *Optimizer
	Corpus  *Corpus
	Tok     model.Tokenizer
	sched   Schedule
	sampler *Sampler
	T       int
	// SavedSteps is the Steps of the run Resume continued (0 before Resume).
	SavedSteps int
	corpusSum  string           // corpusHash, computed once
	baseSum    string           // WeightsHash of the frozen base (LoRA), computed once
	params     []float32        // what the optimizer updates: Model.Params or LoRA.Params
	grads      []float32        // their gradients
	inputs     []int32          // (Batch, T)
	targets    []int32          // (Batch, T)
	streams    []uint64         // (Batch) dropout streams of a step (LoRA with dropout)
	dev        *cudamodel.Model // the GPU model the step runs on (UseDevice), or nil
}

// New prepares a trainer for m on corpus, tokenised with tok. The model's
// activations must fit cfg.Batch × T where T is cfg.SeqLen or the model's
// context. If m has a LoRA adapter attached, the trainer trains it and
// leaves the base weights alone.
func New(cfg Config, m *model.Model, tok model.Tokenizer, corpus *Corpus) (*Trainer, error) {
	mb, mt := m.MaxBatch()
	return newTrainer(cfg, m, tok, corpus, mb, mt)
}

// newTrainer is New for a model whose step runs where activations for
// mb × mt positions are allocated.
func newTrainer(cfg Config, m *model.Model, tok model.Tokenizer, corpus *Corpus, mb, mt int) (*Trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	T := cfg.SeqLen
	if T == 0 {
		T = m.Config.Context
	}
	if cfg.Batch*T > mb*mt || T > mt {
		return nil, fmt.Errorf("%w: batch %d×%d exceeds the model's allocation %d×%d", ErrConfig, cfg.Batch, T, mb, mt)
	}
	s, err := NewSampler(corpus.Train, T, cfg.Seed)
	if err != nil {
		return nil, fmt.Errorf("training split (%d files in all): %w; documents are split whole, so a corpus of one or a few files can land entirely in the held-out split: add files or hold out none (--holdout-every 0 --eval-every 0)", corpus.Files, err)
	}
	if cfg.EvalEvery > 0 && len(corpus.Heldout) < 2 {
		return nil, fmt.Errorf("%w: the held-out split is empty (documents are held out whole, about 1 in --holdout-every); add files, or train without evaluation (--eval-every 0)", ErrTooSmall)
	}
	t := &Trainer{
		Config: cfg, Model: m, Corpus: corpus, Tok: tok, sampler: s, T: T,
		sched:   Schedule{LR: cfg.LR, MinLR: cfg.LR * cfg.MinLRFrac, Warmup: cfg.Warmup, Steps: cfg.Steps},
		params:  m.Params,
		grads:   m.Grads,
		inputs:  make([]int32, cfg.Batch*T),
		targets: make([]int32, cfg.Batch*T),
		streams: make([]uint64, cfg.Batch),
	}
	layout := m.Config.Layout()
	if a := m.LoRA(); a != nil {
		t.LoRA, t.params, t.grads, layout = a, a.Params, a.Grads, a.Layout()
	}
	t.Opt = NewLayoutOptimizer(layout, float32(cfg.Beta1), float32(cfg.Beta2), float32(cfg.Eps), float32(cfg.WeightDecay))
	return t, nil
}

// NumTrainable is the number of parameters the trainer optimises: the
// model's, or the adapter's.
func (t *Trainer) NumTrainable() int { return len(t.params) }

// Step draws a batch, computes the gradient, clips it and applies one AdamW
// update. It allocates nothing.
func (t *Trainer) Step() (StepStats, error) {
	start := time.Now()
	B, T := t.Config.Batch, t.T
	t.sampler.Next(t.inputs, t.targets, B, T)
	m := t.Model
	if t.LoRA != nil && t.LoRA.Config.Dropout > 0 {
		// Sequence b of step k draws the dropout mask of stream (seed, k,
		// b): the same in a resumed run.
		for b := range t.streams {
			t.streams[b] = model.DropoutStream(t.Config.Seed, uint64(t.Opt.Step), uint64(b))
		}
		if err := m.SetDropoutStreams(t.streams); err != nil {
			return StepStats{}, err
		}
	}
	var loss, norm float32
	if t.dev != nil {
		var err error
		if loss, norm, err = t.deviceStep(); err != nil {
			return StepStats{}, err
		}
	} else {
		m.ZeroGrad()
		var err error
		if loss, err = m.Forward(t.inputs, t.targets, B, T); err != nil {
			return StepStats{}, err
		}
		if err := m.Backward(1); err != nil {
			return StepStats{}, err
		}
		norm = kernels.ClipGradNorm(t.grads, float32(t.Config.Clip))
	}
	if math.IsNaN(float64(loss)) || math.IsInf(float64(norm), 0) || math.IsNaN(float64(norm)) {
		return StepStats{}, fmt.Errorf("train: step %d diverged (loss %v, gradient norm %v); lower the learning rate", t.Opt.Step+1, loss, norm)
	}
	lr := t.sched.At(t.Opt.Step)
	if t.dev != nil {
		if err := t.deviceUpdate(float32(lr)); err != nil {
			return StepStats{}, err
		}
	} else {
		t.Opt.Apply(t.params, t.grads, float32(lr))
	}
	return StepStats{Step: t.Opt.Step, Loss: loss, LR: lr, GradNorm: norm, Tokens: B * T, Duration: time.Since(start)}, nil
}

// Eval scores the first EvalBatches × Batch windows of the held-out split
// (the same tokens every time; fewer if the split is shorter), each token
// once, with dropout off. It fails if the split is empty.
func (t *Trainer) Eval() (EvalResult, error) {
	t.Model.SetDropoutStreams(nil) // Step turns it on again
	var m Forwarder = t.Model
	if t.dev != nil {
		m = t.dev
	}
	return Evaluate(m, t.Tok, t.Corpus.Heldout, t.Config.Batch, t.T, t.Config.EvalBatches*t.Config.Batch*t.T)
}
