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
	need("AttentionForward out", out, B*T*C)
	need("AttentionForward att", att, B*NH*T*T)
	need("AttentionForward qkv", qkv, B*T*3*C)
	attnFwdTasks.run(B*NH, 1, attnTask{out: out, att: att, qkv: qkv, T: T, C: C, NH: NH})
}

// AttentionBackward adds the gradient with respect to qkv (B, T, 3C) into
// dqkv, given dout (B, T, C), and the qkv and att of the forward pass.
// scratch (B, NH, T, T) is overwritten; it holds ∂L/∂att, then the gradient
// of the pre-softmax scores.
func AttentionBackward(dqkv, scratch, dout, qkv, att []float32, B, T, C, NH int) {
	checkAttention("AttentionBackward", B, T, C, NH)
	need("AttentionBackward dqkv", dqkv, B*T*3*C)
	need("AttentionBackward scratch", scratch, B*NH*T*T)
	need("AttentionBackward dout", dout, B*T*C)
	need("AttentionBackward qkv", qkv, B*T*3*C)
	need("AttentionBackward att", att, B*NH*T*T)
	attnBwdTasks.run(B*NH, 1, attnBwdTask{out: dout, att: att, qkv: qkv, dqkv: dqkv, scratch: scratch, T: T, C: C, NH: NH})
}

func checkAttention(name string, B, T, C, NH int) {
	if B <= 0 || T <= 0 || C <= 0 || NH <= 0 || C%NH != 0 {
		panic("kernels: " + name + ": need positive B, T, C, NH with C divisible by NH")
	}
}

type attnTask struct {
	out, att, qkv, dqkv, scratch []float32
	T, C, NH                     int
}

// attnBwdTask shares attnTask's fields; out holds dout.
type attnBwdTask attnTask

var (
	attnFwdTasks taskPool[attnTask, *attnTask]
	attnBwdTasks taskPool[attnBwdTask, *attnBwdTask]
)

// Run processes the (batch, head) pairs [lo, hi).
func (t *attnTask) Run(lo, hi int) {
	T, C, NH := t.T, t.C, t.NH
	hs := C / NH
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		base := b * T * 3 * C
		q := t.qkv[base+h*hs:]
		k := t.qkv[base+C+h*hs:]
		v := t.qkv[base+2*C+h*hs:]
		att := t.att[bh*T*T : (bh+1)*T*T] // (T, T)
		out := t.out[b*T*C+h*hs:]
		for r0 := 0; r0 < T; r0 += attnRowBlock {
			r1 := min(r0+attnRowBlock, T)
			// scores[r0:r1, 0:r1] = q[r0:r1]·k[0:r1]ᵀ
			GemmSerial(false, true, r1-r0, r1, hs, q[r0*3*C:], 3*C, k, 3*C, att[r0*T:], T, false)
			for i := r0; i < r1; i++ {
				softmaxCausalRow(att[i*T:(i+1)*T], i, scale)
			}
			// out[r0:r1] = att[r0:r1, 0:r1]·v[0:r1]
			GemmSerial(false, false, r1-r0, hs, r1, att[r0*T:], T, v, 3*C, out[r0*C:], C, false)
		}
	}
}

// softmaxCausalRow turns row i of the raw scores into probabilities over
// columns 0..i (after multiplying by scale) and zeroes columns i+1..T−1.
func softmaxCausalRow(row []float32, i int, scale float32) {
	live := row[:i+1]
	maxv := float32(math.Inf(-1))
	for _, s := range live {
		maxv = max(maxv, s)
	}
	inv := 1 / ExpSum(live, live, maxv, scale)
	for j := range live {
		live[j] *= inv
	}
	clear(row[i+1:])
}

// Run processes the (batch, head) pairs [lo, hi).
func (t *attnBwdTask) Run(lo, hi int) {
	T, C, NH := t.T, t.C, t.NH
	hs := C / NH
	scale := float32(1 / math.Sqrt(float64(hs)))
	for bh := lo; bh < hi; bh++ {
		b, h := bh/NH, bh%NH
		base := b * T * 3 * C
		q, k, v := t.qkv[base+h*hs:], t.qkv[base+C+h*hs:], t.qkv[base+2*C+h*hs:]
		dq, dk, dv := t.dqkv[base+h*hs:], t.dqkv[base+C+h*hs:], t.dqkv[base+2*C+h*hs:]
		att := t.att[bh*T*T : (bh+1)*T*T]
		ds := t.scratch[bh*T*T : (bh+1)*T*T]
		dout := t.out[b*T*C+h*hs:]
		for r0 := 0; r0 < T; r0 += attnRowBlock {
			r1 := min(r0+attnRowBlock, T)
			// datt[r0:r1, 0:r1] = dout[r0:r1]·v[0:r1]ᵀ
			GemmSerial(false, true, r1-r0, r1, hs, dout[r0*C:], C, v, 3*C, ds[r0*T:], T, false)
			// Softmax backward: ds = att ⊙ (datt − Σ_j att·datt), times scale.
			for i := r0; i < r1; i++ {
				a, d := att[i*T:i*T+i+1], ds[i*T:i*T+i+1]
				var dot float32
				for j, p := range a {
					dot += p * d[j]
				}
				for j, p := range a {
					d[j] = p * (d[j] - dot) * scale
				}
				clear(ds[i*T+i+1 : (i+1)*T])
			}
			// dq[r0:r1] += ds[r0:r1, 0:r1]·k[0:r1]
			GemmSerial(false, false, r1-r0, hs, r1, ds[r0*T:], T, k, 3*C, dq[r0*3*C:], 3*C, true)
		}
		// Keys and values: column block [c0, c1) of ds and att is non-zero
		// only in rows c0..T−1.
		for c0 := 0; c0 < T; c0 += attnRowBlock {
			c1 := min(c0+attnRowBlock, T)
			// dk[c0:c1] += ds[c0:T, c0:c1]ᵀ·q[c0:T]
			GemmSerial(true, false, c1-c0, hs, T-c0, ds[c0*T+c0:], T, q[c0*3*C:], 3*C, dk[c0*3*C:], 3*C, true)
			// dv[c0:c1] += att[c0:T, c0:c1]ᵀ·dout[c0:T]
			GemmSerial(true, false, c1-c0, hs, T-c0, att[c0*T+c0:], T, dout[c0*C:], C, dv[c0*3*C:], 3*C, true)
		}
	}
}
