package model

import (
	"fmt"
	"math"

	"github.com/braidml/braid/kernels"
)

// This file is the Llama family's computation (llama_config.go says which
// models that is), as Hugging Face's LlamaForCausalLM computes it. With x
// the residual stream (BT, C), one block is
//
//	xn1  = RMSNorm(x)·input_layernorm
//	qkv  = xn1·[Wq; Wk; Wv]ᵀ (+ [bq; bk; bv] for Qwen2)   one matrix multiply: the three weights are stacked in Params
//	q, k ← RoPE(q), RoPE(k)                                 positions 0..T−1 of every sequence
//	y    = attention(q, k, v)                               grouped-query, causal (Mistral: within the window)
//	res2 = x + y·Woᵀ
//	xn2  = RMSNorm(res2)·post_attention_layernorm
//	gu   = xn2·[Wgate; Wup]ᵀ                                one matrix multiply, stacked likewise
//	res3 = res2 + (silu(gate)·up)·Wdownᵀ
//
// then logits = RMSNorm(x)·model.norm · headᵀ, the head being lm_head or,
// tied, the token embedding. The Model's Forward and Backward check their
// arguments and call llamaForward and llamaBackward; LoRA, GradReady,
// dropout and the frozen-base shortcuts work as for GPT-2 (model.go).

// llamaLayout lists the Llama family's parameters in flat-buffer order:
// model.embed_tokens, each block's tensors, model.norm, then lm_head if
// untied. Within a block, q_proj, k_proj and v_proj are adjacent (as are
// their biases, and gate_proj and up_proj) so that each group is one
// stacked matrix. Hugging Face's Linear weights are (out, in), as braid
// stores them: none is transposed in a checkpoint.
func (c Config) llamaLayout() []Param {
	var ps []Param
	off := 0
	add := func(name string, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		ps = append(ps, Param{Name: name, Shape: shape, Offset: off, Size: n, Decay: len(shape) == 2})
		off += n
	}
	C, H, Q, K := c.Dim, c.Hidden, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	add("model.embed_tokens.weight", c.Vocab, C)
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", C)
		add(p+"self_attn.q_proj.weight", Q, C)
		add(p+"self_attn.k_proj.weight", K, C)
		add(p+"self_attn.v_proj.weight", K, C)
		if c.QKVBias() {
			add(p+"self_attn.q_proj.bias", Q)
			add(p+"self_attn.k_proj.bias", K)
			add(p+"self_attn.v_proj.bias", K)
		}
		add(p+"self_attn.o_proj.weight", C, Q)
		add(p+"post_attention_layernorm.weight", C)
		add(p+"mlp.gate_proj.weight", H, C)
		add(p+"mlp.up_proj.weight", H, C)
		add(p+"mlp.down_proj.weight", C, H)
	}
	add("model.norm.weight", C)
	if c.Untied {
		add("lm_head.weight", c.Vocab, C)
	}
	return ps
}

// llamaBlockParams is how many tensors a block of config c has.
func (c Config) llamaBlockParams() int {
	if c.QKVBias() {
		return 12
	}
	return 9
}

// llamaBlockOf are the views of one block's tensors inside a flat buffer
// (parameters or gradients in float32, llamaBlock; or a frozen base's
// matrices held in bf16, llamaBlockOf[uint16], whose vectors are nil).
type llamaBlockOf[E float32 | uint16] struct {
	attnNorm []E // (C) input_layernorm
	qkvw     []E // (Q+2K, C) q_proj, k_proj, v_proj stacked; Q = NH·hd, K = KVH·hd
	qkvb     []E // (Q+2K) their biases, or nil
	ow       []E // (C, Q) o_proj
	mlpNorm  []E // (C) post_attention_layernorm
	guw      []E // (2H, C) gate_proj, up_proj stacked
	downw    []E // (C, H) down_proj
}

type llamaBlock = llamaBlockOf[float32]

// projectionWeights returns the block's projection weights, each (out, in),
// indexed by projection.
func (b llamaBlockOf[E]) projectionWeights(c Config) (w [numProjections][]E) {
	C, H, Q, K := c.Dim, c.Hidden, c.Heads*c.HeadDim, c.KVHeads*c.HeadDim
	w[projQ], w[projK], w[projV] = b.qkvw[:Q*C], b.qkvw[Q*C:(Q+K)*C], b.qkvw[(Q+K)*C:]
	w[projO], w[projGate], w[projUp], w[projDown] = b.ow, b.guw[:H*C], b.guw[H*C:], b.downw
	return w
}

// llamaViewsOf are named slices into one flat buffer, in llamaLayout order.
type llamaViewsOf[E float32 | uint16] struct {
	embed  []E // (V, C) model.embed_tokens
	blocks []llamaBlockOf[E]
	norm   []E // (C) model.norm
	head   []E // (V, C) lm_head, or embed when tied
}

type llamaViews = llamaViewsOf[float32]

func makeLlamaViews(c Config, flat []float32) llamaViews {
	ps := c.llamaLayout()
	return llamaViewsFrom(c, func(i, j int) []float32 { // tensors i..j, adjacent in the buffer
		lo, hi := ps[i].Offset, ps[j].Offset+ps[j].Size
		return flat[lo:hi:hi]
	})
}

// llamaViewsFrom builds the views from span, which returns the slice
// holding tensors i..j of llamaLayout (adjacent tensors of one kind).
func llamaViewsFrom[E float32 | uint16](c Config, span func(i, j int) []E) llamaViewsOf[E] {
	v := llamaViewsOf[E]{embed: span(0, 0)}
	i := 1
	for range c.Layers {
		b := llamaBlockOf[E]{attnNorm: span(i, i), qkvw: span(i+1, i+3)}
		i += 4
		if c.QKVBias() {
			b.qkvb = span(i, i+2)
			i += 3
		}
		b.ow, b.mlpNorm, b.guw, b.downw = span(i, i), span(i+1, i+1), span(i+2, i+3), span(i+4, i+4)
		i += 5
		v.blocks = append(v.blocks, b)
	}
	v.norm, v.head = span(i, i), v.embed
	if c.Untied {
		v.head = span(i+1, i+1)
	}
	return v
}

// llamaGradRanges are gradRanges for the Llama family: model.norm to the
// end (and lm_head), the blocks last layer first, then model.embed_tokens
// (final only at the very end when tied: the head's gradient goes there
// first).
func llamaGradRanges(c Config) [][2]int {
	ps := c.llamaLayout()
	per := c.llamaBlockParams()
	block := func(l int) [2]int {
		first, last := ps[1+l*per], ps[l*per+per]
		return [2]int{first.Offset, last.Offset + last.Size}
	}
	rs := [][2]int{{ps[1+c.Layers*per].Offset, c.NumParams()}}
	for l := c.Layers - 1; l >= 0; l-- {
		rs = append(rs, block(l))
	}
	return append(rs, [2]int{0, ps[0].Size})
}

// llamaState is what a Model of the Llama family has besides the fields
// it shares with GPT-2: the views, the rotary tables, the activations and
// the backward scratch. Model.act holds its logits, probs and losses, and
// Model.bw its dres, dln and dlogits.
type llamaState struct {
	p, g     llamaViews
	cos, sin []float32 // (maxT, hd/2) cos and sin of θ_j·t
	eps      float32   // RMSNorm's ε
	act      llamaActs
	bw       llamaScratch
	bf16Held // the base's matrices, when held in bf16 (bf16base.go); then p's matrices are nil
}

// llamaActs are the forward activations the backward pass needs, for
// maxB·maxT positions (BT).
type llamaActs struct {
	embedded   []float32 // (BT, C)
	blocks     []llamaBlockActs
	proj       []float32 // (BT, C) o_proj's and down_proj's outputs before the residual add (scratch)
	xnf, rstdf []float32 // (BT, C), (BT) model.norm
}

type llamaBlockActs struct {
	xn1, rstd1 []float32 // (BT, C), (BT) input_layernorm
	qkv        []float32 // (BT, Q+2K) q and k after RoPE, v
	att        []float32 // (B, NH, T, T) attention probabilities
	atty       []float32 // (BT, Q) attention output before o_proj
	res2       []float32 // (BT, C) x + attention branch
	xn2, rstd2 []float32 // (BT, C), (BT) post_attention_layernorm
	gu         []float32 // (BT, 2H) gate_proj | up_proj outputs
	h          []float32 // (BT, H) silu(gate)·up
	res3       []float32 // (BT, C) block output
}

// llamaScratch holds activation gradients; every block reuses them.
type llamaScratch struct {
	datty []float32 // (BT, Q)
	dqkv  []float32 // (BT, Q+2K)
	dgu   []float32 // (BT, 2H)
	dh    []float32 // (BT, H)
	datt  []float32 // (B, NH, T, T)
	dkv   []float32 // (B, NH, T, 2hd) per query head key and value gradients; nil without grouping
}

// llamaMemoryBytes is MemoryBytes for the Llama family: the bytes newLlama
// allocates, counted in float64 (exact below 2⁵³) so that an absurd config
// saturates at math.MaxInt64 instead of overflowing.
func llamaMemoryBytes(c Config, maxB, maxT int, inference bool) int64 {
	B, T := float64(maxB), float64(maxT)
	BT, C, V, H := B*T, float64(c.Dim), float64(c.Vocab), float64(c.Hidden)
	NH, hd := float64(c.Heads), float64(c.HeadDim)
	Q, W := NH*hd, float64(c.Heads+2*c.KVHeads)*hd
	att := B * NH * T * T
	P := float64(c.NumParams())
	perLayer := 4*BT*C + 2*BT + BT*W + att + BT*Q + 3*BT*H
	floats := P + T*hd + float64(c.Layers)*perLayer + 3*BT*C + BT + 2*BT*V + BT
	if !inference {
		floats += P + 2*BT*C + BT*Q + BT*W + 3*BT*H + att + BT*V
		if c.KVHeads != c.Heads {
			floats += B * NH * T * 2 * hd
		}
	}
	if 4*floats >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(4 * floats)
}

// newLlama allocates the Llama family's buffers of a Model that newModel
// has made (Params, the batch bounds); with held, the base held there in
// bf16 instead of Params, and no Grads.
func (m *Model) newLlama(inference bool, held *HeldBase) {
	held16 := held != nil
	c := m.Config
	BT, C, V, H := m.maxB*m.maxT, c.Dim, c.Vocab, c.Hidden
	NH, hd := c.Heads, c.HeadDim
	Q, W := NH*hd, (NH+2*c.KVHeads)*hd
	att := m.maxB * NH * m.maxT * m.maxT
	f := func(k int) []float32 { return make([]float32, k) }
	s := &llamaState{eps: float32(c.NormEps)}
	m.llama = s
	if held16 {
		m.holdBF16(held)
	} else {
		s.p = makeLlamaViews(c, m.Params)
	}
	s.cos, s.sin = ropeTables(c, m.maxT)
	a := &s.act
	a.embedded, a.proj, a.xnf, a.rstdf = f(BT*C), f(BT*C), f(BT*C), f(BT)
	for range c.Layers {
		a.blocks = append(a.blocks, llamaBlockActs{
			xn1: f(BT * C), rstd1: f(BT), qkv: f(BT * W), att: f(att), atty: f(BT * Q), res2: f(BT * C),
			xn2: f(BT * C), rstd2: f(BT), gu: f(BT * 2 * H), h: f(BT * H), res3: f(BT * C),
		})
	}
	m.act.logits, m.act.probs, m.act.losses = f(BT*V), f(BT*V), f(BT)
	m.gradRanges = llamaGradRanges(c)
	if inference {
		return
	}
	if held16 {
		s.g = llamaViews{blocks: make([]llamaBlock, c.Layers)} // as after DropBaseGrads
	} else {
		m.Grads = f(len(m.Params))
		s.g = makeLlamaViews(c, m.Grads)
	}
	m.bw = backwardScratch{dres: f(BT * C), dln: f(BT * C), dlogits: f(BT * V)}
	s.bw = llamaScratch{datty: f(BT * Q), dqkv: f(BT * W), dgu: f(BT * 2 * H), dh: f(BT * H), datt: f(att)}
	if c.KVHeads != c.Heads {
		s.bw.dkv = f(att / m.maxT * 2 * hd)
	}
}

// RopeTables returns the rotary embedding tables of a Llama family config
// c for positions t < maxT, cos and sin of θ_j·t at [t, j], (maxT,
// HeadDim/2) each: what a device backend uploads to compute as this
// package does.
func RopeTables(c Config, maxT int) (cos, sin []float32) { return ropeTables(c, maxT) }

// ropeTables returns cos and sin of θ_j·t for positions t < maxT and the
// config's frequencies θ_j (ropeFrequencies), (maxT, HeadDim/2) each,
// computed in float64 and rounded once.
func ropeTables(c Config, maxT int) (cos, sin []float32) {
	freqs := c.ropeFrequencies()
	half := len(freqs)
	cos, sin = make([]float32, maxT*half), make([]float32, maxT*half)
	for t := range maxT {
		for j, th := range freqs {
			s, co := math.Sincos(float64(t) * th)
			cos[t*half+j], sin[t*half+j] = float32(co), float32(s)
		}
	}
	return cos, sin
}

// llamaForward is Forward's computation for the Llama family, on the
// batch Forward has checked and recorded (m.tokens, m.B, m.T). It returns
// the mean loss, or 0 without targets.
func (m *Model) llamaForward(targets []int32) float32 {
	c, s := m.Config, m.llama
	B, T := m.B, m.T
	BT, C, V, H := B*T, c.Dim, c.Vocab, c.Hidden
	NH, KVH, hd := c.Heads, c.KVHeads, c.HeadDim
	W := (NH + 2*KVH) * hd
	a := &s.act
	m.embedForward(a.embedded, BT)
	x := a.embedded
	for l := range c.Layers {
		p, h, z := &s.p.blocks[l], s.block16(l), &a.blocks[l]
		kernels.RMSNormForward(z.xn1, z.rstd1, x, p.attnNorm, BT, C, s.eps)
		m.stackedForward(l, projQ, projV, z.qkv, z.xn1, s.weight(p.qkvw, h.qkvw), p.qkvb, BT)
		kernels.RoPEForward(z.qkv, s.cos, s.sin, B, T, NH+KVH, hd, W)
		kernels.AttentionForwardGQA(z.atty, z.att, z.qkv, B, T, NH, KVH, hd, c.SlidingWindow)
		m.linearForward(l, projO, a.proj, z.atty, s.weight(p.ow, h.ow), nil, BT)
		kernels.ResidualForward(z.res2[:BT*C], x[:BT*C], a.proj[:BT*C])
		kernels.RMSNormForward(z.xn2, z.rstd2, z.res2, p.mlpNorm, BT, C, s.eps)
		m.stackedForward(l, projGate, projUp, z.gu, z.xn2, s.weight(p.guw, h.guw), nil, BT)
		kernels.SwiGLUForward(z.h, z.gu, BT, H)
		m.linearForward(l, projDown, a.proj, z.h, s.weight(p.downw, h.downw), nil, BT)
		kernels.ResidualForward(z.res3[:BT*C], z.res2[:BT*C], a.proj[:BT*C])
		x = z.res3
	}
	kernels.RMSNormForward(a.xnf, a.rstdf, x, s.p.norm, BT, C, s.eps)
	m.headForward(m.act.logits, a.xnf, BT)
	if targets == nil {
		return 0
	}
	return kernels.SoftmaxCrossEntropyForward(m.act.losses, m.act.probs, m.act.logits, targets, BT, V)
}

// llamaBackward is Backward's computation for the Llama family, once
// Backward has checked that there is something to add (see Backward for
// the contract, GradReady's included).
func (m *Model) llamaBackward(scale float32) {
	c, s := m.Config, m.llama
	B, T := m.B, m.T
	BT, C, V, H := B*T, c.Dim, c.Vocab, c.Hidden
	NH, KVH, hd := c.Heads, c.KVHeads, c.HeadDim
	Q, W := NH*hd, (NH+2*KVH)*hd
	a, d := &s.act, &s.bw
	frozen := m.lora != nil
	// normGrad is where RMSNormBackward adds a norm weight's gradient:
	// nowhere with the base frozen.
	normGrad := func(dw []float32) []float32 {
		if frozen {
			return nil
		}
		return dw
	}

	dlogits := m.bw.dlogits[:BT*V]
	clear(dlogits)
	kernels.SoftmaxCrossEntropyBackward(dlogits, m.act.probs, m.targets, scale/float32(m.counted), BT, V)
	dln := m.bw.dln[:BT*C]
	clear(dln)
	if frozen {
		m.headBackwardInput(dln, dlogits, BT) // dln += dlogits·head
	} else {
		kernels.LinearBackward(dln, s.g.head, nil, dlogits, a.xnf, s.p.head, BT, C, V)
	}
	dres := m.bw.dres[:BT*C]
	clear(dres)
	last := a.embedded
	if c.Layers > 0 {
		last = a.blocks[c.Layers-1].res3
	}
	kernels.RMSNormBackward(dres, normGrad(s.g.norm), dln, last, s.p.norm, a.rstdf, BT, C)
	if !frozen {
		m.gradReady(0) // model.norm (and lm_head)
	}
	for l := c.Layers - 1; l >= 0; l-- {
		p, g, h, z := &s.p.blocks[l], &s.g.blocks[l], s.block16(l), &a.blocks[l]
		x := a.embedded
		if l > 0 {
			x = a.blocks[l-1].res3
		}
		// With frozen base weights, nothing below block 0's projections
		// needs a gradient: the embedding is frozen too.
		needInput := !frozen || l > 0
		// MLP branch: dres holds ∂L/∂res3, which is also ∂L/∂(down_proj's output).
		dh := d.dh[:BT*H]
		clear(dh)
		m.linearBackward(l, projDown, dh, g.downw, nil, dres, z.h, s.weight(p.downw, h.downw), BT)
		dgu := d.dgu[:BT*2*H]
		clear(dgu)
		kernels.SwiGLUBackward(dgu, dh, z.gu, BT, H)
		clear(dln)
		m.stackedBackward(l, projGate, projUp, dln, g.guw, nil, dgu, z.xn2, s.weight(p.guw, h.guw), BT)
		// dres becomes ∂L/∂res2.
		kernels.RMSNormBackward(dres, normGrad(g.mlpNorm), dln, z.res2, p.mlpNorm, z.rstd2, BT, C)
		// Attention branch.
		datty := d.datty[:BT*Q]
		clear(datty)
		m.linearBackward(l, projO, datty, g.ow, nil, dres, z.atty, s.weight(p.ow, h.ow), BT)
		dqkv := d.dqkv[:BT*W]
		clear(dqkv)
		kernels.AttentionBackwardGQA(dqkv, d.datt, d.dkv, datty, z.qkv, z.att, B, T, NH, KVH, hd, c.SlidingWindow)
		kernels.RoPEBackward(dqkv, s.cos, s.sin, B, T, NH+KVH, hd, W) // ∂L/∂q, ∂L/∂k before the rotation
		var dxn1 []float32                                            // ∂L/∂xn1, if anything below needs it
		if needInput {
			clear(dln)
			dxn1 = dln
		}
		m.stackedBackward(l, projQ, projV, dxn1, g.qkvw, g.qkvb, dqkv, z.xn1, s.weight(p.qkvw, h.qkvw), BT)
		if needInput {
			// dres becomes ∂L/∂x, the block's input.
			kernels.RMSNormBackward(dres, normGrad(g.attnNorm), dln, x, p.attnNorm, z.rstd1, BT, C)
		}
		if frozen {
			m.gradReady(c.Layers - 1 - l) // the adapter's block l
		} else {
			m.gradReady(c.Layers - l) // block l
		}
	}
	if !frozen {
		kernels.EmbeddingBackward(s.g.embed, dres, m.tokens, BT, C)
		m.gradReady(c.Layers + 1) // model.embed_tokens
	}
}

// stackedForward computes the projections first..last of block l, whose
// weights are stacked in w (and biases in b, or nil), in one matrix
// multiply, out (BT, Σ out features) = inp·wᵀ + b, each projection's
// outputs in its own columns in order; then it adds the attached adapter's
// update to each projection it adapts.
func (m *Model) stackedForward(l int, first, last projection, out, inp, w, b []float32, BT int) {
	in, ld := m.stackedShape(first, last)
	kernels.LinearForward(out, inp, w, b, BT, in, ld)
	off := 0
	for p := first; p <= last; p++ {
		m.loraForward(l, p, out[off:], ld, inp, BT)
		_, o := p.shape(m.Config)
		off += o
	}
}

// stackedBackward is the backward pass of stackedForward, as
// linearBackward is of linearForward: dout (BT, Σ out features) is
// ∂L/∂out; dinp is nil only with the base frozen.
func (m *Model) stackedBackward(l int, first, last projection, dinp, dw, db, dout, inp, w []float32, BT int) {
	in, ld := m.stackedShape(first, last)
	if m.lora == nil {
		kernels.LinearBackward(dinp, dw, db, dout, inp, w, BT, in, ld)
		return
	}
	if dinp != nil {
		kernels.Gemm(false, false, BT, in, ld, dout, ld, w, in, dinp, in, true) // dinp += dout·w
	}
	off := 0
	for p := first; p <= last; p++ {
		m.loraBackward(l, p, dinp, dout[off:], ld, inp, BT)
		_, o := p.shape(m.Config)
		off += o
	}
}

// stackedShape returns the input features of projections first..last
// (they share their input) and the sum of their output features.
func (m *Model) stackedShape(first, last projection) (in, out int) {
	in, _ = first.shape(m.Config)
	for p := first; p <= last; p++ {
		_, o := p.shape(m.Config)
		out += o
	}
	return in, out
}
