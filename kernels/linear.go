package kernels

// LinearForward computes out = inp·weightᵀ + bias, the forward pass of a
// linear layer in PyTorch's nn.Linear layout.
//
//	out    (BT, OC)  overwritten
//	inp    (BT, C)
//	weight (OC, C)
//	bias   (OC) or nil
func LinearForward(out, inp, weight, bias []float32, BT, C, OC int) {
	need("LinearForward out", out, BT*OC)
	need("LinearForward inp", inp, BT*C)
	need("LinearForward weight", weight, OC*C)
	if bias == nil {
		Gemm(false, true, BT, OC, C, inp, C, weight, C, out, OC, false)
		return
	}
	need("LinearForward bias", bias, OC)
	for r := 0; r < BT; r++ {
		copy(out[r*OC:(r+1)*OC], bias[:OC])
	}
	Gemm(false, true, BT, OC, C, inp, C, weight, C, out, OC, true)
}

// LinearBackward adds the gradients of a linear layer:
//
//	dinp    (BT, C)  += dout·weight       (skipped when nil)
//	dweight (OC, C)  += doutᵀ·inp
//	dbias   (OC)     += Σ_rows dout       (skipped when nil)
//
// given dout (BT, OC), inp (BT, C) and weight (OC, C). Results do not depend
// on the number of threads.
func LinearBackward(dinp, dweight, dbias, dout, inp, weight []float32, BT, C, OC int) {
	need("LinearBackward dout", dout, BT*OC)
	need("LinearBackward inp", inp, BT*C)
	need("LinearBackward weight", weight, OC*C)
	need("LinearBackward dweight", dweight, OC*C)
	if dinp != nil {
		need("LinearBackward dinp", dinp, BT*C)
		Gemm(false, false, BT, C, OC, dout, OC, weight, C, dinp, C, true)
	}
	Gemm(true, false, OC, C, BT, dout, OC, inp, C, dweight, C, true)
	if dbias != nil {
		need("LinearBackward dbias", dbias, OC)
		ColumnSums(dbias, dout, BT, OC)
	}
}

// ColumnSums adds the column sums of x (rows, cols) into dst (cols). Each
// column is summed over rows in order, so the result does not depend on the
// number of threads.
func ColumnSums(dst, x []float32, rows, cols int) {
	need("ColumnSums dst", dst, cols)
	need("ColumnSums x", x, rows*cols)
	columnSumTasks.run(cols, grainFor(rows), columnSumTask{dst: dst, x: x, rows: rows, cols: cols})
}

type columnSumTask struct {
	dst, x     []float32
	rows, cols int
}

var columnSumTasks taskPool[columnSumTask, *columnSumTask]

func (t *columnSumTask) Run(lo, hi int) {
	dst := t.dst[lo:hi]
	for r := 0; r < t.rows; r++ {
		row := t.x[r*t.cols+lo : r*t.cols+hi]
		for j, v := range row {
			dst[j] += v
		}
	}
}
