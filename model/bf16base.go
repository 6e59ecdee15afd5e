package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model/safetensors"
)

// This file holds the frozen base of a LoRA run of the Llama family in
// bfloat16: half the memory of float32, which is what makes a 1B base fit
// a laptop (a Llama-3.2-1B's 1.24 G weights are 4.9 GB in float32, 2.5 GB
// in bf16). Every matrix of the base (the embedding, the q/k/v/o and
// gate/up/down projections, an untied lm_head) is held as bf16 bits in
// one flat buffer in Layout order; the vectors (RMSNorm weights, Qwen2's
// biases) stay float32, in a small buffer of their own. Each use of a
// matrix widens it, exactly, into a float32 scratch that every use shares
// (the head, the largest, in chunks of rows), and the kernels compute in
// float32 as before. So a bf16-held model computes exactly what a float32
// model computes whose matrices were rounded to bf16 (up to the order of
// the head's sums); for a base stored in bf16 that is the base itself.
//
// Widening a matrix costs one pass over it per use, against a matrix
// multiply that reads it once per 8-row panel of the batch's positions: a
// few percent at a batch of hundreds of positions (the package's
// benchmarks measure it).
//
// Only a frozen base can be held so: its weights get no gradient and no
// optimizer step, so Params and Grads are nil. BaseWeights widens the base
// back into float32 for merging and exporting.

// ErrBF16Base is wrapped by the errors of holding a base in bf16.
var ErrBF16Base = fmt.Errorf("model: cannot hold the base in bf16")

// NewFrozenBF16 allocates a model of the Llama family whose base is frozen
// and held in bf16 (see HoldBaseBF16), for training a LoRA adapter
// (AttachLoRA; Backward needs one attached) or for inference: like New,
// with activations for batches of up to maxB × maxT, but without Params or
// Grads, so the float32 base never exists. Its weights are zero; set them
// with SetBaseWeights or Init.
func NewFrozenBF16(c Config, maxB, maxT int) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.llamaFamily() {
		return nil, fmt.Errorf("%w: %s is not of the Llama family (llama, mistral, qwen2)", ErrBF16Base, c.Arch)
	}
	return newModel(c, maxB, maxT, false, newHeldBase(c))
}

// NewFrozenBF16From is NewFrozenBF16 around a base already held in bf16
// (LoadCheckpointHeld), which the model takes over without a copy.
func NewFrozenBF16From(b *HeldBase, maxB, maxT int) (*Model, error) {
	if b == nil || b.flat16 == nil {
		return nil, fmt.Errorf("%w: NewFrozenBF16From without a base (or with one another model took)", ErrBF16Base)
	}
	if !b.Config.llamaFamily() {
		return nil, fmt.Errorf("%w: %s is not of the Llama family (llama, mistral, qwen2)", ErrBF16Base, b.Config.Arch)
	}
	m, err := newModel(b.Config, maxB, maxT, false, b)
	if err == nil {
		b.flat16, b.small = nil, nil // the model's now
	}
	return m, err
}

// HeldBase is a Llama-family base's weights held in bf16 outside a model:
// what LoadCheckpointHeld reads for NewFrozenBF16From, the matrices as
// bf16 bits and the vectors in float32.
type HeldBase struct {
	Config   Config
	flat16   []uint16  // every weight in Layout order; the vectors' entries are unused
	small    []float32 // the vectors, in Layout order without the matrices
	smallOff []int     // for each Layout entry that is a vector, its offset in small
}

// newHeldBase allocates a zero base of config c.
func newHeldBase(c Config) *HeldBase {
	b := &HeldBase{Config: c, flat16: make([]uint16, c.NumParams())}
	ps := c.Layout()
	b.smallOff = make([]int, len(ps))
	n := 0
	for i, p := range ps {
		if len(p.Shape) != 2 {
			b.smallOff[i] = n
			n += p.Size
		}
	}
	b.small = make([]float32, n)
	return b
}

// setTensor reads Layout entry i, p, from t: a matrix's bf16 bits as they
// are, any other dtype rounded to bf16 through *scratch (grown as needed);
// a vector in float32.
func (b *HeldBase) setTensor(i int, p Param, t *safetensors.Tensor, scratch *[]float32) error {
	if len(p.Shape) != 2 {
		return t.CopyFloat32s(b.small[b.smallOff[i] : b.smallOff[i]+p.Size])
	}
	dst := b.flat16[p.Offset : p.Offset+p.Size]
	if t.Dtype == safetensors.BF16 {
		return t.CopyBF16Bits(dst)
	}
	if len(*scratch) < p.Size {
		*scratch = make([]float32, p.Size)
	}
	if err := t.CopyFloat32s((*scratch)[:p.Size]); err != nil {
		return err
	}
	safetensors.BF16FromFloat32s(dst, (*scratch)[:p.Size])
	return nil
}

// embedding returns element i of the token embedding, widened.
func (b *HeldBase) embedding(i int) float32 { return safetensors.BF16ToFloat32(b.flat16[i]) }

// BaseHeldBF16 reports whether the model holds its base in bf16
// (NewFrozenBF16, HoldBaseBF16).
func (m *Model) BaseHeldBF16() bool { return m.llama != nil && m.llama.p16.blocks != nil }

// HoldBaseBF16 rounds the base's matrices to bf16 (to nearest, ties to
// even) and from now on holds them so, releasing the float32 parameter
// buffer: Params becomes nil. The model must be of the Llama family and
// its base frozen: a LoRA adapter attached and the base's gradients
// dropped (DropBaseGrads). A base whose matrices are all bf16 values
// already (BaseIsBF16) computes exactly as before.
func (m *Model) HoldBaseBF16() error {
	switch {
	case m.BaseHeldBF16():
		return nil
	case m.llama == nil:
		return fmt.Errorf("%w: a %s model; only the Llama family's can be", ErrBF16Base, m.Config.Arch)
	case m.lora == nil || m.Grads != nil:
		return fmt.Errorf("%w: the base is not frozen (attach a LoRA adapter and call DropBaseGrads first)", ErrBF16Base)
	}
	params := m.Params
	m.holdBF16(newHeldBase(m.Config))
	m.SetBaseWeights(params)
	m.Params = nil
	return nil
}

// BaseIsBF16 reports whether every matrix of the base is a bf16 value, as
// a checkpoint stored in bf16 loads: holding such a base in bf16 changes
// nothing it computes. True for a base already held in bf16.
func (m *Model) BaseIsBF16() bool {
	if m.BaseHeldBF16() {
		return true
	}
	for _, p := range m.Config.Layout() {
		if len(p.Shape) != 2 {
			continue
		}
		for _, v := range m.Params[p.Offset : p.Offset+p.Size] {
			if math.Float32bits(v)&0xffff != 0 {
				return false
			}
		}
	}
	return true
}

// SetBaseWeights sets the base's weights from params (Layout order, as
// Checkpoint.Params): copies them into Params, or, with the base held in
// bf16, rounds the matrices to bf16. It panics if params has the wrong
// length.
func (m *Model) SetBaseWeights(params []float32) {
	n := m.Config.NumParams()
	if len(params) != n {
		panic(fmt.Sprintf("model: SetBaseWeights: %d weights for a model of %d", len(params), n))
	}
	if !m.BaseHeldBF16() {
		copy(m.Params, params)
		return
	}
	s := m.llama
	for i, p := range m.Config.Layout() {
		src := params[p.Offset : p.Offset+p.Size]
		if len(p.Shape) == 2 {
			safetensors.BF16FromFloat32s(s.flat16[p.Offset:p.Offset+p.Size], src)
		} else {
			copy(s.small[s.smallOff[i]:], src)
		}
	}
}

// BaseWeights returns the base's weights in Layout order: Params itself,
// or, with the base held in bf16, a new float32 copy (widened exactly), for
// merging an adapter into it or exporting it.
func (m *Model) BaseWeights() []float32 {
	if !m.BaseHeldBF16() {
		return m.Params
	}
	s := m.llama
	out := make([]float32, m.Config.NumParams())
	for i, p := range m.Config.Layout() {
		dst := out[p.Offset : p.Offset+p.Size]
		if len(p.Shape) == 2 {
			safetensors.BF16ToFloat32s(dst, s.flat16[p.Offset:p.Offset+p.Size])
		} else {
			copy(dst, s.small[s.smallOff[i]:])
		}
	}
	return out
}

// MergedWeights is MergeLoRA of the base's weights (BaseWeights) and
// adapter a: with the base held in bf16, merged into BaseWeights' copy, so
// that the float32 model exists once.
func (m *Model) MergedWeights(a *LoRA) ([]float32, error) {
	if !m.BaseHeldBF16() {
		return MergeLoRA(m.Config, m.Params, a)
	}
	if a.Base != m.Config {
		return nil, fmt.Errorf("model: MergedWeights: the adapter is for %+v, the model is %+v", a.Base, m.Config)
	}
	out := m.BaseWeights()
	mergeLoRAInto(m.Config, out, a)
	return out, nil
}

// bf16Held is what llamaState keeps for a base held in bf16.
type bf16Held struct {
	HeldBase                      // the weights; llamaState.p's vectors point into small
	p16      llamaViewsOf[uint16] // the matrices' views into flat16 (vectors nil); blocks nil when not held
	wbuf     []float32            // the widened matrix (or chunk of the head) in use
	widen    widenTask            // widens into wbuf in parallel
}

// holdBF16 makes a Llama-family model hold its base in b and points the
// parameter views at it: matrices in flat16, vectors in small.
func (m *Model) holdBF16(b *HeldBase) {
	c, s := m.Config, m.llama
	ps := c.llamaLayout()
	s.HeldBase = *b
	s.p16 = llamaViewsFrom(c, func(i, j int) []uint16 {
		if len(ps[i].Shape) != 2 {
			return nil
		}
		lo, hi := ps[i].Offset, ps[j].Offset+ps[j].Size
		return s.flat16[lo:hi:hi]
	})
	s.p = llamaViewsFrom(c, func(i, j int) []float32 {
		if len(ps[i].Shape) == 2 {
			return nil
		}
		lo, hi := s.smallOff[i], s.smallOff[j]+ps[j].Size
		return s.small[lo:hi:hi]
	})
	C, H, Q, W := c.Dim, c.Hidden, c.Heads*c.HeadDim, (c.Heads+2*c.KVHeads)*c.HeadDim
	s.wbuf = make([]float32, max(W*C, C*Q, 2*H*C, C*H))
}

// widenTask widens src into dst, rows of a matrix split among the kernels'
// threads.
type widenTask struct {
	dst []float32
	src []uint16
}

func (t *widenTask) Run(lo, hi int) { safetensors.BF16ToFloat32s(t.dst[lo:hi], t.src[lo:hi]) }

// weight returns matrix w of the base in float32: w itself, or, with the
// base held in bf16, h widened into the shared scratch, valid until the
// next call.
func (s *llamaState) weight(w []float32, h []uint16) []float32 {
	if s.p16.blocks == nil {
		return w
	}
	out := s.wbuf[:len(h)]
	s.widen.dst, s.widen.src = out, h
	kernels.ParallelFor(len(h), 1<<16, &s.widen)
	s.widen.dst, s.widen.src = nil, nil
	return out
}

// block16 returns block l's bf16 views, zero when the base is float32.
func (s *llamaState) block16(l int) llamaBlockOf[uint16] {
	if s.p16.blocks == nil {
		return llamaBlockOf[uint16]{}
	}
	return s.p16.blocks[l]
}

// embedForward writes the embedding of the batch's tokens into out (BT, C).
func (m *Model) embedForward(out []float32, BT int) {
	s, C := m.llama, m.Config.Dim
	if s.p16.blocks == nil {
		kernels.EmbeddingForward(out, m.tokens, s.p.embed, BT, C)
		return
	}
	for i, t := range m.tokens[:BT] {
		row := int(t) * C
		safetensors.BF16ToFloat32s(out[i*C:(i+1)*C], s.p16.embed[row:row+C])
	}
}

// headForward computes logits (BT, V) = xnf (BT, C) · headᵀ; with the head
// held in bf16, a chunk of its rows at a time, each chunk's logits being
// columns of the result.
func (m *Model) headForward(logits, xnf []float32, BT int) {
	s, C, V := m.llama, m.Config.Dim, m.Config.Vocab
	if s.p16.blocks == nil {
		kernels.LinearForward(logits, xnf, s.p.head, nil, BT, C, V)
		return
	}
	step := len(s.wbuf) / C
	for v0 := 0; v0 < V; v0 += step {
		n := min(step, V-v0)
		w := s.weight(nil, s.p16.head[v0*C:(v0+n)*C])
		kernels.Gemm(false, true, BT, n, C, xnf, C, w, C, logits[v0:], V, false)
	}
}

// headBackwardInput adds dlogits (BT, V) · head into dln (BT, C), the
// gradient that flows through a frozen head, in chunks of rows as
// headForward.
func (m *Model) headBackwardInput(dln, dlogits []float32, BT int) {
	s, C, V := m.llama, m.Config.Dim, m.Config.Vocab
	if s.p16.blocks == nil {
		kernels.Gemm(false, false, BT, C, V, dlogits, V, s.p.head, C, dln, C, true) // dln += dlogits·head
		return
	}
	step := len(s.wbuf) / C
	for v0 := 0; v0 < V; v0 += step {
		n := min(step, V-v0)
		w := s.weight(nil, s.p16.head[v0*C:(v0+n)*C])
		kernels.Gemm(false, false, BT, C, n, dlogits[v0:], V, w, C, dln, C, true)
	}
}

// initBF16 is Init for a base held in bf16: the same draws as Init's
// float32 ones, rounded.
func (m *Model) initBF16(rng *rand.Rand) {
	s := m.llama
	for i, p := range m.Config.Layout() {
		if len(p.Shape) == 2 {
			w := s.flat16[p.Offset : p.Offset+p.Size]
			for j := range w {
				w[j] = safetensors.BF16FromFloat32(float32(rng.NormFloat64() * 0.02))
			}
			continue
		}
		w := s.small[s.smallOff[i] : s.smallOff[i]+p.Size]
		if hasSuffix(p.Name, "layernorm.weight") || p.Name == "model.norm.weight" {
			for j := range w {
				w[j] = 1
			}
		} else {
			clear(w)
		}
	}
}

// VisitBaseWeights calls fn with the base's weights in Layout order, in
// float32, a piece at a time: Params whole, or, with the base held in
// bf16, widened into a buffer of 64 Ki values that fn must not keep. It
// lets a caller hash or write the base without a float32 copy of it.
func (m *Model) VisitBaseWeights(fn func(piece []float32)) {
	if !m.BaseHeldBF16() {
		fn(m.Params)
		return
	}
	s := m.llama
	buf := make([]float32, 1<<16)
	for i, p := range m.Config.Layout() {
		if len(p.Shape) != 2 {
			fn(s.small[s.smallOff[i] : s.smallOff[i]+p.Size])
			continue
		}
		for lo := p.Offset; lo < p.Offset+p.Size; lo += len(buf) {
			hi := min(lo+len(buf), p.Offset+p.Size)
			safetensors.BF16ToFloat32s(buf[:hi-lo], s.flat16[lo:hi])
			fn(buf[:hi-lo])
		}
	}
}
