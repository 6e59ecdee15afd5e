package kernels

import "math"

// attnRowBlock is how many query rows attention processes at once. Row block
// [r0, r1) only needs keys 0..r1−1 (causal mask), which skips about half of
// the T×T work while keeping each block a reasonably sized matrix multiply.
const attnRowBlock = 64

// AttentionForward computes causal multi-head self-attention.
//
//	out (B, T, C)       overwritten: the heads' outputs, concatenated in head order
//	att (B, NH, T, T)   overwritten: softmax(q·kᵀ/sqrt(hs)) with exact zeros above
//	                    the diagonal, kept for the backward pass
//	qkv (B, T, 3C)      [q | k | v] along the last axis; head h of q occupies
//	                    channels h·hs..(h+1)·hs, likewise k and v; hs = C/NH
//
// The softmax subtracts each row's maximum before exponentiating.
func AttentionForward(out, att, qkv []float32, B, T, C, NH int) {
	checkAttention("AttentionForward", B, T, C, NH)
	AttentionForwardGQA(out, att, qkv, B, T, NH, NH, C/NH, 0)
}

// AttentionBackward adds the gradient with respect to qkv (B, T, 3C) into
// dqkv, given dout (B, T, C), and the qkv and att of the forward pass.
// scratch (B, NH, T, T) is overwritten; it holds ∂L/∂att, then the gradient
// of the pre-softmax scores.
func AttentionBackward(dqkv, scratch, dout, qkv, att []float32, B, T, C, NH int) {
	checkAttention("AttentionBackward", B, T, C, NH)
	AttentionBackwardGQA(dqkv, scratch, nil, dout, qkv, att, B, T, NH, NH, C/NH, 0)
}

// AttentionForwardGQA computes causal grouped-query self-attention (as
// Llama, Mistral and Qwen2 do), optionally within a sliding window
// (Mistral's):
//
//	out (B, T, NH·hd)          overwritten: the query heads' outputs, in head order
//	att (B, NH, T, T)          overwritten: softmax(q·kᵀ/sqrt(hd)) with exact zeros
//	                           outside the attended keys, kept for the backward pass
//	qkv (B, T, (NH+2·KVH)·hd)  [q | k | v] along the last axis: NH query heads,
//	                           then KVH key heads, then KVH value heads, hd
//	                           channels each; query head h reads key and value
//	                           head h/(NH/KVH)
//	window                     query i attends to keys j with i − window < j ≤ i;
//	                           0: to every j ≤ i
//
// NH must be a multiple of KVH. With KVH = NH and window 0 it is
// AttentionForward with C = NH·hd.
func AttentionForwardGQA(out, att, qkv []float32, B, T, NH, KVH, hd, window int) {
	checkGQA("AttentionForwardGQA", B, T, NH, KVH, hd, window)
	need("AttentionForward out", out, B*T*NH*hd)
	need("AttentionForward att", att, B*NH*T*T)
	need("AttentionForward qkv", qkv, B*T*(NH+2*KVH)*hd)
	attnFwdTasks.run(B*NH, 1, attnTask{out: out, att: att, qkv: qkv, T: T, NH: NH, KVH: KVH, hd: hd, window: window})
}

// AttentionBackwardGQA adds the gradient with respect to qkv
// (B, T, (NH+2·KVH)·hd) into dqkv, given dout (B, T, NH·hd), and the qkv
// and att of the forward pass (AttentionForwardGQA, same NH, KVH, hd and
// window). scratch (B, NH, T, T) is overwritten, as in AttentionBackward.
// dkv (B, NH, T, 2·hd) is overwritten with each query head's share of the
// gradient of its key and value heads, which are then added into dqkv
// summed over the query heads in order (so the result does not depend on
// the thread count); it may be nil when KVH = NH.
func AttentionBackwardGQA(dqkv, scratch, dkv, dout, qkv, att []float32, B, T, NH, KVH, hd, window int) {
	checkGQA("AttentionBackwardGQA", B, T, NH, KVH, hd, window)
	W := (NH + 2*KVH) * hd
	need("AttentionBackward dqkv", dqkv, B*T*W)
	need("AttentionBackward scratch", scratch, B*NH*T*T)
	need("AttentionBackward dout", dout, B*T*NH*hd)
	need("AttentionBackward qkv", qkv, B*T*W)
	need("AttentionBackward att", att, B*NH*T*T)
	args := attnBwdTask{out: dout, att: att, qkv: qkv, dqkv: dqkv, scratch: scratch, T: T, NH: NH, KVH: KVH, hd: hd, window: window}
	if KVH != NH {
		need("AttentionBackward dkv", dkv, B*NH*T*2*hd)
		args.dkv = dkv
	}
	attnBwdTasks.run(B*NH, 1, args)
	if KVH != NH {
		attnKVSumTasks.run(B*T, grainFor(2*NH*hd), attnKVSumTask(args))
	}
}

func checkAttention(name string, B, T, C, NH int) {
	if B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C%NH != 0 {
		panic("kernels: " + name + ": need positive B, T, C, NH with C divisible by NH")
	}
}

func checkGQA(name string, B, T, NH, KVH, hd, window int) {
	if B <= 0 || T <= 0 || NH <= 0 || KVH <= 0 || hd <= 0 || NH%KVH != 0 || window < 0 {
		panic("kernels: " + name + ": need positive B, T, NH, KVH, hd with NH divisible by KVH, and window ≥ 0")
	}
}

type attnTask struct {
	out, att, qkv, dqkv, scratch, dkv []float32
	T, NH, KVH, hd                    int
	window                            int // 0: no window
}

// attnBwdTask shares attnTask's fields; out holds dout.
type attnBwdTask attnTask

// attnKVSumTask adds the query heads' key and value gradients (dkv) into
// dqkv, one (batch, position) row at a time.
type attnKVSumTask attnTask

var (
	attnFwdTasks   taskPool[attnTask, *attnTask]
	attnBwdTasks   taskPool[attnBwdTask, *attnBwdTask]
	attnKVSumTasks taskPool[attnKVSumTask, *attnKVSumTask]
)

// firstKey is the first key that query i attends to.
func firstKey(i, window int) int {
	if window > 0 && i >= window {
		return i - window + 1
	}
	return 0
}

// Run processes the (batch, query head) pairs [lo, hi).
func (t *attnTask) Run(lo, hi int) {
	T, NH, hd := t.T, t.NH, t.hd
	W, C := (NH+2*t.KVH)*hd, NH*hd // qkv's and out's row lengths
	group := NH / t.KVH
	scale := float32(1 / math.Sqrt(float64(hd)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		kh := h / group
		base := b * T * W
		q := t.qkv[base+h*hd:]
		k := t.qkv[base+C+kh*hd:]
		v := t.qkv[base+C+t.KVH*hd+kh*hd:]
		att := t.att[bh*T*T : (bh+1)*T*T] // (T, T)
		out := t.out[b*T*C+h*hd:]
		for r0 := 0; r0 < T; r0 += attnRowBlock {
			r1 := min(r0+attnRowBlock, T)
			// scores[r0:r1, 0:r1] = q[r0:r1]·k[0:r1]ᵀ
			GemmSerial(false, true, r1-r0, r1, hd, q[r0*W:], W, k, W, att[r0*T:], T, false)
			for i := r0; i < r1; i++ {
				softmaxCausalRow(att[i*T:(i+1)*T], firstKey(i, t.window), i, scale)
			}
			// out[r0:r1] = att[r0:r1, 0:r1]·v[0:r1]
			GemmSerial(false, false, r1-r0, hd, r1, att[r0*T:], T, v, W, out[r0*C:], C, false)
		}
	}
}

// softmaxCausalRow turns row i of the raw scores into probabilities over
// columns lo..i (after multiplying by scale) and zeroes the other columns.
func softmaxCausalRow(row []float32, lo, i int, scale float32) {
	live := row[lo : i+1]
	maxv := float32(math.Inf(-1))
	for _, s := range live {
		maxv = max(maxv, s)
	}
	inv := 1 / ExpSum(live, live, maxv, scale)
	for j := range live {
		live[j] *= inv
	}
	clear(row[:lo])
	clear(row[i+1:])
}

// Run processes the (batch, query head) pairs [lo, hi).
func (t *attnBwdTask) Run(lo, hi int) {
	T, NH, hd := t.T, t.NH, t.hd
	W, C := (NH+2*t.KVH)*hd, NH*hd
	group := NH / t.KVH
	scale := float32(1 / math.Sqrt(float64(hd)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		kh := h / group
		base := b * T * W
		q, k, v := t.qkv[base+h*hd:], t.qkv[base+C+kh*hd:], t.qkv[base+C+t.KVH*hd+kh*hd:]
		dq := t.dqkv[base+h*hd:]
		// dk and dv: straight into dqkv when the key head has only this
		// query head, else into this head's rows of dkv ((T, 2·hd): dk | dv).
		dk, dv, ldkv := t.dqkv[base+C+kh*hd:], t.dqkv[base+C+t.KVH*hd+kh*hd:], W
		if t.dkv != nil {
			own := t.dkv[bh*T*2*hd : (bh+1)*T*2*hd]
			clear(own)
			dk, dv, ldkv = own, own[hd:], 2*hd
		}
		att := t.att[bh*T*T : (bh+1)*T*T]
		ds := t.scratch[bh*T*T : (bh+1)*T*T]
		dout := t.out[b*T*C+h*hd:]
		for r0 := 0; r0 < T; r0 += attnRowBlock {
			r1 := min(r0+attnRowBlock, T)
			// datt[r0:r1, 0:r1] = dout[r0:r1]·v[0:r1]ᵀ
			GemmSerial(false, true, r1-r0, r1, hd, dout[r0*C:], C, v, W, ds[r0*T:], T, false)
			// Softmax backward: ds = att ⊙ (datt − Σ_j att·datt), times scale.
			for i := r0; i < r1; i++ {
				j0 := firstKey(i, t.window)
				a, d := att[i*T+j0:i*T+i+1], ds[i*T+j0:i*T+i+1]
				var dot float32
				for j, p := range a {
					dot += p * d[j]
				}
				for j, p := range a {
					d[j] = p * (d[j] - dot) * scale
				}
				clear(ds[i*T : i*T+j0])
				clear(ds[i*T+i+1 : (i+1)*T])
			}
			// dq[r0:r1] += ds[r0:r1, 0:r1]·k[0:r1]
			GemmSerial(false, false, r1-r0, hd, r1, ds[r0*T:], T, k, W, dq[r0*W:], W, true)
		}
		// Keys and values: column block [c0, c1) of ds and att is non-zero
		// only in rows c0..T−1.
		for c0 := 0; c0 < T; c0 += attnRowBlock {
			c1 := min(c0+attnRowBlock, T)
			// dk[c0:c1] += ds[c0:T, c0:c1]ᵀ·q[c0:T]
			GemmSerial(true, false, c1-c0, hd, T-c0, ds[c0*T+c0:], T, q[c0*W:], W, dk[c0*ldkv:], ldkv, true)
			// dv[c0:c1] += att[c0:T, c0:c1]ᵀ·dout[c0:T]
			GemmSerial(true, false, c1-c0, hd, T-c0, att[c0*T+c0:], T, dout[c0*C:], C, dv[c0*ldkv:], ldkv, true)
		}
	}
}

// Run adds, for rows [lo, hi) of dqkv (batch·T + position), the key and
// value gradients of every query head to its key and value head.
func (t *attnKVSumTask) Run(lo, hi int) {
	T, NH, KVH, hd := t.T, t.NH, t.KVH, t.hd
	W, C := (NH+2*KVH)*hd, NH*hd
	group := NH / KVH
	for row := lo; row < hi; row++ {
		b, i := row/T, row%T
		dk := t.dqkv[row*W+C : row*W+C+KVH*hd]
		dv := t.dqkv[row*W+C+KVH*hd : (row+1)*W]
		for h := range NH {
			kh := h / group
			src := t.dkv[((b*NH+h)*T+i)*2*hd:][:2*hd]
			k, v := dk[kh*hd:(kh+1)*hd], dv[kh*hd:(kh+1)*hd]
			for c := range k {
				k[c] += src[c]
				v[c] += src[hd+c]
			}
		}
	}
}
