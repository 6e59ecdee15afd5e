package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/braidml/braid/kernels"
)

// Model is a GPT-2-style model with its parameters, gradients and
// activations. See the package comment for the layout.
type Model struct {
	Config Config
	// Params is the flat parameter buffer, in Config.Layout order.
	Params []float32
	// Grads is the flat gradient buffer, same layout. Backward adds into it;
	// ZeroGrad clears it.
	Grads []float32

	// GradReady, when set, is called during Backward each time a contiguous
	// range Grads[lo:hi] is final for this Backward call, last layer first:
	// ln_f right after its backward, then each block h.L-1 .. h.0 after its
	// backward, then [0, end of wpe) (wte and wpe, which are final only at
	// the very end, since the tied wte also gets the output layer's
	// gradient first). The ranges are GradRanges, in that order: disjoint,
	// and together all of Grads. A Backward with no counted target adds
	// nothing and reports every range at once.
	//
	// With a LoRA adapter attached (AttachLoRA) the trainable gradient is
	// the adapter's, so the ranges are ranges of the adapter's gradient
	// buffer (LoRA.Grads), not of Grads: one per block, h.L-1 .. h.0, each
	// reported right after that block's backward (see GradRanges).
	//
	// It lets a data-parallel worker start reducing a range while backward
	// computes the layers below it. It is called on the goroutine that runs
	// Backward, between kernels: a callback may hand Grads[lo:hi] to another
	// goroutine, which may read and write that range while Backward goes on
	// (Backward touches it no more), but must not touch the rest of Grads
	// until Backward returns. It must not call the Model.
	GradReady func(lo, hi int)

	p, g views // named views into Params and Grads
	// gradRanges are the ranges GradReady reports, in the order it reports
	// them (see GradRanges): of Grads, or of the adapter's Grads when one
	// is attached.
	gradRanges [][2]int

	llama *llamaState // the Llama family's views, activations and scratch; nil for GPT-2

	lora      *LoRA    // the attached adapter, or nil
	la        loraActs // its activations and scratch
	streams   []uint64 // (maxB) dropout stream per sequence (SetDropoutStreams)
	dropoutOn bool     // SetDropoutStreams(non-nil) was the last call
	fwdDrop   bool     // the last Forward applied dropout, with fwdStreams
	fwdStream []uint64 // (maxB) the streams the last Forward used

	maxB, maxT int         // the activation buffers fit B·T ≤ maxB·maxT, T ≤ maxT
	act        activations // forward activations of the last Forward call
	bw         backwardScratch

	// state of the last Forward call, consumed by Backward
	tokens, targets []int32
	B, T            int
	counted         int // positions with a target ≥ 0
}

// activations holds everything the forward pass saves for the backward pass.
// Shapes are for the allocated maxB·maxT positions (BT below). The Llama
// family uses logits, probs and losses, and keeps the rest in llamaActs.
type activations struct {
	encoded []float32 // (BT, C)
	blocks  []blockActs
	lnf     []float32 // (BT, C)
	lnfMean []float32 // (BT)
	lnfRstd []float32 // (BT)
	logits  []float32 // (BT, V)
	probs   []float32 // (BT, V)
	losses  []float32 // (BT)
}

type blockActs struct {
	ln1, ln1Mean, ln1Rstd []float32 // (BT, C), (BT), (BT)
	qkv                   []float32 // (BT, 3C)
	atty                  []float32 // (BT, C) attention output before c_proj
	att                   []float32 // (B, NH, T, T) attention probabilities
	attproj               []float32 // (BT, C)
	res2                  []float32 // (BT, C) x + attention branch
	ln2, ln2Mean, ln2Rstd []float32 // (BT, C), (BT), (BT)
	fch                   []float32 // (BT, 4C) c_fc output, pre-GELU
	fchGelu               []float32 // (BT, 4C)
	fcproj                []float32 // (BT, C)
	res3                  []float32 // (BT, C) block output
}

// loraActs are what the attached adapter's forward pass saves for the
// backward pass, and the adapter's backward scratch (AttachLoRA allocates
// them for maxB·maxT positions, BT below).
type loraActs struct {
	blocks [][numProjections]loraProjActs
	g      []float32 // (BT, r) s·∂L/∂(x·Aᵀ): the gradient that reaches A, backward scratch
	t      []float32 // (BT, widest input of a projection) the adapter's share of ∂L/∂x before dropout's mask, backward scratch
	dlnw   []float32 // (C) LayerNorm weight gradients of the frozen base: computed, never read
	dlnb   []float32 // (C) LayerNorm bias gradients of the frozen base: computed, never read
	keys   []uint64  // (maxB) dropout row keys of one projection
	task   dropoutTask
}

// loraProjActs are one adapted projection's saved activations.
type loraProjActs struct {
	u  []float32 // (BT, r) s·dropout(x)·Aᵀ
	xd []float32 // (BT, in) dropout(x); nil when the adapter has no dropout
}

// backwardScratch holds activation gradients; every block reuses them. The
// Llama family uses dres, dln and dlogits, and keeps the rest in
// llamaScratch.
type backwardScratch struct {
	dres    []float32 // (BT, C) gradient of the residual stream, flows down the blocks
	dln     []float32 // (BT, C)
	datty   []float32 // (BT, C)
	dqkv    []float32 // (BT, 3C)
	dfch    []float32 // (BT, 4C)
	dfchG   []float32 // (BT, 4C)
	datt    []float32 // (B, NH, T, T)
	dlogits []float32 // (BT, V)
}

// MemoryLimit bounds the bytes New may allocate for one model (parameters,
// gradients, activations). A config read from an untrusted file can describe
// an enormous model; New refuses it with an error instead of running the
// process out of memory. Raise it for larger machines.
var MemoryLimit int64 = 32 << 30

// MemoryBytes estimates the bytes New (or NewInference, when inference is
// true) allocates for config c and a batch of maxB × maxT, in int64 so that
// absurd configs cannot overflow it.
func MemoryBytes(c Config, maxB, maxT int, inference bool) int64 {
	if c.llamaFamily() {
		return llamaMemoryBytes(c, maxB, maxT, inference)
	}
	BT, C, V, NH := int64(maxB)*int64(maxT), int64(c.Dim), int64(c.Vocab), int64(c.Heads)
	att := int64(maxB) * NH * int64(maxT) * int64(maxT)
	perLayer := BT*C*7 + BT*3*C + BT*8*C + 4*BT + att
	floats := int64(c.NumParams()) + int64(c.Layers)*perLayer + BT*C*2 + BT*V*2 + 3*BT
	if !inference {
		floats += int64(c.NumParams()) + BT*C*3 + BT*3*C + BT*8*C + att + BT*V
	}
	return 4 * floats
}

// New allocates a model with config c whose activations fit batches of up
// to maxB sequences of up to maxT ≤ c.Context tokens, for training (with a
// gradient buffer and backward scratch). Parameters are zero; call Init or
// load a checkpoint. It fails if the model would need more than MemoryLimit.
func New(c Config, maxB, maxT int) (*Model, error) { return newModel(c, maxB, maxT, false, nil) }

// NewInference is New without gradients or backward buffers (about half the
// memory): Forward works, Backward returns an error. For eval and generate.
func NewInference(c Config, maxB, maxT int) (*Model, error) {
	return newModel(c, maxB, maxT, true, nil)
}

// newModel is New or NewInference, or with held (a Llama family config's)
// NewFrozenBF16From: the base in held, no Params or Grads.
func newModel(c Config, maxB, maxT int, inference bool, held *HeldBase) (*Model, error) {
	held16 := held != nil
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if maxB < 1 || maxT < 1 || maxT > c.Context {
		return nil, fmt.Errorf("%w: batch %d×%d does not fit (want ≥ 1 sequences of 1..%d tokens)", ErrConfig, maxB, maxT, c.Context)
	}
	need := MemoryBytes(c, maxB, maxT, inference)
	if held16 { // no float32 Params or Grads: the base in bf16, and a scratch for its largest matrix
		C, H, W := int64(c.Dim), int64(c.Hidden), int64(c.Heads+2*c.KVHeads)*int64(c.HeadDim)
		need -= 6*int64(c.NumParams()) - 4*max(W*C, 2*H*C)
	}
	if need > MemoryLimit {
		return nil, fmt.Errorf("%w: a %d-layer, %d-channel model with batch %d×%d needs %.1f GiB, more than the %.1f GiB limit (use a smaller batch or sequence length)",
			ErrConfig, c.Layers, c.Dim, maxB, maxT, float64(need)/(1<<30), float64(MemoryLimit)/(1<<30))
	}
	n := c.NumParams()
	m := &Model{Config: c, maxB: maxB, maxT: maxT, streams: make([]uint64, maxB), fwdStream: make([]uint64, maxB)}
	if !held16 {
		m.Params = make([]float32, n)
	}
	if c.llamaFamily() {
		m.newLlama(inference, held)
		return m, nil
	}
	m.p = makeViews(c, m.Params)
	m.gradRanges = gradRanges(c, m.p)
	BT, C, V, NH := maxB*maxT, c.Dim, c.Vocab, c.Heads
	f := func(k int) []float32 { return make([]float32, k) }
	a := &m.act
	a.encoded = f(BT * C)
	for l := 0; l < c.Layers; l++ {
		a.blocks = append(a.blocks, blockActs{
			ln1: f(BT * C), ln1Mean: f(BT), ln1Rstd: f(BT), qkv: f(BT * 3 * C), atty: f(BT * C),
			att: f(maxB * NH * maxT * maxT), attproj: f(BT * C), res2: f(BT * C),
			ln2: f(BT * C), ln2Mean: f(BT), ln2Rstd: f(BT), fch: f(BT * 4 * C), fchGelu: f(BT * 4 * C),
			fcproj: f(BT * C), res3: f(BT * C),
		})
	}
	a.lnf, a.lnfMean, a.lnfRstd = f(BT*C), f(BT), f(BT)
	a.logits, a.probs, a.losses = f(BT*V), f(BT*V), f(BT)
	if inference {
		return m, nil
	}
	m.Grads = make([]float32, n)
	m.g = makeViews(c, m.Grads)
	m.bw = backwardScratch{
		dres: f(BT * C), dln: f(BT * C), datty: f(BT * C), dqkv: f(BT * 3 * C),
		dfch: f(BT * 4 * C), dfchG: f(BT * 4 * C), datt: f(maxB * NH * maxT * maxT), dlogits: f(BT * V),
	}
	return m, nil
}

// MaxBatch returns the largest batch (sequences, tokens per sequence) the
// activation buffers hold.
func (m *Model) MaxBatch() (B, T int) { return m.maxB, m.maxT }

// Init sets GPT-2's initialisation from seed: linear weights and embeddings
// N(0, 0.02²), the residual projections (attn.c_proj, mlp.c_proj) N(0,
// (0.02/sqrt(2L))²), LayerNorm weights 1, biases 0. The Llama family's is
// Hugging Face's: every matrix N(0, 0.02²), RMSNorm weights 1, biases 0.
// The same seed gives the same bytes on every machine. A base held in bf16
// (NewFrozenBF16) gets the same draws, rounded to bf16.
func (m *Model) Init(seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6272616964)) // "braid"
	if m.BaseHeldBF16() {
		m.initBF16(rng)
		return
	}
	for _, p := range m.Config.Layout() {
		w := m.Params[p.Offset : p.Offset+p.Size]
		switch {
		case len(p.Shape) == 2:
			std := 0.02
			if hasSuffix(p.Name, "c_proj.weight") {
				std /= math.Sqrt(2 * float64(m.Config.Layers))
			}
			for i := range w {
				w[i] = float32(rng.NormFloat64() * std)
			}
		case hasSuffix(p.Name, "ln_1.weight"), hasSuffix(p.Name, "ln_2.weight"), p.Name == "ln_f.weight",
			hasSuffix(p.Name, "layernorm.weight"), p.Name == "model.norm.weight":
			for i := range w {
				w[i] = 1
			}
		default:
			clear(w)
		}
	}
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}

// gradRanges lists the ranges of the flat buffer in the order Backward
// finishes their gradients: ln_f, blocks L-1 .. 0, then wte and wpe.
func gradRanges(c Config, v views) [][2]int {
	if c.llamaFamily() {
		return llamaGradRanges(c)
	}
	ps := c.Layout()
	lnf := ps[len(ps)-2].Offset // ln_f.weight, then ln_f.bias at the end
	rs := [][2]int{{lnf, c.NumParams()}}
	for l := c.Layers - 1; l >= 0; l-- {
		rs = append(rs, v.blockSpan[l])
	}
	return append(rs, [2]int{0, ps[1].Offset + ps[1].Size}) // wte, wpe
}

// GradRanges returns the [lo, hi) ranges of the flat gradient buffer that
// GradReady reports, in the order Backward reports them (Layers+2 of them:
// ln_f, h.L-1 .. h.0, then wte and wpe; for the Llama family model.norm
// with lm_head, the blocks last first, then model.embed_tokens). With a LoRA adapter attached they
// are ranges of the adapter's gradient buffer (LoRA.Grads) instead, Layers
// of them: the adapter tensors of h.L-1, ..., of h.0; disjoint, each ending
// where the one before it starts, together all of LoRA.Grads. They depend
// only on the Config (and the adapter's), so every replica of a model gets
// the same list. The slice is a copy.
func (m *Model) GradRanges() [][2]int { return append([][2]int(nil), m.gradRanges...) }

// gradReady reports range i of gradRanges to GradReady, if set.
func (m *Model) gradReady(i int) {
	if m.GradReady != nil {
		r := m.gradRanges[i]
		m.GradReady(r[0], r[1])
	}
}

// ZeroGrad clears the gradient buffer, or, with an adapter attached, the
// adapter's (Backward then leaves Grads alone).
func (m *Model) ZeroGrad() {
	if m.lora != nil {
		m.lora.ZeroGrad()
		return
	}
	clear(m.Grads)
}

// AttachLoRA attaches adapter a to the model: from now on Forward adds the
// adapter's update to the projections it adapts, and Backward computes the
// adapter's gradients (into a.Grads) and the gradients that flow through
// the base weights, but not the base weights' own gradients: they are
// frozen, and Grads stays as it is. GradRanges and GradReady then describe
// a.Grads. It allocates the adapter's activations for the model's batch.
// It fails if a is for another model config or attached elsewhere; an
// adapter already attached here is detached first.
func (m *Model) AttachLoRA(a *LoRA) error {
	if a == nil {
		return fmt.Errorf("model: AttachLoRA(nil); use DetachLoRA")
	}
	if a.Base != m.Config {
		return fmt.Errorf("model: the adapter is for a model of %+v, this one is %+v", a.Base, m.Config)
	}
	if a.attached && a != m.lora {
		return fmt.Errorf("model: the adapter is attached to another model")
	}
	m.DetachLoRA()
	c, r := m.Config, a.Config.Rank
	BT := m.maxB * m.maxT
	la := loraActs{blocks: make([][numProjections]loraProjActs, c.Layers), keys: make([]uint64, m.maxB)}
	for l := range c.Layers {
		for p := range numProjections {
			if !a.targets[p] {
				continue
			}
			in, _ := p.shape(c)
			la.blocks[l][p].u = make([]float32, BT*r)
			if a.Config.Dropout > 0 {
				la.blocks[l][p].xd = make([]float32, BT*in)
			}
		}
	}
	if m.bw.dres != nil { // a model for training, its base trainable or frozen
		la.g, la.dlnw, la.dlnb = make([]float32, BT*r), make([]float32, c.Dim), make([]float32, c.Dim)
		if a.Config.Dropout > 0 {
			la.t = make([]float32, BT*c.widestProjectionInput())
		}
	}
	m.lora, m.la, a.attached = a, la, true
	m.gradRanges = a.gradRanges()
	m.targets = nil // a Backward needs a Forward with the adapter
	return nil
}

// DetachLoRA detaches the attached adapter, if any, and returns it: the
// model computes and trains its base weights again.
func (m *Model) DetachLoRA() *LoRA {
	a := m.lora
	if a == nil {
		return nil
	}
	a.attached = false
	m.lora, m.la = nil, loraActs{}
	m.gradRanges = gradRanges(m.Config, m.p)
	m.targets = nil
	return a
}

// DropBaseGrads releases the base model's gradient buffer, one model's
// worth of memory (498 MB at GPT-2 124M). With a LoRA adapter attached the
// base is frozen and Backward never touches that buffer, so a LoRA trainer
// calls this once the adapter is attached; afterwards Grads is nil and
// Backward works only while an adapter is attached.
func (m *Model) DropBaseGrads() error {
	if m.lora == nil {
		return fmt.Errorf("model: DropBaseGrads without a LoRA adapter attached: the base's gradients are needed")
	}
	m.Grads = nil
	m.g = views{blocks: make([]blockParams, len(m.g.blocks)), blockSpan: m.g.blockSpan}
	if m.llama != nil {
		m.llama.g = llamaViews{blocks: make([]llamaBlock, m.Config.Layers)}
	}
	return nil
}

// LoRA returns the attached adapter, or nil.
func (m *Model) LoRA() *LoRA { return m.lora }

// SetDropoutStreams turns the attached adapter's dropout on for the
// following Forward calls, sequence b of a batch drawing its mask from
// stream streams[b] (see DropoutStream), or off with nil: dropout is a
// training-time thing, so evaluation and generation run with it off, as
// PEFT's do in eval mode. The masks are a pure function of the stream ids
// (no hidden state), which is what lets data-parallel workers and a resumed
// run reproduce them exactly. streams is copied; it may hold up to the
// model's maxB ids, and Forward fails if it holds fewer than the batch's B
// sequences. Without an adapter with dropout, the streams are ignored.
func (m *Model) SetDropoutStreams(streams []uint64) error {
	if streams == nil {
		m.dropoutOn = false
		return nil
	}
	if len(streams) > m.maxB {
		return fmt.Errorf("model: %d dropout streams for a model of at most %d sequences", len(streams), m.maxB)
	}
	m.streams = m.streams[:len(streams)]
	copy(m.streams, streams)
	m.dropoutOn = true
	return nil
}

// Forward runs the model on tokens (B, T) and, when targets (B, T) is not
// nil, returns the mean cross-entropy loss over the positions whose target
// is not −1. Token and target ids must be in [0, Vocab) (targets may be −1):
// Forward returns an error otherwise, before computing anything. The logits
// stay available through Logits until the next call.
func (m *Model) Forward(tokens, targets []int32, B, T int) (float32, error) {
	c := m.Config
	if B < 1 || T < 1 || T > m.maxT || B*T > m.maxB*m.maxT {
		return 0, fmt.Errorf("model: batch %d×%d does not fit the %d×%d this model was allocated for", B, T, m.maxB, m.maxT)
	}
	if len(tokens) != B*T || (targets != nil && len(targets) != B*T) {
		return 0, fmt.Errorf("model: got %d tokens and %d targets for a %d×%d batch", len(tokens), len(targets), B, T)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= c.Vocab {
			return 0, fmt.Errorf("model: token %d at position %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
	}
	counted := 0
	for i, t := range targets {
		if t < -1 || int(t) >= c.Vocab {
			return 0, fmt.Errorf("model: target %d at position %d is outside the vocabulary [0, %d)", t, i, c.Vocab)
		}
		if t >= 0 {
			counted++
		}
	}
	m.fwdDrop = false
	if m.lora != nil && m.lora.Config.Dropout > 0 && m.dropoutOn {
		if len(m.streams) < B {
			return 0, fmt.Errorf("model: %d dropout streams set for a batch of %d sequences", len(m.streams), B)
		}
		copy(m.fwdStream[:B], m.streams[:B])
		m.fwdDrop = true
	}
	m.tokens, m.targets, m.B, m.T, m.counted = tokens, targets, B, T, counted
	if m.llama != nil {
		return m.llamaForward(targets), nil
	}

	BT, C, V, NH := B*T, c.Dim, c.Vocab, c.Heads
	a := &m.act
	kernels.EncoderForward(a.encoded, tokens, m.p.wte, m.p.wpe, B, T, C)
	x := a.encoded
	for l := range c.Layers {
		p, s := &m.p.blocks[l], &a.blocks[l]
		kernels.LayerNormForward(s.ln1, s.ln1Mean, s.ln1Rstd, x, p.ln1w, p.ln1b, BT, C)
		m.linearForward(l, projQKV, s.qkv, s.ln1, p.qkvw, p.qkvb, BT)
		kernels.AttentionForward(s.atty, s.att, s.qkv, B, T, C, NH)
		m.linearForward(l, projAttnOut, s.attproj, s.atty, p.attprojw, p.attprojb, BT)
		kernels.ResidualForward(s.res2[:BT*C], x[:BT*C], s.attproj)
		kernels.LayerNormForward(s.ln2, s.ln2Mean, s.ln2Rstd, s.res2, p.ln2w, p.ln2b, BT, C)
		m.linearForward(l, projFC, s.fch, s.ln2, p.fcw, p.fcb, BT)
		kernels.GeluForward(s.fchGelu[:BT*4*C], s.fch[:BT*4*C])
		m.linearForward(l, projMLPOut, s.fcproj, s.fchGelu, p.fcprojw, p.fcprojb, BT)
		kernels.ResidualForward(s.res3[:BT*C], s.res2[:BT*C], s.fcproj)
		x = s.res3
	}
	kernels.LayerNormForward(a.lnf, a.lnfMean, a.lnfRstd, x, m.p.lnfw, m.p.lnfb, BT, C)
	kernels.LinearForward(a.logits, a.lnf, m.p.wte, nil, BT, C, V)
	if targets == nil {
		return 0, nil
	}
	return kernels.SoftmaxCrossEntropyForward(a.losses, a.probs, a.logits, targets, BT, V), nil
}

// Logits returns the (B, T, V) logits of the last Forward call. The slice is
// overwritten by the next call.
func (m *Model) Logits() []float32 { return m.act.logits[:m.B*m.T*m.Config.Vocab] }

// Backward adds the gradient of the last Forward call's mean loss, times
// scale, into Grads. Use scale 1 for one batch; for gradient accumulation
// over micro-batches pass each micro-batch's share of the global batch's
// counted positions. It fails if the last Forward had no targets. While it
// runs, it reports each range of Grads it has finished to GradReady.
//
// With a LoRA adapter attached, the base weights are frozen: Backward adds
// the gradient into the adapter's Grads instead, and skips every gradient
// that only the base weights would need (their own, and the embeddings'
// input gradient below the first block), about a third of the work.
func (m *Model) Backward(scale float32) error {
	if m.targets == nil {
		return fmt.Errorf("model: Backward needs a Forward call with targets")
	}
	if m.bw.dres == nil {
		return fmt.Errorf("model: Backward on a model made by NewInference")
	}
	if m.Grads == nil && m.lora == nil {
		return fmt.Errorf("model: Backward without the base's gradient buffer (DropBaseGrads) needs a LoRA adapter attached")
	}
	c := m.Config
	B, T := m.B, m.T
	BT, C, V, NH := B*T, c.Dim, c.Vocab, c.Heads
	a, d := &m.act, &m.bw
	if m.counted == 0 {
		for i := range m.gradRanges { // nothing to add: every range is final
			m.gradReady(i)
		}
		return nil
	}
	if m.llama != nil {
		m.llamaBackward(scale)
		return nil
	}
	frozen := m.lora != nil
	dlogits := d.dlogits[:BT*V]
	clear(dlogits)
	kernels.SoftmaxCrossEntropyBackward(dlogits, a.probs, m.targets, scale/float32(m.counted), BT, V)
	dln := d.dln[:BT*C]
	clear(dln)
	if frozen {
		kernels.Gemm(false, false, BT, C, V, dlogits, V, m.p.wte, C, dln, C, true) // dln += dlogits·wte
	} else {
		kernels.LinearBackward(dln, m.g.wte, nil, dlogits, a.lnf, m.p.wte, BT, C, V)
	}
	dres := d.dres[:BT*C]
	clear(dres)
	last := a.encoded
	if c.Layers > 0 {
		last = a.blocks[c.Layers-1].res3
	}
	lnw, lnb := m.lnGrads(m.g.lnfw, m.g.lnfb)
	kernels.LayerNormBackward(dres, lnw, lnb, dln, last, m.p.lnfw, a.lnfMean, a.lnfRstd, BT, C)
	if !frozen {
		m.gradReady(0) // ln_f
	}
	for l := c.Layers - 1; l >= 0; l-- {
		p, g, s := &m.p.blocks[l], &m.g.blocks[l], &a.blocks[l]
		x := a.encoded
		if l > 0 {
			x = a.blocks[l-1].res3
		}
		// With frozen base weights, nothing below block 0's c_attn needs
		// a gradient: the embeddings are frozen too.
		needInput := !frozen || l > 0
		// MLP branch: dres holds ∂L/∂res3, which is also ∂L/∂fcproj.
		dfchG, dfch := d.dfchG[:BT*4*C], d.dfch[:BT*4*C]
		clear(dfchG)
		m.linearBackward(l, projMLPOut, dfchG, g.fcprojw, g.fcprojb, dres, s.fchGelu, p.fcprojw, BT)
		clear(dfch)
		kernels.GeluBackward(dfch, s.fch[:BT*4*C], dfchG)
		clear(dln)
		m.linearBackward(l, projFC, dln, g.fcw, g.fcb, dfch, s.ln2, p.fcw, BT)
		// dres becomes ∂L/∂res2.
		ln2w, ln2b := m.lnGrads(g.ln2w, g.ln2b)
		kernels.LayerNormBackward(dres, ln2w, ln2b, dln, s.res2, p.ln2w, s.ln2Mean, s.ln2Rstd, BT, C)
		// Attention branch.
		datty := d.datty[:BT*C]
		clear(datty)
		m.linearBackward(l, projAttnOut, datty, g.attprojw, g.attprojb, dres, s.atty, p.attprojw, BT)
		dqkv := d.dqkv[:BT*3*C]
		clear(dqkv)
		kernels.AttentionBackward(dqkv, d.datt, datty, s.qkv, s.att, B, T, C, NH)
		var dln1 []float32 // ∂L/∂ln1, if anything below needs it
		if needInput {
			clear(dln)
			dln1 = dln
		}
		m.linearBackward(l, projQKV, dln1, g.qkvw, g.qkvb, dqkv, s.ln1, p.qkvw, BT)
		if needInput {
			// dres becomes ∂L/∂x, the block's input.
			ln1w, ln1b := m.lnGrads(g.ln1w, g.ln1b)
			kernels.LayerNormBackward(dres, ln1w, ln1b, dln, x, p.ln1w, s.ln1Mean, s.ln1Rstd, BT, C)
		}
		if frozen {
			m.gradReady(c.Layers - 1 - l) // the adapter's block l
		} else {
			m.gradReady(c.Layers - l) // block l
		}
	}
	if !frozen {
		kernels.EncoderBackward(m.g.wte, m.g.wpe, dres, m.tokens, B, T, C)
		m.gradReady(c.Layers + 1) // wte and wpe
	}
	return nil
}

// lnGrads returns where LayerNormBackward adds the gradients of a
// LayerNorm's weight and bias: their views dw, db into Grads, or, with the
// base frozen, scratch vectors nobody reads (the kernel always computes
// parameter gradients; they cost O(BT·C), next to a projection's O(BT·C²)).
func (m *Model) lnGrads(dw, db []float32) ([]float32, []float32) {
	if m.lora != nil {
		return m.la.dlnw, m.la.dlnb
	}
	return dw, db
}

// linearForward is projection p of block l: out (BT, o) = inp (BT, in)·wᵀ
// + b, plus the attached adapter's update if it adapts p:
//
//	xd  = dropout(inp)          (inp itself without dropout)
//	u   = s·xd·Aᵀ               (BT, r), saved for backward
//	out += u·Bᵀ
func (m *Model) linearForward(l int, p projection, out, inp, w, b []float32, BT int) {
	in, o := p.shape(m.Config)
	kernels.LinearForward(out, inp, w, b, BT, in, o)
	m.loraForward(l, p, out, o, inp, BT)
}

// loraForward adds the attached adapter's update of projection p of block
// l (if it adapts p) to out, whose BT rows are ldo apart and begin with p's
// outputs; inp (BT, in) is p's input.
func (m *Model) loraForward(l int, p projection, out []float32, ldo int, inp []float32, BT int) {
	lr := m.lora
	if lr == nil || !lr.targets[p] {
		return
	}
	in, o := p.shape(m.Config)
	r, ab, s := lr.Config.Rank, lr.p[l][p], &m.la.blocks[l][p]
	xd := inp[:BT*in]
	if m.fwdDrop {
		xd = s.xd[:BT*in]
		m.dropout(xd, inp[:BT*in], l, p, in)
	}
	u := s.u[:BT*r]
	kernels.Gemm(false, true, BT, r, in, xd, in, ab.a, in, u, r, false) // u = xd·Aᵀ
	kernels.Scale(u, lr.scale)
	kernels.Gemm(false, true, BT, o, r, u, r, ab.b, r, out, ldo, true) // out += u·Bᵀ
}

// dropout writes dst = dropout(src) for the input (B, T, in) of projection
// p of block l, with the masks of the last Forward's streams.
func (m *Model) dropout(dst, src []float32, l int, p projection, in int) {
	keys := m.la.keys[:m.B]
	for b := range keys {
		keys[b] = dropoutRowKey(m.fwdStream[b], l, p)
	}
	q, scale := dropoutLanes(m.lora.Config.Dropout)
	t := &m.la.task
	*t = dropoutTask{dst: dst, src: src, keys: keys, T: m.T, in: in, thresh: q, scale: scale}
	kernels.ParallelFor(m.B*m.T, max(1, 4096/in), t)
	*t = dropoutTask{}
}

// linearBackward is the backward pass of linearForward: it adds
//
//	dinp += dout·w                     (skipped when dinp is nil)
//
// and, with the base trainable, dw += doutᵀ·inp and db += Σ dout
// (kernels.LinearBackward); with an adapter attached the base is frozen and
// instead, if the adapter adapts p (u = s·xd·Aᵀ saved by the forward pass):
//
//	dB   += doutᵀ·u                    (o, r)
//	g     = s·dout·B                   (BT, r)
//	dA   += gᵀ·xd                      (r, in)
//	dinp += dropout'(g·A)              (the same mask as forward)
func (m *Model) linearBackward(l int, p projection, dinp, dw, db, dout, inp, w []float32, BT int) {
	in, o := p.shape(m.Config)
	lr := m.lora
	if lr == nil {
		if dinp == nil { // cannot happen with trainable weights; keep the kernel's contract
			panic("model: linearBackward without an input gradient")
		}
		kernels.LinearBackward(dinp, dw, db, dout, inp, w, BT, in, o)
		return
	}
	if dinp != nil {
		kernels.Gemm(false, false, BT, in, o, dout, o, w, in, dinp, in, true) // dinp += dout·w
	}
	m.loraBackward(l, p, dinp, dout, o, inp, BT)
}

// loraBackward is the backward pass of loraForward, with the attached
// adapter's tensors trainable (see linearBackward): dout holds ∂L/∂out, BT
// rows ldd apart that begin with p's outputs. It adds into the adapter's
// gradients and, unless dinp is nil, into dinp (BT, in).
func (m *Model) loraBackward(l int, p projection, dinp, dout []float32, ldd int, inp []float32, BT int) {
	lr := m.lora
	if !lr.targets[p] {
		return
	}
	in, o := p.shape(m.Config)
	r, ab, gab, s := lr.Config.Rank, lr.p[l][p], lr.g[l][p], &m.la.blocks[l][p]
	xd := inp[:BT*in]
	if m.fwdDrop {
		xd = s.xd[:BT*in]
	}
	kernels.Gemm(true, false, o, r, BT, dout, ldd, s.u[:BT*r], r, gab.b, r, true) // dB += doutᵀ·u
	g := m.la.g[:BT*r]
	kernels.Gemm(false, false, BT, r, o, dout, ldd, ab.b, r, g, r, false) // g = dout·B
	kernels.Scale(g, lr.scale)
	kernels.Gemm(true, false, r, in, BT, g, r, xd, in, gab.a, in, true) // dA += gᵀ·xd
	if dinp == nil {
		return
	}
	if !m.fwdDrop {
		kernels.Gemm(false, false, BT, in, r, g, r, ab.a, in, dinp, in, true) // dinp += g·A
		return
	}
	t := m.la.t[:BT*in]
	kernels.Gemm(false, false, BT, in, r, g, r, ab.a, in, t, in, false) // t = g·A
	m.dropout(t, t, l, p, in)                                           // the mask and 1/(1−p) of forward
	kernels.AddInto(dinp, t)
}
