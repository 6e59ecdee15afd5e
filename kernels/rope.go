package kernels

// RoPEForward applies rotary position embeddings in place, in Hugging Face
// Llama's rotate_half convention: channel j < hd/2 of a head is paired
// with channel j + hd/2, and the pair is rotated by angle θ_j·t at
// position t:
//
//	x[j]      ← x[j]·cos − x[j+hd/2]·sin
//	x[j+hd/2] ← x[j+hd/2]·cos + x[j]·sin
//
//	x    (B, T, ld)     rows of ld floats; the first nh·hd of each row are
//	                    nh heads of hd channels (hd even) that are rotated,
//	                    the rest is left alone; row b·T + t is at position t
//	cos  (≥ T, hd/2)    cos(θ_j·t) at [t, j]
//	sin  (≥ T, hd/2)    sin(θ_j·t)
//
// Query and key heads that sit side by side (qkv's [q | k | v] layout) are
// rotated by one call with nh = query heads + key heads.
func RoPEForward(x, cos, sin []float32, B, T, nh, hd, ld int) {
	checkRoPE("RoPEForward", B, T, nh, hd, ld)
	need("RoPEForward x", x, (B*T-1)*ld+nh*hd)
	need("RoPEForward cos", cos, T*hd/2)
	need("RoPEForward sin", sin, T*hd/2)
	ropeTasks.run(B*T, grainFor(3*nh*hd), ropeTask{x: x, cos: cos, sin: sin, T: T, nh: nh, hd: hd, ld: ld, dir: 1})
}

// RoPEBackward turns, in place, the gradient with respect to RoPEForward's
// output into the gradient with respect to its input: each pair is rotated
// back by −θ_j·t (the rotation's transpose). Arguments are RoPEForward's,
// with dx in place of x. Unlike most backward kernels it overwrites rather
// than accumulates: the rotation is applied to the gradient where it is.
func RoPEBackward(dx, cos, sin []float32, B, T, nh, hd, ld int) {
	checkRoPE("RoPEBackward", B, T, nh, hd, ld)
	need("RoPEBackward dx", dx, (B*T-1)*ld+nh*hd)
	need("RoPEBackward cos", cos, T*hd/2)
	need("RoPEBackward sin", sin, T*hd/2)
	ropeTasks.run(B*T, grainFor(3*nh*hd), ropeTask{x: dx, cos: cos, sin: sin, T: T, nh: nh, hd: hd, ld: ld, dir: -1})
}

func checkRoPE(name string, B, T, nh, hd, ld int) {
	if B <= 0 || T <= 0 || nh <= 0 || hd <= 0 || hd%2 != 0 || ld < nh*hd {
		panic("kernels: " + name + ": need positive B, T, nh, an even hd and ld ≥ nh·hd")
	}
}

type ropeTask struct {
	x, cos, sin   []float32
	T, nh, hd, ld int
	dir           float32 // 1: rotate by θ·t (RoPEForward), −1: back (RoPEBackward)
}

var ropeTasks taskPool[ropeTask, *ropeTask]

// Run rotates rows [lo, hi) by dir·θ·t.
func (t *ropeTask) Run(lo, hi int) {
	half := t.hd / 2
	for r := lo; r < hi; r++ {
		pos := r % t.T
		cs, sn := t.cos[pos*half:(pos+1)*half], t.sin[pos*half:(pos+1)*half]
		row := t.x[r*t.ld:]
		for h := range t.nh {
			a := row[h*t.hd : h*t.hd+half]
			b := row[h*t.hd+half : (h+1)*t.hd]
			for j, c := range cs {
				s := t.dir * sn[j]
				x1, x2 := a[j], b[j]
				a[j] = x1*c - x2*s
				b[j] = x2*c + x1*s
			}
		}
	}
}
