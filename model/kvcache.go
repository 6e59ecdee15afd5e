package model

import (
	"fmt"
	"math"

	"github.com/braidml/braid/kernels"
	"github.com/braidml/braid/model/safetensors"
)

// This file is incremental decoding with a key-value cache, for inference:
// a KVCache keeps, for each of its slots (one sequence each), every layer's
// keys and values of the tokens seen so far, so that a step computes only
// the new tokens — the prompt once (prefill), then one token per step —
// each attending to the cached keys and values of its own sequence. The
// arithmetic is Forward's (model.go, llama.go) row by row; the cost of a
// decoded token stays flat with the sequence length but for attention's
// one dot product per cached position.
//
// One Step may mix sequences in different phases (a prompt chunk of one,
// one token of each of the others): the projections and the MLP then run
// as one matrix multiply over all their rows, which is what lets a server
// batch concurrent requests (continuous batching).

// KVChunk is one sequence's share of a KVCache step: tokens appended to the
// sequence in slot Slot, at positions Len(Slot) onwards.
type KVChunk struct {
	Slot   int
	Tokens []int32
}

// KVCache holds the keys and values of up to Slots sequences of up to MaxLen
// tokens each for a Model, and the scratch to advance up to MaxRows tokens
// at once. It reads the model's parameters (and attached LoRA adapter) at
// every Step: changing them between steps makes the cached keys and values
// stale, so Reset the slots after that. A KVCache is not safe for
// concurrent use, nor for use while the model's parameters change.
type KVCache struct {
	m                    *Model
	slots, maxT, maxRows int
	kvw                  int         // floats of one position's keys (KVH·hd), and of its values
	k, v                 [][]float32 // per layer: (slots, maxT, kvw)
	lens                 []int       // (slots) tokens cached per slot
	cos, sin             []float32   // (maxT, hd/2) rotary tables; nil for GPT-2
	window               int         // Mistral's sliding window; 0: none

	// scratch for maxRows rows (R)
	rowSlot, rowPos []int     // (R) each row's slot and position
	tokens          []int32   // (R)
	x               []float32 // (R, C) residual stream
	xn              []float32 // (R, C) normalised
	proj            []float32 // (R, C) a projection back to C before the residual add
	mean, rstd      []float32 // (R)
	qkv             []float32 // (R, (NH+2KVH)·hd) [q | k | v]
	atty            []float32 // (R, NH·hd)
	hid             []float32 // (R, 4C) GPT-2's c_fc output; Llama: (R, 2H) gate | up
	act             []float32 // (R, 4C) GELU's output; Llama: (R, H) silu(gate)·up
	scores          []float32 // (R·NH, maxT) attention scores, one row per (row, head)
	u               []float32 // (R, rank) an adapter's x·Aᵀ; grown when an adapter needs it
	last            []float32 // (slots, C) the rows whose logits are asked for
	lastN           []float32 // (slots, C) those rows normalised
	lastMean        []float32 // (slots)
	lastRstd        []float32 // (slots)
	logits          []float32 // (slots, V)
	seen            []bool    // (slots) a slot already in this step
	task            kvAttnTask
}

// KVCacheBytes estimates the bytes NewKVCache allocates for a model of
// config c, in int64 (float64 inside, so absurd configs saturate).
func KVCacheBytes(c Config, slots, maxT, maxRows int) int64 {
	S, T, R := float64(slots), float64(maxT), float64(maxRows)
	C, V, NH, hd := float64(c.Dim), float64(c.Vocab), float64(c.Heads), float64(c.HeadSize())
	KVH, H := NH, 4*C
	if c.llamaFamily() {
		KVH, H = float64(c.KVHeads), float64(c.Hidden)
	}
	floats := float64(c.Layers)*S*T*KVH*hd*2 + T*hd +
		R*(3*C+2+(NH+2*KVH)*hd+NH*hd+2*H+H+NH*T) + S*(2*C+2+V)
	if 4*floats >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(4 * floats)
}

// NewKVCache returns an empty cache for incremental decoding with m: slots
// sequences of up to maxT ≤ Config.Context tokens each, advanced by Steps
// of up to maxRows tokens in all. It fails if that would need more than
// MemoryLimit.
func (m *Model) NewKVCache(slots, maxT, maxRows int) (*KVCache, error) {
	c := m.Config
	if slots < 1 || maxT < 1 || maxT > c.Context || maxRows < 1 {
		return nil, fmt.Errorf("%w: a KV cache of %d slots × %d tokens, %d rows a step (want ≥ 1 slots of 1..%d tokens and ≥ 1 rows)",
			ErrConfig, slots, maxT, maxRows, c.Context)
	}
	if need := KVCacheBytes(c, slots, maxT, maxRows); need > MemoryLimit {
		return nil, fmt.Errorf("%w: a KV cache of %d slots × %d tokens needs %.1f GiB, more than the %.1f GiB limit (use fewer slots or a shorter context)",
			ErrConfig, slots, maxT, float64(need)/(1<<30), float64(MemoryLimit)/(1<<30))
	}
	C, V, NH, hd := c.Dim, c.Vocab, c.Heads, c.HeadSize()
	KVH, H, hidW := NH, 4*C, 4*C
	if c.llamaFamily() {
		KVH, H, hidW = c.KVHeads, c.Hidden, 2*c.Hidden
	}
	R := maxRows
	f := func(n int) []float32 { return make([]float32, n) }
	kv := &KVCache{m: m, slots: slots, maxT: maxT, maxRows: R, kvw: KVH * hd, lens: make([]int, slots),
		rowSlot: make([]int, R), rowPos: make([]int, R), tokens: make([]int32, R),
		x: f(R * C), xn: f(R * C), proj: f(R * C), mean: f(R), rstd: f(R),
		qkv: f(R * (NH + 2*KVH) * hd), atty: f(R * NH * hd), hid: f(R * hidW), act: f(R * H),
		scores: f(R * NH * maxT), last: f(slots * C), lastN: f(slots * C), lastMean: f(slots), lastRstd: f(slots),
		logits: f(slots * V), seen: make([]bool, slots)}
	for range c.Layers {
		kv.k = append(kv.k, f(slots*maxT*kv.kvw))
		kv.v = append(kv.v, f(slots*maxT*kv.kvw))
	}
	if c.llamaFamily() {
		kv.cos, kv.sin = ropeTables(c, maxT)
		kv.window = c.SlidingWindow
	}
	return kv, nil
}

// Slots is the number of sequences the cache holds.
func (kv *KVCache) Slots() int { return kv.slots }

// MaxLen is the most tokens a slot holds.
func (kv *KVCache) MaxLen() int { return kv.maxT }

// MaxRows is the most tokens one Step takes, over all its chunks.
func (kv *KVCache) MaxRows() int { return kv.maxRows }

// Len is the number of tokens cached in slot.
func (kv *KVCache) Len(slot int) int { return kv.lens[slot] }

// Reset empties slot, for a new sequence.
func (kv *KVCache) Reset(slot int) { kv.lens[slot] = 0 }

// Step appends each chunk's tokens to its slot's sequence and, for each
// chunk whose logits[i] is not nil, writes into logits[i] (Vocab floats) the
// logits after the chunk's last token, as Forward over the whole sequence
// would at that position. A slot may appear once per step; the chunks hold
// up to MaxRows tokens in all, each chunk at least one, and no slot may grow
// past MaxLen. Step checks all that, and the token ids, before it changes
// anything, and returns an error naming what is wrong.
func (kv *KVCache) Step(chunks []KVChunk, logits [][]float32) error {
	m, c := kv.m, kv.m.Config
	if logits != nil && len(logits) != len(chunks) {
		return fmt.Errorf("model: KV cache step with %d chunks and %d logits buffers", len(chunks), len(logits))
	}
	clear(kv.seen)
	R := 0
	for i, ch := range chunks {
		if ch.Slot < 0 || ch.Slot >= kv.slots {
			return fmt.Errorf("model: KV cache slot %d, want 0..%d", ch.Slot, kv.slots-1)
		}
		if kv.seen[ch.Slot] {
			return fmt.Errorf("model: KV cache slot %d twice in one step", ch.Slot)
		}
		kv.seen[ch.Slot] = true
		if len(ch.Tokens) == 0 {
			return fmt.Errorf("model: KV cache step with no tokens for slot %d", ch.Slot)
		}
		if n := kv.lens[ch.Slot] + len(ch.Tokens); n > kv.maxT {
			return fmt.Errorf("model: slot %d would hold %d tokens, more than the cache's %d", ch.Slot, n, kv.maxT)
		}
		if logits != nil && logits[i] != nil && len(logits[i]) != c.Vocab {
			return fmt.Errorf("model: a logits buffer of %d floats for a vocabulary of %d", len(logits[i]), c.Vocab)
		}
		for j, t := range ch.Tokens {
			if t < 0 || int(t) >= c.Vocab {
				return fmt.Errorf("model: token %d at position %d of slot %d's chunk is outside the vocabulary [0, %d)", t, j, ch.Slot, c.Vocab)
			}
		}
		R += len(ch.Tokens)
		if R > kv.maxRows {
			return fmt.Errorf("model: a KV cache step of more than %d tokens", kv.maxRows)
		}
	}
	if R == 0 {
		return nil
	}
	r := 0
	for _, ch := range chunks {
		for j, t := range ch.Tokens {
			kv.rowSlot[r], kv.rowPos[r], kv.tokens[r] = ch.Slot, kv.lens[ch.Slot]+j, t
			r++
		}
	}
	if m.llama != nil {
		kv.llamaLayers(R)
	} else {
		kv.gpt2Layers(R)
	}
	// The logits of the chunks that want them, from their last rows.
	C, V := c.Dim, c.Vocab
	n, r := 0, 0
	for i, ch := range chunks {
		r += len(ch.Tokens)
		if logits != nil && logits[i] != nil {
			copy(kv.last[n*C:(n+1)*C], kv.x[(r-1)*C:r*C])
			n++
		}
	}
	if n > 0 {
		last, lastN := kv.last[:n*C], kv.lastN[:n*C]
		if s := m.llama; s != nil {
			kernels.RMSNormForward(lastN, kv.lastRstd, last, s.p.norm, n, C, s.eps)
			if s.p16.blocks == nil {
				linearRows(kv.logits, lastN, s.p.head, nil, n, C, V)
			} else {
				m.headForward(kv.logits, lastN, n) // widened a chunk at a time
			}
		} else {
			kernels.LayerNormForward(lastN, kv.lastMean, kv.lastRstd, last, m.p.lnfw, m.p.lnfb, n, C)
			linearRows(kv.logits, lastN, m.p.wte, nil, n, C, V)
		}
		n = 0
		for i := range chunks {
			if logits != nil && logits[i] != nil {
				copy(logits[i], kv.logits[n*V:(n+1)*V])
				n++
			}
		}
	}
	for _, ch := range chunks {
		kv.lens[ch.Slot] += len(ch.Tokens)
	}
	return nil
}

// gpt2Layers runs GPT-2's embedding and blocks on the step's R rows,
// leaving the last block's output in kv.x.
func (kv *KVCache) gpt2Layers(R int) {
	m, c := kv.m, kv.m.Config
	C := c.Dim
	kernels.EmbeddingForward(kv.x, kv.tokens[:R], m.p.wte, R, C)
	for r := range R {
		x, pos := kv.x[r*C:(r+1)*C], kv.rowPos[r]
		for i, p := range m.p.wpe[pos*C : (pos+1)*C] {
			x[i] += p
		}
	}
	x := kv.x[:R*C]
	for l := range c.Layers {
		p := &m.p.blocks[l]
		kernels.LayerNormForward(kv.xn, kv.mean, kv.rstd, x, p.ln1w, p.ln1b, R, C)
		kv.linear(l, projQKV, projQKV, kv.qkv, kv.xn, p.qkvw, p.qkvb, R)
		kv.attention(l, R)
		kv.linear(l, projAttnOut, projAttnOut, kv.proj, kv.atty, p.attprojw, p.attprojb, R)
		kernels.ResidualForward(x, x, kv.proj[:R*C])
		kernels.LayerNormForward(kv.xn, kv.mean, kv.rstd, x, p.ln2w, p.ln2b, R, C)
		kv.linear(l, projFC, projFC, kv.hid, kv.xn, p.fcw, p.fcb, R)
		kernels.GeluForward(kv.act[:R*4*C], kv.hid[:R*4*C])
		kv.linear(l, projMLPOut, projMLPOut, kv.proj, kv.act, p.fcprojw, p.fcprojb, R)
		kernels.ResidualForward(x, x, kv.proj[:R*C])
	}
}

// llamaLayers is gpt2Layers for the Llama family.
func (kv *KVCache) llamaLayers(R int) {
	c, s := kv.m.Config, kv.m.llama
	C, H, NH, KVH, hd := c.Dim, c.Hidden, c.Heads, c.KVHeads, c.HeadDim
	W, half := (NH+2*KVH)*hd, hd/2
	if s.p16.blocks == nil {
		kernels.EmbeddingForward(kv.x, kv.tokens[:R], s.p.embed, R, C)
	} else { // a base held in bf16 (bf16base.go): widen the rows used
		for i, t := range kv.tokens[:R] {
			row := int(t) * C
			safetensors.BF16ToFloat32s(kv.x[i*C:(i+1)*C], s.p16.embed[row:row+C])
		}
	}
	x := kv.x[:R*C]
	for l := range c.Layers {
		p, h := &s.p.blocks[l], s.block16(l)
		kernels.RMSNormForward(kv.xn, kv.rstd, x, p.attnNorm, R, C, s.eps)
		kv.linear(l, projQ, projV, kv.qkv, kv.xn, s.weight(p.qkvw, h.qkvw), p.qkvb, R)
		// RoPE at each row's own position, as kernels.RoPEForward computes it.
		for r := range R {
			pos := kv.rowPos[r]
			cs, sn := kv.cos[pos*half:(pos+1)*half], kv.sin[pos*half:(pos+1)*half]
			row := kv.qkv[r*W:]
			for h := range NH + KVH {
				a, b := row[h*hd:h*hd+half], row[h*hd+half:(h+1)*hd]
				for j, co := range cs {
					x1, x2 := a[j], b[j]
					a[j] = x1*co - x2*sn[j]
					b[j] = x2*co + x1*sn[j]
				}
			}
		}
		kv.attention(l, R)
		kv.linear(l, projO, projO, kv.proj, kv.atty, s.weight(p.ow, h.ow), nil, R)
		kernels.ResidualForward(x, x, kv.proj[:R*C])
		kernels.RMSNormForward(kv.xn, kv.rstd, x, p.mlpNorm, R, C, s.eps)
		kv.linear(l, projGate, projUp, kv.hid, kv.xn, s.weight(p.guw, h.guw), nil, R)
		kernels.SwiGLUForward(kv.act, kv.hid, R, H)
		kv.linear(l, projDown, projDown, kv.proj, kv.act, s.weight(p.downw, h.downw), nil, R)
		kernels.ResidualForward(x, x, kv.proj[:R*C])
	}
}

// fewRows is up to how many rows linearRows multiplies without packing the
// weight (kernels.LinearForwardFew): a decoding step has a row per
// sequence, and packing a weight for so few rows costs more than the
// multiply.
const fewRows = 8

// linearRows is kernels.LinearForward, or LinearForwardFew for up to
// fewRows rows.
func linearRows(out, inp, w, b []float32, R, in, o int) {
	if R <= fewRows {
		kernels.LinearForwardFew(out, inp, w, b, R, in, o)
		return
	}
	kernels.LinearForward(out, inp, w, b, R, in, o)
}

// linear computes the stacked projections first..last of block l (one
// projection when first == last) on R rows, out = inp·wᵀ + b, plus the
// attached adapter's update of each projection it adapts (without dropout:
// this is inference), as stackedForward does.
func (kv *KVCache) linear(l int, first, last projection, out, inp, w, b []float32, R int) {
	m := kv.m
	in, ld := m.stackedShape(first, last)
	linearRows(out, inp, w, b, R, in, ld)
	lr := m.lora
	if lr == nil {
		return
	}
	rank := lr.Config.Rank
	if len(kv.u) < kv.maxRows*rank {
		kv.u = make([]float32, kv.maxRows*rank)
	}
	u := kv.u[:R*rank]
	off := 0
	for p := first; p <= last; p++ {
		_, o := p.shape(m.Config)
		if lr.targets[p] {
			ab := lr.p[l][p]
			kernels.Gemm(false, true, R, rank, in, inp, in, ab.a, in, u, rank, false) // u = x·Aᵀ
			kernels.Scale(u, lr.scale)
			kernels.Gemm(false, true, R, o, rank, u, rank, ab.b, rank, out[off:], ld, true) // out += u·Bᵀ
		}
		off += o
	}
}

// attention stores the step's keys and values of layer l (in kv.qkv) in
// the cache, then computes each row's attention over its slot's cached
// positions up to its own (within the sliding window) into kv.atty.
func (kv *KVCache) attention(l, R int) {
	c := kv.m.Config
	NH, hd := c.Heads, c.HeadSize()
	Q := NH * hd
	W := Q + 2*kv.kvw
	for r := range R {
		at := (kv.rowSlot[r]*kv.maxT + kv.rowPos[r]) * kv.kvw
		copy(kv.k[l][at:at+kv.kvw], kv.qkv[r*W+Q:])
		copy(kv.v[l][at:at+kv.kvw], kv.qkv[r*W+Q+kv.kvw:])
	}
	t := &kv.task
	*t = kvAttnTask{kv: kv, l: l, NH: NH, hd: hd, group: NH / (kv.kvw / hd), scale: float32(1 / math.Sqrt(float64(hd)))}
	kernels.ParallelFor(R*NH, max(1, 64/NH), t)
	*t = kvAttnTask{}
}

// kvAttnTask computes attention for (row, query head) pairs.
type kvAttnTask struct {
	kv        *KVCache
	l, NH, hd int
	group     int // query heads per key/value head
	scale     float32
}

// Run processes the (row, head) pairs [lo, hi).
func (t *kvAttnTask) Run(lo, hi int) {
	kv, hd := t.kv, t.hd
	Q := t.NH * hd
	W, kvw := Q+2*kv.kvw, kv.kvw
	for rh := lo; rh < hi; rh++ {
		r, h := rh/t.NH, rh%t.NH
		kh := h / t.group
		pos := kv.rowPos[r]
		first := 0
		if kv.window > 0 && pos >= kv.window {
			first = pos - kv.window + 1
		}
		n := pos - first + 1
		base := (kv.rowSlot[r]*kv.maxT + first) * kvw
		keys, vals := kv.k[t.l][base+kh*hd:], kv.v[t.l][base+kh*hd:]
		q := kv.qkv[r*W+h*hd : r*W+(h+1)*hd]
		sc := kv.scores[rh*kv.maxT : rh*kv.maxT+n]
		kernels.GemmSerial(false, true, 1, n, hd, q, hd, keys, kvw, sc, n, false) // sc = q·Kᵀ
		maxv := float32(math.Inf(-1))
		for _, s := range sc {
			maxv = max(maxv, s)
		}
		inv := 1 / kernels.ExpSum(sc, sc, maxv, t.scale)
		for j := range sc {
			sc[j] *= inv
		}
		out := kv.atty[r*Q+h*hd : r*Q+(h+1)*hd]
		kernels.GemmSerial(false, false, 1, hd, n, sc, n, vals, kvw, out, hd, false) // out = sc·V
	}
}
