package kernels

import "math"

// RMSNormForward scales each row of inp to unit root mean square, then by
// weight (Llama's RMSNorm: no mean subtracted, no bias):
//
//	out    (N, C)  overwritten: inp·rstd·weight
//	rstd   (N)     overwritten: 1/sqrt(mean(inp²) + eps), kept for the backward pass
//	inp    (N, C)
//	weight (C)
//
// out may not alias inp.
func RMSNormForward(out, rstd, inp, weight []float32, N, C int, eps float32) {
	need("RMSNormForward out", out, N*C)
	need("RMSNormForward rstd", rstd, N)
	need("RMSNormForward inp", inp, N*C)
	need("RMSNormForward weight", weight, C)
	rmsNormFwdTasks.run(N, grainFor(4*C), rmsNormTask{out: out, rstd: rstd, inp: inp, weight: weight, C: C, eps: eps})
}

// RMSNormBackward adds the gradients of RMSNormForward:
//
//	dinp    (N, C)  += ∂L/∂inp = rstd·(g − x·rstd²·mean(g·x)), g = dout·weight
//	dweight (C)     += Σ_rows dout·inp·rstd     (skipped when nil)
//
// given dout (N, C), inp (N, C), weight (C) and the rstd that the forward
// pass saved. The weight gradient is summed over rows in order, so results
// do not depend on the thread count.
func RMSNormBackward(dinp, dweight, dout, inp, weight, rstd []float32, N, C int) {
	need("RMSNormBackward dinp", dinp, N*C)
	need("RMSNormBackward dout", dout, N*C)
	need("RMSNormBackward inp", inp, N*C)
	need("RMSNormBackward weight", weight, C)
	need("RMSNormBackward rstd", rstd, N)
	args := rmsNormTask{out: dinp, rstd: rstd, inp: inp, weight: weight, dout: dout, N: N, C: C}
	rmsNormBwdRows.run(N, grainFor(6*C), rmsNormBwdTask(args))
	if dweight != nil {
		need("RMSNormBackward dweight", dweight, C)
		args.dweight = dweight
		rmsNormBwdCols.run(C, grainFor(3*N), rmsNormBwdColTask(args))
	}
}

type rmsNormTask struct {
	out, rstd, inp, weight, dout, dweight []float32 // out: dinp in the backward pass
	N, C                                  int
	eps                                   float32
}

type (
	rmsNormBwdTask    rmsNormTask // ∂L/∂inp, parallel over rows
	rmsNormBwdColTask rmsNormTask // ∂L/∂weight, parallel over columns
)

var (
	rmsNormFwdTasks taskPool[rmsNormTask, *rmsNormTask]
	rmsNormBwdRows  taskPool[rmsNormBwdTask, *rmsNormBwdTask]
	rmsNormBwdCols  taskPool[rmsNormBwdColTask, *rmsNormBwdColTask]
)

// Run normalises rows [lo, hi).
func (t *rmsNormTask) Run(lo, hi int) {
	C := t.C
	w := t.weight[:C]
	for i := lo; i < hi; i++ {
		x := t.inp[i*C : (i+1)*C]
		var ss float32
		for _, v := range x {
			ss += v * v
		}
		s := float32(1 / math.Sqrt(float64(ss/float32(C)+t.eps)))
		o := t.out[i*C : (i+1)*C]
		for j, v := range x {
			o[j] = v * s * w[j]
		}
		t.rstd[i] = s
	}
}

// Run computes dinp for rows [lo, hi).
func (t *rmsNormBwdTask) Run(lo, hi int) {
	C := t.C
	w := t.weight[:C]
	for i := lo; i < hi; i++ {
		x := t.inp[i*C : (i+1)*C]
		dy := t.dout[i*C : (i+1)*C]
		dx := t.out[i*C : (i+1)*C]
		s := t.rstd[i]
		var gx float32
		for j, v := range x {
			gx += dy[j] * w[j] * v
		}
		k := s * s * gx / float32(C)
		for j, v := range x {
			dx[j] += s * (dy[j]*w[j] - v*k)
		}
	}
}

// Run computes dweight for columns [lo, hi).
func (t *rmsNormBwdColTask) Run(lo, hi int) {
	C := t.C
	dw := t.dweight[lo:hi]
	for i := 0; i < t.N; i++ {
		x := t.inp[i*C+lo : i*C+hi]
		dy := t.dout[i*C+lo : i*C+hi]
		s := t.rstd[i]
		for j, v := range x {
			dw[j] += dy[j] * v * s
		}
	}
}
