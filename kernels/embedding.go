package kernels

// EmbeddingForward writes the token embedding without positions (models
// with rotary positions, such as Llama):
//
//	out    (N, C)  overwritten: wte[tokens[i]]
//	tokens (N)     each in [0, V)
//	wte    (V, C)
func EmbeddingForward(out []float32, tokens []int32, wte []float32, N, C int) {
	need("EmbeddingForward out", out, N*C)
	needInts("EmbeddingForward tokens", tokens, N)
	V := len(wte) / C
	for i, tok := range tokens[:N] {
		if tok < 0 || int(tok) >= V {
			panic("kernels: EmbeddingForward: token out of range")
		}
		copy(out[i*C:(i+1)*C], wte[int(tok)*C:int(tok+1)*C])
	}
}

// EmbeddingBackward adds dout (N, C) into the rows of dwte (V, C) named by
// tokens. It runs serially, in position order, so that repeated tokens
// accumulate deterministically.
func EmbeddingBackward(dwte, dout []float32, tokens []int32, N, C int) {
	need("EmbeddingBackward dout", dout, N*C)
	needInts("EmbeddingBackward tokens", tokens, N)
	V := len(dwte) / C
	for i, tok := range tokens[:N] {
		if tok < 0 || int(tok) >= V {
			panic("kernels: EmbeddingBackward: token out of range")
		}
		d, e := dout[i*C:(i+1)*C], dwte[int(tok)*C:int(tok+1)*C]
		for c, g := range d {
			e[c] += g
		}
	}
}
