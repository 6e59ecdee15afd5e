package model

import "fmt"

// A Param is one named tensor inside the flat parameter buffer.
type Param struct {
	Name   string // Hugging Face name, e.g. "h.0.attn.c_attn.weight" (GPT-2), "model.layers.0.self_attn.q_proj.weight" (Llama)
	Shape  []int  // in braid's layout: linear weights are (out, in)
	Offset int    // first element in the flat buffer
	Size   int    // elements
	Decay  bool   // whether AdamW applies weight decay (matrices only)
	Linear bool   // a linear weight: Hugging Face's Conv1D stores it transposed, (in, out)
}

// Layout lists every parameter of a model with this config in flat-buffer
// order: wte, wpe, then each block's parameters layer by layer, then ln_f
// (the Llama family: see llamaLayout). Blocks are contiguous so that a
// block's gradients form one bucket, and the backward pass finishes them
// last layer first.
func (c Config) Layout() []Param {
	if c.llamaFamily() {
		return c.llamaLayout()
	}
	var ps []Param
	off := 0
	add := func(name string, decay, linear bool, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		ps = append(ps, Param{Name: name, Shape: shape, Offset: off, Size: n, Decay: decay, Linear: linear})
		off += n
	}
	C := c.Dim
	add("wte.weight", true, false, c.Vocab, C)
	add("wpe.weight", true, false, c.Context, C)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("h.%d.", l)
		add(p+"ln_1.weight", false, false, C)
		add(p+"ln_1.bias", false, false, C)
		add(p+"attn.c_attn.weight", true, true, 3*C, C)
		add(p+"attn.c_attn.bias", false, false, 3*C)
		add(p+"attn.c_proj.weight", true, true, C, C)
		add(p+"attn.c_proj.bias", false, false, C)
		add(p+"ln_2.weight", false, false, C)
		add(p+"ln_2.bias", false, false, C)
		add(p+"mlp.c_fc.weight", true, true, 4*C, C)
		add(p+"mlp.c_fc.bias", false, false, 4*C)
		add(p+"mlp.c_proj.weight", true, true, C, 4*C)
		add(p+"mlp.c_proj.bias", false, false, C)
	}
	add("ln_f.weight", false, false, C)
	add("ln_f.bias", false, false, C)
	return ps
}

// NumParams is the length of the flat parameter buffer.
func (c Config) NumParams() int {
	ps := c.Layout()
	last := ps[len(ps)-1]
	return last.Offset + last.Size
}

// blockParams are the views of one transformer block's tensors inside a flat
// buffer (parameters or gradients).
type blockParams struct {
	ln1w, ln1b         []float32 // (C)
	qkvw, qkvb         []float32 // (3C, C), (3C)
	attprojw, attprojb []float32 // (C, C), (C)
	ln2w, ln2b         []float32 // (C)
	fcw, fcb           []float32 // (4C, C), (4C)
	fcprojw, fcprojb   []float32 // (C, 4C), (C)
}

// views are named slices into one flat buffer, in Layout order.
type views struct {
	wte, wpe   []float32 // (V, C), (maxT, C)
	blocks     []blockParams
	lnfw, lnfb []float32 // (C)
	// blockSpan[l] is the [start, end) range of block l in the flat buffer.
	blockSpan [][2]int
}

func makeViews(c Config, flat []float32) views {
	ps := c.Layout()
	get := func(i int) []float32 { return flat[ps[i].Offset : ps[i].Offset+ps[i].Size : ps[i].Offset+ps[i].Size] }
	v := views{wte: get(0), wpe: get(1)}
	i := 2
	for l := 0; l < c.Layers; l++ {
		start := ps[i].Offset
		b := blockParams{
			ln1w: get(i), ln1b: get(i + 1), qkvw: get(i + 2), qkvb: get(i + 3),
			attprojw: get(i + 4), attprojb: get(i + 5), ln2w: get(i + 6), ln2b: get(i + 7),
			fcw: get(i + 8), fcb: get(i + 9), fcprojw: get(i + 10), fcprojb: get(i + 11),
		}
		i += 12
		v.blocks = append(v.blocks, b)
		v.blockSpan = append(v.blockSpan, [2]int{start, ps[i-1].Offset + ps[i-1].Size})
	}
	v.lnfw, v.lnfb = get(i), get(i+1)
	return v
}
