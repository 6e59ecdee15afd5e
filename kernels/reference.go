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
	NaiveAttentionForwardGQA(out, att, qkv, B, T, NH, NH, C/NH, 0)
}

// NaiveAttentionBackward is the reference for AttentionBackward.
func NaiveAttentionBackward(dqkv, dout, qkv, att []float32, B, T, C, NH int) {
	NaiveAttentionBackwardGQA(dqkv, dout, qkv, att, B, T, NH, NH, C/NH, 0)
}

// NaiveAttentionForwardGQA is the reference for AttentionForwardGQA.
func NaiveAttentionForwardGQA(out, att, qkv []float32, B, T, NH, KVH, hd, window int) {
	W, C, group := (NH+2*KVH)*hd, NH*hd, NH/KVH
	scale := 1 / math.Sqrt(float64(hd))
	row := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			kh := h / group
			q := func(t, c int) float64 { return float64(qkv[(b*T+t)*W+h*hd+c]) }
			k := func(t, c int) float64 { return float64(qkv[(b*T+t)*W+C+kh*hd+c]) }
			v := func(t, c int) float64 { return float64(qkv[(b*T+t)*W+C+KVH*hd+kh*hd+c]) }
			a := att[(b*NH+h)*T*T:]
			for i := 0; i < T; i++ {
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1)
				}
				maxv := math.Inf(-1)
				for j := lo; j <= i; j++ {
					var s float64
					for c := 0; c < hd; c++ {
						s += q(i, c) * k(j, c)
					}
					row[j] = s * scale
					maxv = math.Max(maxv, row[j])
				}
				var sum float64
				for j := lo; j <= i; j++ {
					row[j] = math.Exp(row[j] - maxv)
					sum += row[j]
				}
				for j := 0; j < T; j++ {
					p := 0.0
					if lo <= j && j <= i {
						p = row[j] / sum
					}
					a[i*T+j] = float32(p)
				}
				for c := 0; c < hd; c++ {
					var s float64
					for j := lo; j <= i; j++ {
						s += float64(a[i*T+j]) * v(j, c)
					}
					out[(b*T+i)*C+h*hd+c] = float32(s)
				}
			}
		}
	}
}

// NaiveAttentionBackwardGQA is the reference for AttentionBackwardGQA
// (it needs no scratch).
func NaiveAttentionBackwardGQA(dqkv, dout, qkv, att []float32, B, T, NH, KVH, hd, window int) {
	W, C, group := (NH+2*KVH)*hd, NH*hd, NH/KVH
	scale := 1 / math.Sqrt(float64(hd))
	datt := make([]float64, T)
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			kh := h / group
			qi := func(t, c int) int { return (b*T+t)*W + h*hd + c }
			ki := func(t, c int) int { return (b*T+t)*W + C + kh*hd + c }
			vi := func(t, c int) int { return (b*T+t)*W + C + KVH*hd + kh*hd + c }
			a := att[(b*NH+h)*T*T:]
			for i := 0; i < T; i++ {
				lo := 0
				if window > 0 {
					lo = max(0, i-window+1)
				}
				do := func(c int) float64 { return float64(dout[(b*T+i)*C+h*hd+c]) }
				var dot float64
				for j := lo; j <= i; j++ {
					var s float64
					for c := 0; c < hd; c++ {
						s += do(c) * float64(qkv[vi(j, c)])
						dqkv[vi(j, c)] += float32(float64(a[i*T+j]) * do(c))
					}
					datt[j] = s
					dot += s * float64(a[i*T+j])
				}
				for j := lo; j <= i; j++ {
					ds := float64(a[i*T+j]) * (datt[j] - dot) * scale
					for c := 0; c < hd; c++ {
						dqkv[qi(i, c)] += float32(ds * float64(qkv[ki(j, c)]))
						dqkv[ki(j, c)] += float32(ds * float64(qkv[qi(i, c)]))
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

// NaiveRMSNormForward is the reference for RMSNormForward.
func NaiveRMSNormForward(out, rstd, inp, weight []float32, N, C int, eps float32) {
	for i := 0; i < N; i++ {
		x := inp[i*C : (i+1)*C]
		var ms float64
		for _, a := range x {
			ms += float64(a) * float64(a)
		}
		s := 1 / math.Sqrt(ms/float64(C)+float64(eps))
		for c, a := range x {
			out[i*C+c] = float32(float64(a) * s * float64(weight[c]))
		}
		rstd[i] = float32(s)
	}
}

// NaiveRMSNormBackward is the reference for RMSNormBackward.
func NaiveRMSNormBackward(dinp, dweight, dout, inp, weight, rstd []float32, N, C int) {
	for i := 0; i < N; i++ {
		s := float64(rstd[i])
		var gx float64
		for c := 0; c < C; c++ {
			gx += float64(dout[i*C+c]) * float64(weight[c]) * float64(inp[i*C+c])
		}
		for c := 0; c < C; c++ {
			x, dy := float64(inp[i*C+c]), float64(dout[i*C+c])
			dinp[i*C+c] += float32(s * (dy*float64(weight[c]) - x*s*s*gx/float64(C)))
			if dweight != nil {
				dweight[c] += float32(dy * x * s)
			}
		}
	}
}

// NaiveRoPEForward is the reference for RoPEForward, written as Hugging
// Face writes it: x·cos + rotate_half(x)·sin, with rotate_half(x) =
// [−x2, x1] for the halves x1, x2 of a head and cos, sin repeated over
// both halves.
func NaiveRoPEForward(x, cos, sin []float32, B, T, nh, hd, ld int) {
	half := hd / 2
	rot := make([]float64, hd)
	for r := 0; r < B*T; r++ {
		t := r % T
		for h := 0; h < nh; h++ {
			head := x[r*ld+h*hd : r*ld+(h+1)*hd]
			for j := 0; j < half; j++ {
				rot[j], rot[j+half] = -float64(head[j+half]), float64(head[j])
			}
			for j := 0; j < hd; j++ {
				c, s := float64(cos[t*half+j%half]), float64(sin[t*half+j%half])
				head[j] = float32(float64(head[j])*c + rot[j]*s)
			}
		}
	}
}

// NaiveRoPEBackward is the reference for RoPEBackward: the transpose of
// NaiveRoPEForward's rotation, applied in place.
func NaiveRoPEBackward(dx, cos, sin []float32, B, T, nh, hd, ld int) {
	half := hd / 2
	for r := 0; r < B*T; r++ {
		t := r % T
		for h := 0; h < nh; h++ {
			head := dx[r*ld+h*hd : r*ld+(h+1)*hd]
			for j := 0; j < half; j++ {
				c, s := float64(cos[t*half+j]), float64(sin[t*half+j])
				d1, d2 := float64(head[j]), float64(head[j+half])
				head[j], head[j+half] = float32(d1*c+d2*s), float32(d2*c-d1*s)
			}
		}
	}
}

// NaiveSwiGLUForward is the reference for SwiGLUForward.
func NaiveSwiGLUForward(out, gu []float32, N, H int) {
	for i := 0; i < N; i++ {
		for j := 0; j < H; j++ {
			g, u := float64(gu[2*i*H+j]), float64(gu[(2*i+1)*H+j])
			out[i*H+j] = float32(g / (1 + math.Exp(-g)) * u)
		}
	}
}

// NaiveSwiGLUBackward is the reference for SwiGLUBackward.
func NaiveSwiGLUBackward(dgu, dout, gu []float32, N, H int) {
	for i := 0; i < N; i++ {
		for j := 0; j < H; j++ {
			g, u, d := float64(gu[2*i*H+j]), float64(gu[(2*i+1)*H+j]), float64(dout[i*H+j])
			s := 1 / (1 + math.Exp(-g))
			dgu[2*i*H+j] += float32(d * u * s * (1 + g*(1-s)))
			dgu[(2*i+1)*H+j] += float32(d * g * s)
		}
	}
}
