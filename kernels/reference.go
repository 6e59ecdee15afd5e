package kernels

import "math"

// This file holds the deliberately simple reference kernels that the
// optimised ones are tested against: plain loops, float64 accumulation, no
// blocking, no threads, no assembly. They share the shapes and the
// accumulate-into-gradients contract of the kernels they mirror.

// NaiveLinearForward is the reference for LinearForward.
func NaiveLinearForward(out, inp, weight, bias []float32, BT, C, OC int) {
	for r := 0; r < BT; r++ {
		for o := 0; o < OC; o++ {
			var s float64
			if bias != nil {
				s = float64(bias[o])
			}
			for c := 0; c < C; c++ {
				s += float64(inp[r*C+c]) * float64(weight[o*C+c])
			}
			out[r*OC+o] = float32(s)
		}
	}
}

// NaiveLinearBackward is the reference for LinearBackward.
func NaiveLinearBackward(dinp, dweight, dbias, dout, inp, weight []float32, BT, C, OC int) {
	for r := 0; r < BT; r++ {
		for c := 0; c < C && dinp != nil; c++ {
			var s float64
			for o := 0; o < OC; o++ {
				s += float64(dout[r*OC+o]) * float64(weight[o*C+c])
			}
			dinp[r*C+c] += float32(s)
		}
	}
	for o := 0; o < OC; o++ {
		for c := 0; c < C; c++ {
			var s float64
			for r := 0; r < BT; r++ {
				s += float64(dout[r*OC+o]) * float64(inp[r*C+c])
			}
			dweight[o*C+c] += float32(s)
		}
		if dbias != nil {
			var s float64
			for r := 0; r < BT; r++ {
				s += float64(dout[r*OC+o])
			}
			dbias[o] += float32(s)
		}
	}
}

// NaiveLayerNormForward is the reference for LayerNormForward.
func NaiveLayerNormForward(out, mean, rstd, inp, weight, bias []float32, N, C int) {
	for i := 0; i < N; i++ {
		x := inp[i*C : (i+1)*C]
		var m, v float64
		for _, a := range x {
			m += float64(a)
		}
		m /= float64(C)
		for _, a := range x {
			v += (float64(a) - m) * (float64(a) - m)
		}
		v /= float64(C)
		s := 1 / math.Sqrt(v+LayerNormEps)
		for c, a := range x {
			out[i*C+c] = float32((float64(a)-m)*s*float64(weight[c]) + float64(bias[c]))
		}
		mean[i], rstd[i] = float32(m), float32(s)
	}
}

// NaiveLayerNormBackward is the reference for LayerNormBackward.
func NaiveLayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	for i := 0; i < N; i++ {
		m, s := float64(mean[i]), float64(rstd[i])
		var gm, gxm float64
		for c := 0; c < C; c++ {
			xh := (float64(inp[i*C+c]) - m) * s
			g := float64(dout[i*C+c]) * float64(weight[c])
			gm += g
			gxm += g * xh
			dweight[c] += float32(float64(dout[i*C+c]) * xh)
			dbias[c] += dout[i*C+c]
		}
		gm /= float64(C)
		gxm /= float64(C)
		for c := 0; c < C; c++ {
			xh := (float64(inp[i*C+c]) - m) * s
			g := float64(dout[i*C+c]) * float64(weight[c])
			dinp[i*C+c] += float32(s * (g - gm - xh*gxm))
		}
	}
}

// NaiveGeluForward is the reference for GeluForward (math.Tanh in float64).
func NaiveGeluForward(out, inp []float32) {
	for i, x := range inp {
		xf := float64(x)
		out[i] = float32(0.5 * xf * (1 + math.Tanh(geluC*(xf+geluK*xf*xf*xf))))
	}
}

// NaiveGeluBackward is the reference for GeluBackward.
func NaiveGeluBackward(dinp, inp, dout []float32) {
	for i, x := range inp {
		xf := float64(x)
		th := math.Tanh(geluC * (xf + geluK*xf*xf*xf))
		sech2 := 1 - th*th
		d := 0.5*(1+th) + 0.5*xf*sech2*geluC*(1+3*geluK*xf*xf)
		dinp[i] += float32(float64(dout[i]) * d)
	}
}

// NaiveAttentionForward is the reference for AttentionForward.
func NaiveAttentionForward(out, att, qkv []float32, B, T, C, NH int) {
	hs := C / NH
	scale := 1 / math.Sqrt(float64(hs))
	row := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			a := att[(b*NH+h)*T*T:]
			for i := 0; i < T; i++ {
				maxv := math.Inf(-1)
				for j := 0; j <= i; j++ {
					var s float64
					for c := 0; c < hs; c++ {
						s += float64(qkv[(b*T+i)*3*C+h*hs+c]) * float64(qkv[(b*T+j)*3*C+C+h*hs+c])
					}
					row[j] = s * scale
					maxv = math.Max(maxv, row[j])
				}
				var sum float64
				for j := 0; j <= i; j++ {
					row[j] = math.Exp(row[j] - maxv)
					sum += row[j]
				}
				for j := 0; j < T; j++ {
					p := 0.0
					if j <= i {
						p = row[j] / sum
					}
					a[i*T+j] = float32(p)
				}
				for c := 0; c < hs; c++ {
					var s float64
					for j := 0; j <= i; j++ {
						s += float64(a[i*T+j]) * float64(qkv[(b*T+j)*3*C+2*C+h*hs+c])
					}
					out[(b*T+i)*C+h*hs+c] = float32(s)
				}
			}
		}
	}
}

// NaiveAttentionBackward is the reference for AttentionBackward.
func NaiveAttentionBackward(dqkv, dout, qkv, att []float32, B, T, C, NH int) {
	hs := C / NH
	scale := 1 / math.Sqrt(float64(hs))
	datt := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			a := att[(b*NH+h)*T*T:]
			qi := func(t, c int) int { return (b*T+t)*3*C + h*hs + c }
			for i := 0; i < T; i++ {
				var dot float64
				for j := 0; j <= i; j++ {
					var s float64
					for c := 0; c < hs; c++ {
						s += float64(dout[(b*T+i)*C+h*hs+c]) * float64(qkv[qi(j, 2*C+c)])
						dqkv[qi(j, 2*C+c)] += float32(float64(a[i*T+j]) * float64(dout[(b*T+i)*C+h*hs+c]))
					}
					datt[j] = s
					dot += s * float64(a[i*T+j])
				}
				for j := 0; j <= i; j++ {
					ds := float64(a[i*T+j]) * (datt[j] - dot) * scale
					for c := 0; c < hs; c++ {
						dqkv[qi(i, c)] += float32(ds * float64(qkv[qi(j, C+c)]))
						dqkv[qi(j, C+c)] += float32(ds * float64(qkv[qi(i, c)]))
					}
				}
			}
		}
	}
}

// NaiveSoftmaxCrossEntropyForward is the reference for
// SoftmaxCrossEntropyForward.
func NaiveSoftmaxCrossEntropyForward(losses, probs, logits []float32, targets []int32, N, V int) float32 {
	var total float64
	var n int
	for i := 0; i < N; i++ {
		x := logits[i*V : (i+1)*V]
		maxv := math.Inf(-1)
		for _, v := range x {
			maxv = math.Max(maxv, float64(v))
		}
		var sum float64
		for _, v := range x {
			sum += math.Exp(float64(v) - maxv)
		}
		for j, v := range x {
			probs[i*V+j] = float32(math.Exp(float64(v)-maxv) / sum)
		}
		losses[i] = 0
		if t := targets[i]; t >= 0 {
			losses[i] = float32(math.Log(sum) - (float64(x[t]) - maxv))
			total += float64(losses[i])
			n++
		}
	}
	if n == 0 {
		return 0
	}
	return float32(total / float64(n))
}

// NaiveGradNorm is the reference for GradNorm.
func NaiveGradNorm(grads []float32) float32 {
	var s float64
	for _, g := range grads {
		s += float64(g) * float64(g)
	}
	return float32(math.Sqrt(s))
}

// NaiveAdamW is the reference for AdamW, in float64.
func NaiveAdamW(params, grads, m, v []float32, hp AdamWParams) {
	b1, b2 := float64(hp.Beta1), float64(hp.Beta2)
	bc1 := 1 - math.Pow(b1, float64(hp.Step))
	bc2 := 1 - math.Pow(b2, float64(hp.Step))
	for i := range params {
		g := float64(grads[i])
		mi := b1*float64(m[i]) + (1-b1)*g
		vi := b2*float64(v[i]) + (1-b2)*g*g
		m[i], v[i] = float32(mi), float32(vi)
		p := float64(params[i]) * (1 - float64(hp.LR)*float64(hp.WeightDecay))
		p -= float64(hp.LR) / bc1 * mi / (math.Sqrt(vi)/math.Sqrt(bc2) + float64(hp.Eps))
		params[i] = float32(p)
	}
}
