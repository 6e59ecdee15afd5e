package kernels

// EncoderForward writes the token + position embedding:
//
//	out    (B, T, C)  overwritten: wte[tokens[b,t]] + wpe[t]
//	tokens (B, T)     each in [0, V)
//	wte    (V, C), wpe (maxT, C) with maxT ≥ T
func EncoderForward(out []float32, tokens []int32, wte, wpe []float32, B, T, C int) {
	need("EncoderForward out", out, B*T*C)
	needInts("EncoderForward tokens", tokens, B*T)
	need("EncoderForward wpe", wpe, T*C)
	V := len(wte) / C
	for i, tok := range tokens[:B*T] {
		if tok < 0 || int(tok) >= V {
			panic("kernels: EncoderForward: token out of range")
		}
		t := i % T
		o, e, p := out[i*C:(i+1)*C], wte[int(tok)*C:int(tok+1)*C], wpe[t*C:(t+1)*C]
		for c := range o {
			o[c] = e[c] + p[c]
		}
	}
}

// EncoderBackward adds dout (B, T, C) into the rows of dwte (V, C) named by
// tokens and into dwpe (maxT, C). It runs serially, in position order, so
// that repeated tokens accumulate deterministically.
func EncoderBackward(dwte, dwpe, dout []float32, tokens []int32, B, T, C int) {
	need("EncoderBackward dout", dout, B*T*C)
	needInts("EncoderBackward tokens", tokens, B*T)
	need("EncoderBackward dwpe", dwpe, T*C)
	V := len(dwte) / C
	for i, tok := range tokens[:B*T] {
		if tok < 0 || int(tok) >= V {
			panic("kernels: EncoderBackward: token out of range")
		}
		t := i % T
		d, e, p := dout[i*C:(i+1)*C], dwte[int(tok)*C:int(tok+1)*C], dwpe[t*C:(t+1)*C]
		for c, g := range d {
			e[c] += g
			p[c] += g
		}
	}
}

// ResidualForward writes out = a + b elementwise (all the same length; out
// may alias a or b).
func ResidualForward(out, a, b []float32) {
	need("ResidualForward out", out, len(a))
	need("ResidualForward b", b, len(a))
	addTasks.run(len(a), 8192, addTask{out: out, a: a, b: b})
}

// AddInto adds src into dst elementwise (dst += src). The backward pass of a
// residual connection is AddInto for each branch.
func AddInto(dst, src []float32) {
	need("AddInto dst", dst, len(src))
	addTasks.run(len(src), 8192, addTask{out: dst, a: dst, b: src})
}

type addTask struct{ out, a, b []float32 }

var addTasks taskPool[addTask, *addTask]

func (t *addTask) Run(lo, hi int) {
	o, a, b := t.out[lo:hi], t.a[lo:hi], t.b[lo:hi]
	for i := range o {
		o[i] = a[i] + b[i]
	}
}
