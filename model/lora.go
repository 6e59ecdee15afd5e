package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/braidml/braid/kernels"
)

// This file is LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large
// Language Models", 2021) as Hugging Face PEFT implements it for GPT-2 and
// the Llama family.
//
// An adapter adds a low-rank update to some of each block's projections:
// GPT-2's four (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) or the
// Llama family's seven (self_attn.q_proj, k_proj, v_proj, o_proj,
// mlp.gate_proj, up_proj, down_proj). For a projection with weight W
// (out, in) and bias b:
//
//	y = x·Wᵀ + b + s · dropout(x)·Aᵀ·Bᵀ      s = alpha / r
//
// with A (r, in) and B (out, r) the adapter's tensors. The base weights stay
// frozen: training touches only A and B, which live in their own flat buffer
// (LoRA.Params, gradients in LoRA.Grads). B starts at zero, so a fresh
// adapter leaves the model's output unchanged.
//
// PEFT keeps lora_A as nn.Linear(in, r).weight, (r, in), and lora_B as
// nn.Linear(r, out).weight, (out, r), whatever the base layer is; GPT-2's
// Conv1D (weight (in, out), fan_in_fan_out) only changes how the merged delta
// is added: W_conv1d += (B·A)ᵀ·s. braid stores linear weights as (out, in), so
// merging is W += s·B·A with no transpose, and the adapter's tensors are
// stored as they are, in PEFT's names and shapes.

// LoRA errors.
var (
	// ErrLoRAConfig is wrapped by every LoRAConfig validation error.
	ErrLoRAConfig = errors.New("model: invalid LoRA config")
	// ErrAdapter is wrapped by every error about an adapter's files.
	ErrAdapter = errors.New("model: bad adapter")
)

// MaxLoRARank bounds LoRAConfig.Rank.
const MaxLoRARank = 4096

// DefaultLoRATargets are the projections an adapter of a GPT-2 adapts
// unless told otherwise: all four of each block (PEFT's own default for
// GPT-2 is c_attn only; adapting every projection learns more per
// parameter).
var DefaultLoRATargets = []string{"c_attn", "c_proj", "c_fc"}

// DefaultLlamaLoRATargets are DefaultLoRATargets' counterpart for the Llama
// family: all seven projections of each block.
var DefaultLlamaLoRATargets = []string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// DefaultLoRATargetsFor returns the default targets for a model of config
// c: DefaultLoRATargets or DefaultLlamaLoRATargets (a copy).
func DefaultLoRATargetsFor(c Config) []string {
	if c.llamaFamily() {
		return slices.Clone(DefaultLlamaLoRATargets)
	}
	return slices.Clone(DefaultLoRATargets)
}

// LoRAConfig is the shape and hyper-parameters of a LoRA adapter, named as
// in PEFT's LoraConfig.
type LoRAConfig struct {
	Rank    int     `json:"r"`            // r, the inner dimension of B·A
	Alpha   float64 `json:"lora_alpha"`   // the update is scaled by Alpha/Rank
	Dropout float64 `json:"lora_dropout"` // dropout on the adapter's input, in [0, 1); 0: none
	// Targets are PEFT target_modules. For a GPT-2: any of "c_attn"
	// (attention's qkv projection), "c_proj" (both attention's output
	// projection and the MLP's, as in PEFT), "attn.c_proj" or "mlp.c_proj"
	// (one of them), "c_fc" (the MLP's input projection); "attn.c_attn" and
	// "mlp.c_fc" are accepted too. For the Llama family: any of "q_proj",
	// "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
	// (also with their "self_attn." or "mlp." prefix). Every block gets the
	// same targets, and they name one architecture's projections.
	Targets []string `json:"target_modules"`
	// BaseModel is written into adapter_config.json as
	// base_model_name_or_path: where the base model can be found. It does
	// not change what the adapter computes.
	BaseModel string `json:"base_model_name_or_path,omitempty"`
}

// DefaultLoRAConfig is rank 8, alpha 16, no dropout, DefaultLoRATargets.
func DefaultLoRAConfig() LoRAConfig {
	return LoRAConfig{Rank: 8, Alpha: 16, Targets: slices.Clone(DefaultLoRATargets)}
}

// Validate checks each field and names the one at fault.
func (c LoRAConfig) Validate() error {
	switch {
	case c.Rank < 1 || c.Rank > MaxLoRARank:
		return fmt.Errorf("%w: r = %d, want 1..%d", ErrLoRAConfig, c.Rank, MaxLoRARank)
	case math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) || c.Alpha == 0:
		return fmt.Errorf("%w: lora_alpha = %g, want a finite non-zero number", ErrLoRAConfig, c.Alpha)
	case !(c.Dropout >= 0 && c.Dropout < 1):
		return fmt.Errorf("%w: lora_dropout = %g, want 0 ≤ p < 1", ErrLoRAConfig, c.Dropout)
	}
	_, err := resolveTargets(c.Targets)
	return err
}

// Scale is Alpha/Rank, the factor of the adapter's update.
func (c LoRAConfig) Scale() float64 { return c.Alpha / float64(c.Rank) }

// ParseLoRATargets splits a comma-separated list of target modules
// ("c_attn,c_proj,c_fc", "q_proj,v_proj") and checks each name.
func ParseLoRATargets(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	if _, err := resolveTargets(out); err != nil {
		return nil, err
	}
	return out, nil
}

// CanonicalLoRATargets returns the shortest target_modules list that
// selects the same projections as targets, in a fixed order: for a GPT-2
// "c_attn", then "c_proj" (both output projections) or "attn.c_proj" or
// "mlp.c_proj", then "c_fc"; for the Llama family the short names in block
// order (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj).
// Two lists select the same projections iff their canonical forms are
// equal. It is what NewLoRA keeps and SaveAdapter writes.
func CanonicalLoRATargets(targets []string) ([]string, error) {
	ts, err := resolveTargets(targets)
	if err != nil {
		return nil, err
	}
	return ts.names(), nil
}

// A projection of a transformer block that an adapter can adapt: GPT-2's
// four, then the Llama family's seven. A model has one architecture's.
type projection int

const (
	projQKV     projection = iota // GPT-2 attn.c_attn: C → 3C
	projAttnOut                   // GPT-2 attn.c_proj: C → C
	projFC                        // GPT-2 mlp.c_fc:    C → 4C
	projMLPOut                    // GPT-2 mlp.c_proj: 4C → C
	projQ                         // Llama self_attn.q_proj: C → NH·hd
	projK                         // Llama self_attn.k_proj: C → KVH·hd
	projV                         // Llama self_attn.v_proj: C → KVH·hd
	projO                         // Llama self_attn.o_proj: NH·hd → C
	projGate                      // Llama mlp.gate_proj: C → H
	projUp                        // Llama mlp.up_proj:   C → H
	projDown                      // Llama mlp.down_proj: H → C
	numProjections

	numGPT2Projections  = int(projQ)
	numLlamaProjections = int(numProjections - projQ)
)

// projNames are the projections' module names inside a block, in adapter
// buffer order.
var projNames = [numProjections]string{
	"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj",
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj",
}

// llama reports whether p is a projection of the Llama family.
func (p projection) llama() bool { return p >= projQ }

// projections returns the [lo, hi) range of the projections of a model of
// config c.
func projections(c Config) (lo, hi projection) {
	if c.llamaFamily() {
		return projQ, numProjections
	}
	return 0, projQ
}

// LoRAProjectionShape returns the (in, out) features of a block's
// projection number p, in adapter buffer order (attn.c_attn, attn.c_proj,
// mlp.c_fc, mlp.c_proj), for a GPT-2 of config c: what a device backend
// needs to lay an adapter out as this package does.
func LoRAProjectionShape(c Config, p int) (in, out int) { return projection(p).shape(c) }

// shape returns a projection's (in, out) features for model config c.
func (p projection) shape(c Config) (in, out int) {
	C := c.Dim
	switch p {
	case projQKV:
		return C, 3 * C
	case projAttnOut:
		return C, C
	case projFC:
		return C, 4 * C
	case projMLPOut:
		return 4 * C, C
	case projQ:
		return C, c.Heads * c.HeadDim
	case projK, projV:
		return C, c.KVHeads * c.HeadDim
	case projO:
		return c.Heads * c.HeadDim, C
	case projGate, projUp:
		return C, c.Hidden
	default:
		return c.Hidden, C
	}
}

// widestProjectionInput is the most input features of a projection of a
// model of config c.
func (c Config) widestProjectionInput() int {
	w := 0
	lo, hi := projections(c)
	for p := lo; p < hi; p++ {
		in, _ := p.shape(c)
		w = max(w, in)
	}
	return w
}

// targetSet says which projections an adapter adapts.
type targetSet [numProjections]bool

// resolveTargets maps PEFT target_modules names to projections, as PEFT
// matches them against module names ("transformer.h.0.mlp.c_proj" is
// targeted by "c_proj", "mlp.c_proj" or "h.0.mlp.c_proj"; braid accepts only
// the names that pick a projection in every block). The names must all be
// GPT-2's or all the Llama family's.
func resolveTargets(names []string) (targetSet, error) {
	var ts targetSet
	if len(names) == 0 {
		return ts, fmt.Errorf("%w: target_modules is empty (want some of c_attn, c_proj, c_fc, attn.c_proj, mlp.c_proj for a GPT-2, of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj for a Llama)", ErrLoRAConfig)
	}
	for _, n := range names {
		matched := false
		for p, full := range projNames {
			if n == full || strings.HasSuffix(full, "."+n) {
				ts[p], matched = true, true
			}
		}
		if !matched {
			return ts, fmt.Errorf("%w: target module %q is not a projection braid adapts (GPT-2: c_attn, c_proj, c_fc, attn.c_proj, mlp.c_proj; Llama: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", ErrLoRAConfig, n)
		}
	}
	if slices.Contains(ts[:projQ], true) && slices.Contains(ts[projQ:], true) {
		return ts, fmt.Errorf("%w: target_modules %v mixes GPT-2 and Llama projections", ErrLoRAConfig, names)
	}
	return ts, nil
}

// llama reports whether the set names the Llama family's projections.
func (ts targetSet) llama() bool { return slices.Contains(ts[projQ:], true) }

// fits returns an error unless the set names projections of a model of
// config c.
func (ts targetSet) fits(c Config) error {
	if ts.llama() != c.llamaFamily() {
		return fmt.Errorf("%w: target_modules %v are projections of another architecture than the base model's (%s)", ErrLoRAConfig, ts.names(), c.Arch)
	}
	return nil
}

// names returns the canonical target_modules list of a target set: the
// shortest PEFT names that select exactly these projections.
func (ts targetSet) names() []string {
	var out []string
	if ts.llama() {
		for p := projQ; p < numProjections; p++ {
			if ts[p] {
				out = append(out, projNames[p][strings.IndexByte(projNames[p], '.')+1:])
			}
		}
		return out
	}
	if ts[projQKV] {
		out = append(out, "c_attn")
	}
	switch {
	case ts[projAttnOut] && ts[projMLPOut]:
		out = append(out, "c_proj")
	case ts[projAttnOut]:
		out = append(out, "attn.c_proj")
	case ts[projMLPOut]:
		out = append(out, "mlp.c_proj")
	}
	if ts[projFC] {
		out = append(out, "c_fc")
	}
	return out
}

// loraNamePrefix is what PEFT puts before a GPT-2 module name in an
// adapter's tensor names: PeftModel.base_model (LoraModel).model
// (GPT2LMHeadModel).transformer.
const loraNamePrefix = "base_model.model.transformer."

// loraLlamaNamePrefix is loraNamePrefix for the Llama family: ...model
// (LlamaForCausalLM).model (LlamaModel).
const loraLlamaNamePrefix = "base_model.model.model."

// loraModuleName returns the PEFT name of projection p of block l of a
// model of config c, without the adapter's ".lora_A.weight" suffix.
func loraModuleName(c Config, l int, p projection) string {
	if c.llamaFamily() {
		return fmt.Sprintf("%slayers.%d.%s", loraLlamaNamePrefix, l, projNames[p])
	}
	return fmt.Sprintf("%sh.%d.%s", loraNamePrefix, l, projNames[p])
}

// LoRA is an adapter for a model of config Base: its tensors A and B for
// each adapted projection of each block, in one flat parameter buffer and
// one gradient buffer of the same layout (Layout).
//
// Attach it to a model with Model.AttachLoRA; the model's Forward then adds
// its update and Backward computes its gradients (not the base weights').
// A LoRA is attached to at most one model at a time and, like a Model, is
// not safe for concurrent use.
type LoRA struct {
	Config LoRAConfig // as given to NewLoRA (Targets in canonical form)
	Base   Config     // the model the adapter fits
	// Params is the flat adapter buffer, in Layout order: block by block,
	// in each block the adapted projections in the order c_attn,
	// attn.c_proj, c_fc, mlp.c_proj (Llama: q_proj, k_proj, v_proj, o_proj,
	// gate_proj, up_proj, down_proj), each A (r, in) then B (out, r).
	Params []float32
	// Grads is the flat gradient buffer, same layout. Backward adds into
	// it; Model.ZeroGrad clears it while the adapter is attached.
	Grads []float32

	targets  targetSet
	scale    float32
	layout   []Param
	p, g     [][numProjections]loraPair // per block: views into Params and Grads (nil for a projection not adapted)
	spans    [][2]int                   // per block: its [start, end) in the flat buffers
	attached bool
}

// loraPair is one projection's A (r, in) and B (out, r).
type loraPair struct{ a, b []float32 }

// NewLoRA returns an adapter of config c for a model of config base, with
// A and B zero (call Init, or load one with LoadAdapter). It fails if either
// config is invalid or the adapter would need more than MemoryLimit.
func NewLoRA(base Config, c LoRAConfig) (*LoRA, error) {
	if err := base.Validate(); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	ts, _ := resolveTargets(c.Targets)
	if err := ts.fits(base); err != nil {
		return nil, err
	}
	c.Targets = ts.names()
	a := &LoRA{Config: c, Base: base, targets: ts, scale: float32(c.Scale())}
	a.layout = loraLayout(base, c.Rank, ts)
	n := 0
	if k := len(a.layout); k > 0 {
		n = a.layout[k-1].Offset + a.layout[k-1].Size
	}
	if need := 8 * int64(n); need > MemoryLimit { // params and grads
		return nil, fmt.Errorf("%w: a rank-%d adapter of a %d-layer, %d-channel model needs %.1f GiB, more than the %.1f GiB limit",
			ErrLoRAConfig, c.Rank, base.Layers, base.Dim, float64(need)/(1<<30), float64(MemoryLimit)/(1<<30))
	}
	a.Params, a.Grads = make([]float32, n), make([]float32, n)
	a.p, a.spans = a.views(a.Params)
	a.g, _ = a.views(a.Grads)
	return a, nil
}

// loraLayout lists an adapter's tensors in flat-buffer order (see
// LoRA.Params) with their PEFT names. Every tensor is a matrix that AdamW
// decays when weight decay is set (as the Hugging Face Trainer does).
func loraLayout(c Config, r int, ts targetSet) []Param {
	var ps []Param
	off := 0
	for l := 0; l < c.Layers; l++ {
		for p := range numProjections {
			if !ts[p] {
				continue
			}
			in, out := p.shape(c)
			name := loraModuleName(c, l, p) + "."
			ps = append(ps, Param{Name: name + "lora_A.weight", Shape: []int{r, in}, Offset: off, Size: r * in, Decay: true})
			off += r * in
			ps = append(ps, Param{Name: name + "lora_B.weight", Shape: []int{out, r}, Offset: off, Size: out * r, Decay: true})
			off += out * r
		}
	}
	return ps
}

// views returns the per-block views of a flat adapter buffer and each
// block's span in it.
func (a *LoRA) views(flat []float32) ([][numProjections]loraPair, [][2]int) {
	v := make([][numProjections]loraPair, a.Base.Layers)
	spans := make([][2]int, a.Base.Layers)
	get := func(p Param) []float32 { return flat[p.Offset : p.Offset+p.Size : p.Offset+p.Size] }
	i := 0
	for l := range a.Base.Layers {
		spans[l][0] = a.layout[i].Offset
		for p := range numProjections {
			if a.targets[p] {
				v[l][p] = loraPair{a: get(a.layout[i]), b: get(a.layout[i+1])}
				i += 2
			}
		}
		spans[l][1] = a.layout[i-1].Offset + a.layout[i-1].Size
	}
	return v, spans
}

// Layout lists the adapter's tensors in flat-buffer order, with PEFT's
// names ("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
// "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") and
// shapes (A (r, in), B (out, r)). The slice is a copy.
func (a *LoRA) Layout() []Param { return slices.Clone(a.layout) }

// NumParams is the number of adapter parameters (trainable parameters).
func (a *LoRA) NumParams() int { return len(a.Params) }

// Init sets PEFT's initialisation from seed: each A Kaiming-uniform as
// nn.Linear initialises its weight (kaiming_uniform_ with a = √5, which is
// U(−1/√in, 1/√in)), each B zero. The same seed gives the same bytes on
// every machine.
func (a *LoRA) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6c6f7261)) // "lora"
	for i, p := range a.layout {
		w := a.Params[p.Offset : p.Offset+p.Size]
		if i%2 == 1 { // lora_B
			clear(w)
			continue
		}
		bound := 1 / math.Sqrt(float64(p.Shape[1]))
		for j := range w {
			w[j] = float32((2*rng.Float64() - 1) * bound)
		}
	}
}

// ZeroGrad clears the adapter's gradient buffer.
func (a *LoRA) ZeroGrad() { clear(a.Grads) }

// gradRanges are the ranges of the adapter's gradient buffer that Backward
// reports, in report order: block L-1 first.
func (a *LoRA) gradRanges() [][2]int {
	rs := make([][2]int, 0, len(a.spans))
	for l := len(a.spans) - 1; l >= 0; l-- {
		rs = append(rs, a.spans[l])
	}
	return rs
}

// projectionWeights returns, block by block, the weight (out, in) of each
// projection of a model of config c inside its flat parameters flat (nil
// for the other architecture's projections).
func projectionWeights(c Config, flat []float32) [][numProjections][]float32 {
	ws := make([][numProjections][]float32, c.Layers)
	if c.llamaFamily() {
		for l, b := range makeLlamaViews(c, flat).blocks {
			ws[l] = b.projectionWeights(c)
		}
		return ws
	}
	for l, b := range makeViews(c, flat).blocks {
		ws[l][projQKV], ws[l][projAttnOut], ws[l][projFC], ws[l][projMLPOut] = b.qkvw, b.attprojw, b.fcw, b.fcprojw
	}
	return ws
}

// MergeLoRA returns a copy of params, the flat parameters of a model of
// config c, with the adapter merged in: W += (alpha/r)·B·A for every adapted
// projection. The result is a plain model (the merged model) that computes
// what the base with the adapter attached computes (without dropout), to
// float32 rounding. params is not modified.
func MergeLoRA(c Config, params []float32, a *LoRA) ([]float32, error) {
	if a.Base != c {
		return nil, fmt.Errorf("model: MergeLoRA: the adapter is for %+v, the model is %+v", a.Base, c)
	}
	if len(params) != c.NumParams() {
		return nil, fmt.Errorf("model: MergeLoRA: %d parameters, config needs %d", len(params), c.NumParams())
	}
	out := slices.Clone(params)
	mergeLoRAInto(c, out, a)
	return out, nil
}

// mergeLoRAInto is MergeLoRA in place, on checked arguments.
func mergeLoRAInto(c Config, out []float32, a *LoRA) {
	ws := projectionWeights(c, out)
	r := a.Config.Rank
	var sb []float32
	for l := range c.Layers {
		w := ws[l]
		for p := range numProjections {
			if !a.targets[p] {
				continue
			}
			in, o := p.shape(c)
			pair := a.p[l][p]
			sb = append(sb[:0], pair.b...) // s·B (out, r)
			for i := range sb {
				sb[i] *= a.scale
			}
			kernels.Gemm(false, false, o, in, r, sb, r, pair.a, in, w[p], in, true) // W (out, in) += s·B·A
		}
	}
}

// ---- Dropout ----
//
// LoRA's dropout (PEFT applies nn.Dropout to the adapter's input) must give
// the same mask on every data-parallel worker and in a resumed run, so it is
// counter-based instead of drawn from a generator. Element e = t·in + c
// (position t, channel c) of sequence b's input to projection p of block l
// is dropped iff
//
//	lane(e) < q,   lane(e) = bits 16·(e mod 4) .. +16 of mix64(rowKey + (⌊e/4⌋+1)·φ)
//	rowKey = dropoutRowKey(stream_b, l, p),   q = round(p_drop · 2¹⁶)
//
// where stream_b is the caller's stream id of that sequence (see
// Model.SetDropoutStreams and DropoutStream): one 64-bit hash gives four
// 16-bit lanes, so the rate is p_drop rounded to a multiple of 2⁻¹⁶. Kept
// elements are scaled by 1/(1 − q/2¹⁶), which keeps the expectation
// unchanged, as nn.Dropout's 1/(1 − p) does. No state is carried between
// calls.

// mix64 is SplitMix64's finaliser: a bijection of uint64 whose outputs look
// independent for consecutive inputs.
func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

const golden = 0x9e3779b97f4a7c15 // 2⁶⁴/φ, SplitMix64's increment

// DropoutStream returns the dropout stream id of one sequence of a training
// run: seed is the run's seed, step the optimizer step and seq an id of the
// sequence that is unique within the step (its index in the batch, or its
// id in the dataset). The same three give the same id, and so the same
// dropout masks, on every machine.
func DropoutStream(seed, step, seq uint64) uint64 {
	return mix64(mix64(mix64(seed+golden)+step*golden) + seq*golden)
}

// dropoutRowKey is the key of one row's mask for projection p of block l:
// projections are numbered block by block, in buffer order, within their
// architecture.
func dropoutRowKey(stream uint64, l int, p projection) uint64 {
	per, i := numGPT2Projections, int(p)
	if p.llama() {
		per, i = numLlamaProjections, int(p-projQ)
	}
	return mix64(stream ^ mix64(uint64(l*per+i+1)*golden))
}

// dropoutTask writes dst = mask ⊙ src / (1 − q/2¹⁶) for a (B, T, in)
// input, the mask of sequence b keyed by keys[b] (see above). It runs over
// the B·T positions.
type dropoutTask struct {
	dst, src []float32
	keys     []uint64
	T, in    int
	thresh   uint16 // q: drop when the element's lane < q
	scale    float32
}

func (t *dropoutTask) Run(lo, hi int) {
	keep := [2]float32{0, t.scale} // indexed by whether an element is kept
	for i := lo; i < hi; i++ {
		key := t.keys[i/t.T]
		e := uint64((i % t.T) * t.in) // element index of channel 0
		src, dst := t.src[i*t.in:(i+1)*t.in], t.dst[i*t.in:(i+1)*t.in]
		c := 0
		// Up to the first multiple of 4, then four elements per hash.
		for ; c < len(src) && e&3 != 0; c, e = c+1, e+1 {
			dst[c] = src[c] * keep[lane(mix64(key+(e>>2+1)*golden), e&3, t.thresh)]
		}
		for ; c+4 <= len(src); c, e = c+4, e+4 {
			h := mix64(key + (e>>2+1)*golden)
			s, d := src[c:c+4:c+4], dst[c:c+4:c+4]
			d[0] = s[0] * keep[lane(h, 0, t.thresh)]
			d[1] = s[1] * keep[lane(h, 1, t.thresh)]
			d[2] = s[2] * keep[lane(h, 2, t.thresh)]
			d[3] = s[3] * keep[lane(h, 3, t.thresh)]
		}
		for ; c < len(src); c, e = c+1, e+1 {
			dst[c] = src[c] * keep[lane(mix64(key+(e>>2+1)*golden), e&3, t.thresh)]
		}
	}
}

// lane is 1 if 16-bit lane k of h is at least q (the element is kept),
// else 0.
func lane(h, k uint64, q uint16) int {
	if uint16(h>>(16*k)) >= q {
		return 1
	}
	return 0
}

// dropoutLanes returns q = round(p·2¹⁶) and the scale 1/(1 − q/2¹⁶) of
// dropout rate p in [0, 1).
func dropoutLanes(p float64) (q uint16, scale float32) {
	k := math.Round(p * (1 << 16))
	k = min(k, 1<<16-1) // p < 1: keep at least one lane value
	return uint16(k), float32((1 << 16) / ((1 << 16) - k))
}

// MergeAdapterFiles writes to outDir the base checkpoint in baseDir with
// the adapter in adapterDir (PEFT layout) merged into its weights: a plain
// model, as `braid job export --merged` gives it, in the base's dtype and
// shard layout (Checkpoint.Format). Both inputs are checked
// as LoadCheckpoint and LoadAdapter check them.
func MergeAdapterFiles(baseDir, adapterDir, outDir string) error {
	ck, err := LoadCheckpoint(baseDir)
	if err != nil {
		return err
	}
	a, err := LoadAdapter(adapterDir, ck.Config)
	if err != nil {
		return err
	}
	params, err := MergeLoRA(ck.Config, ck.Params, a)
	if err != nil {
		return err
	}
	return SaveCheckpointAs(outDir, ck.Config, ck.Tokenizer, params, ck.Format) // the base's dtype and shards
}
