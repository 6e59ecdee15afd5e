package hftok

// ParsePlain is Parse of a tokenizer that encodes by the plain route: the
// general pre-tokenizer rather than the inlined one, and every pre-token
// merged from scratch (no cuts, no whole-token lookup, no cache), so that
// tests can hold the fast route to it.
func ParsePlain(tokenizerJSON, configJSON []byte) (*Tokenizer, error) {
	t, err := Parse(tokenizerJSON, configJSON)
	if err != nil {
		return nil, err
	}
	t.fast, t.model.plain = nil, true
	return t, nil
}

// MergeStrategies returns the ids of word w merged by mergeLinear and by
// mergeHeap.
func (t *Tokenizer) MergeStrategies(w []byte) (linear, heap []int32) {
	m := t.model
	return m.mergeLinear(m.symbols(nil, w)), m.mergeHeap(m.symbols(nil, w))
}

// MergeNaive returns the ids of word w merged the simplest way: again and
// again, look at every pair, merge the leftmost of lowest rank.
func (t *Tokenizer) MergeNaive(w []byte) []int32 {
	m := t.model
	syms := m.symbols(nil, w)
	for {
		best, br, bid := -1, noRank, int32(0)
		for i := 0; i+1 < len(syms); i++ {
			if r, id, ok := m.rank(syms[i], syms[i+1]); ok && r < br {
				best, br, bid = i, r, id
			}
		}
		if best < 0 {
			return syms
		}
		syms = append(append(syms[:best:best], bid), syms[best+2:]...)
	}
}
