package kernels

import "math"

// LayerNormEps is the ε added to the variance, as in GPT-2 and nn.LayerNorm.
const LayerNormEps = 1e-5

// LayerNormForward normalises each row of inp to zero mean and unit (biased)
// variance, then scales and shifts it:
//
//	out    (N, C)  overwritten: (inp − mean)·rstd·weight + bias
//	mean   (N)     overwritten, kept for the backward pass
//	rstd   (N)     overwritten: 1/sqrt(var + LayerNormEps)
//	inp    (N, C)
//	weight, bias (C)
func LayerNormForward(out, mean, rstd, inp, weight, bias []float32, N, C int) {
	need("LayerNormForward out", out, N*C)
	need("LayerNormForward mean", mean, N)
	need("LayerNormForward rstd", rstd, N)
	need("LayerNormForward inp", inp, N*C)
	need("LayerNormForward weight", weight, C)
	need("LayerNormForward bias", bias, C)
	layerNormFwdTasks.run(N, grainFor(8*C), layerNormFwdTask{out, mean, rstd, inp, weight, bias, C})
}

type layerNormFwdTask struct {
	out, mean, rstd, inp, weight, bias []float32
	C                                  int
}

var layerNormFwdTasks taskPool[layerNormFwdTask, *layerNormFwdTask]

func (t *layerNormFwdTask) Run(lo, hi int) {
	C := t.C
	w, b := t.weight[:C], t.bias[:C]
	for i := lo; i < hi; i++ {
		x := t.inp[i*C : (i+1)*C]
		var sum float32
		for _, v := range x {
			sum += v
		}
		m := sum / float32(C)
		var ss float32
		for _, v := range x {
			d := v - m
			ss += d * d
		}
		s := float32(1 / math.Sqrt(float64(ss/float32(C)+LayerNormEps)))
		o := t.out[i*C : (i+1)*C]
		for j, v := range x {
			o[j] = (v-m)*s*w[j] + b[j]
		}
		t.mean[i], t.rstd[i] = m, s
	}
}

// LayerNormBackward adds the gradients of LayerNormForward:
//
//	dinp    (N, C)  += ∂L/∂inp
//	dweight (C)     += Σ_rows dout·x̂
//	dbias   (C)     += Σ_rows dout
//
// where x̂ = (inp − mean)·rstd, given dout (N, C), inp (N, C), weight (C)
// and the mean and rstd that the forward pass saved. Parameter gradients are
// summed over rows in order, so results do not depend on the thread count.
func LayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	need("LayerNormBackward dinp", dinp, N*C)
	need("LayerNormBackward dweight", dweight, C)
	need("LayerNormBackward dbias", dbias, C)
	need("LayerNormBackward dout", dout, N*C)
	need("LayerNormBackward inp", inp, N*C)
	need("LayerNormBackward weight", weight, C)
	need("LayerNormBackward mean", mean, N)
	need("LayerNormBackward rstd", rstd, N)
	args := layerNormBwdTask{dinp, dweight, dbias, dout, inp, weight, mean, rstd, N, C}
	layerNormBwdRows.run(N, grainFor(10*C), args)
	layerNormBwdCols.run(C, grainFor(4*N), layerNormBwdColTask(args))
}

type layerNormBwdTask struct {
	dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32
	N, C                                                int
}

// layerNormBwdColTask is the parameter-gradient pass, parallel over columns.
type layerNormBwdColTask layerNormBwdTask

var (
	layerNormBwdRows taskPool[layerNormBwdTask, *layerNormBwdTask]
	layerNormBwdCols taskPool[layerNormBwdColTask, *layerNormBwdColTask]
)

// Run computes dinp for rows [lo, hi).
func (t *layerNormBwdTask) Run(lo, hi int) {
	C := t.C
	w := t.weight[:C]
	for i := lo; i < hi; i++ {
		x := t.inp[i*C : (i+1)*C]
		dy := t.dout[i*C : (i+1)*C]
		dx := t.dinp[i*C : (i+1)*C]
		m, s := t.mean[i], t.rstd[i]
		// dx = s·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w.
		var gMean, gxMean float32
		for j, v := range x {
			g := dy[j] * w[j]
			gMean += g
			gxMean += g * (v - m) * s
		}
		gMean /= float32(C)
		gxMean /= float32(C)
		for j, v := range x {
			xh := (v - m) * s
			dx[j] += s * (dy[j]*w[j] - gMean - xh*gxMean)
		}
	}
}

// Run computes dweight and dbias for columns [lo, hi).
func (t *layerNormBwdColTask) Run(lo, hi int) {
	C := t.C
	dw, db := t.dweight[lo:hi], t.dbias[lo:hi]
	for i := 0; i < t.N; i++ {
		x := t.inp[i*C+lo : i*C+hi]
		dy := t.dout[i*C+lo : i*C+hi]
		m, s := t.mean[i], t.rstd[i]
		for j, v := range x {
			dw[j] += dy[j] * (v - m) * s
			db[j] += dy[j]
		}
	}
}
