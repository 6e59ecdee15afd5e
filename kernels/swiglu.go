package kernels

// SwiGLUForward is the gated activation of Llama's MLP,
// silu(gate)·up with silu(x) = x·σ(x):
//
//	out (N, H)   overwritten
//	gu  (N, 2H)  each row [gate (H) | up (H)]: the gate_proj and up_proj
//	             outputs side by side, as one matrix multiply with the two
//	             weights stacked writes them
func SwiGLUForward(out, gu []float32, N, H int) {
	need("SwiGLUForward out", out, N*H)
	need("SwiGLUForward gu", gu, N*2*H)
	swigluFwdTasks.run(N, grainFor(8*H), swigluTask{out: out, gu: gu, H: H})
}

// SwiGLUBackward adds the gradients of SwiGLUForward into dgu (N, 2H),
// given dout (N, H) and the forward pass's gu (N, 2H):
//
//	dgate += dout·up·σ(gate)·(1 + gate·(1 − σ(gate)))
//	dup   += dout·silu(gate)
func SwiGLUBackward(dgu, dout, gu []float32, N, H int) {
	need("SwiGLUBackward dgu", dgu, N*2*H)
	need("SwiGLUBackward dout", dout, N*H)
	need("SwiGLUBackward gu", gu, N*2*H)
	swigluBwdTasks.run(N, grainFor(12*H), swigluBwdTask{out: dout, gu: gu, dgu: dgu, H: H})
}

type swigluTask struct {
	out, gu, dgu []float32 // out: dout in the backward pass
	H            int
}

// swigluBwdTask shares swigluTask's fields.
type swigluBwdTask swigluTask

var (
	swigluFwdTasks taskPool[swigluTask, *swigluTask]
	swigluBwdTasks taskPool[swigluBwdTask, *swigluBwdTask]
)

// sigmoid is σ(x) = 1/(1 + e^(−x)) with Exp32.
func sigmoid(x float32) float32 { return 1 / (1 + Exp32(-x)) }

// Run computes rows [lo, hi).
func (t *swigluTask) Run(lo, hi int) {
	H := t.H
	for i := lo; i < hi; i++ {
		g, u := t.gu[2*i*H:(2*i+1)*H], t.gu[(2*i+1)*H:(2*i+2)*H]
		o := t.out[i*H : (i+1)*H]
		for j, x := range g {
			o[j] = x * sigmoid(x) * u[j]
		}
	}
}

// Run computes rows [lo, hi).
func (t *swigluBwdTask) Run(lo, hi int) {
	H := t.H
	for i := lo; i < hi; i++ {
		g, u := t.gu[2*i*H:(2*i+1)*H], t.gu[(2*i+1)*H:(2*i+2)*H]
		dg, du := t.dgu[2*i*H:(2*i+1)*H], t.dgu[(2*i+1)*H:(2*i+2)*H]
		d := t.out[i*H : (i+1)*H]
		for j, x := range g {
			s := sigmoid(x)
			dg[j] += d[j] * u[j] * s * (1 + x*(1-s))
			du[j] += d[j] * x * s
		}
	}
}
