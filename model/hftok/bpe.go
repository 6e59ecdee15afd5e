package hftok

import (
	"hash/maphash"
	"sync/atomic"
	"unicode/utf8"
)

// bpe is a BPE model: Hugging Face's models/bpe with its merge order,
// byte_fallback, unk_token, fuse_unk and ignore_merges. It is read-only
// after newBPE returns, but for its cache.
type bpe struct {
	// byteLevel: pre-tokens are raw bytes and the initial symbols are
	// bytes (byteSym); otherwise pre-tokens are text and the initial
	// symbols are characters looked up in pieces.
	byteLevel bool
	// pieces maps the tokens that a pre-token can be as a whole, in the
	// space pre-tokens are in (raw bytes for byteLevel, text otherwise),
	// to their ids: every token with ignore_merges, else those the merges
	// make of their own characters (keepWhole), single characters
	// included. Encode looks a pre-token up here before it merges.
	pieces  map[string]int32
	byteSym [256]int32 // byteLevel: the id of each byte's character, or -1
	// fallback is the id of each byte's "<0xNN>" token when byte_fallback
	// is on and the vocabulary has all 256 of them... or -1.
	fallback     [256]int32
	byteFallback bool
	unk          int32 // unk_token's id, or -1
	fuseUnk      bool
	ignoreMerges bool
	// merges maps a pair of ids (a<<32 | b) to the merge's rank (high 32
	// bits) and the merged token's id (low 32 bits).
	merges map[uint64]uint64
	// cut, when not 0, is a character before which no merge ever crosses
	// when a different character precedes it (no token of the vocabulary
	// holds another character followed by it): SentencePiece vocabularies'
	// "▁". Long pre-tokens are merged piecewise between such cuts, which
	// gives the same ids (a merge at a cut would make a token that does
	// not exist) in time linear in the pre-token's length.
	cut rune

	// plain makes encode merge every pre-token from scratch: no cuts, no
	// whole-token lookup (but ignore_merges'), no cache. Tests set it to
	// hold the fast route to the plain one.
	plain bool

	// cache memoises word: a direct-mapped table, lock-free, that a new
	// word overwrites. It only remembers a pure function, so it never
	// changes a result, and its size is fixed.
	seed  maphash.Seed
	cache [1 << 16]atomic.Pointer[cachedWord]
}

// cachedWord is one entry of bpe's cache.
type cachedWord struct {
	word string
	ids  []int32
}

// maxCachedWord bounds the words the cache keeps.
const maxCachedWord = 256

// encode appends the ids of one pre-token to dst.
func (m *bpe) encode(dst []int32, p []byte) []int32 {
	if len(p) == 0 {
		return dst
	}
	if m.plain {
		if id, ok := m.pieces[string(p)]; ok && m.ignoreMerges {
			return append(dst, id)
		}
		return m.merge(dst, p)
	}
	if id, ok := m.pieces[string(p)]; ok {
		return append(dst, id)
	}
	if m.cut == 0 || len(p) <= maxCachedWord {
		return m.word(dst, p)
	}
	// Merge between cuts: before each cut character that another one
	// precedes.
	start, prev := 0, rune(-1)
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if r == m.cut && prev != m.cut && i > start {
			dst = m.word(dst, p[start:i])
			start = i
		}
		prev = r
		i += n
	}
	return m.word(dst, p[start:])
}

// keepWhole drops from pieces the tokens that merging their own characters
// does not make (without ignore_merges, such a token is never a pre-token's
// one id), so that encode may look a pre-token up before merging it.
func (m *bpe) keepWhole() {
	if m.ignoreMerges {
		return
	}
	var buf []int32
	for p, id := range m.pieces {
		if utf8.RuneCountInString(p) == 1 && !m.byteLevel {
			continue
		}
		buf = m.merge(buf[:0], []byte(p))
		if len(buf) != 1 || buf[0] != id {
			delete(m.pieces, p)
		}
	}
}

// word appends the ids of one word (a pre-token, or a part of one between
// cuts) to dst, through the cache.
func (m *bpe) word(dst []int32, w []byte) []int32 {
	if len(w) > maxCachedWord {
		return m.merge(dst, w)
	}
	slot := &m.cache[maphash.Bytes(m.seed, w)%uint64(len(m.cache))]
	if e := slot.Load(); e != nil && e.word == string(w) {
		return append(dst, e.ids...)
	}
	n := len(dst)
	dst = m.merge(dst, w)
	slot.Store(&cachedWord{word: string(w), ids: append([]int32(nil), dst[n:]...)})
	return dst
}

// merge appends the ids of word w, merged, to dst.
func (m *bpe) merge(dst []int32, w []byte) []int32 {
	var buf [64]int32
	syms := m.symbols(buf[:0], w)
	if len(syms) <= linearMax {
		syms = m.mergeLinear(syms)
	} else {
		syms = m.mergeHeap(syms)
	}
	return append(dst, syms...)
}

// symbols appends the initial symbols of w to dst, as Hugging Face's
// BPE::merge_word makes them: each character (each byte for byteLevel) is
// its token; one that is not in the vocabulary is its bytes' "<0xNN>"
// tokens with byte_fallback, else unk_token (one for a run of them with
// fuse_unk), else dropped.
func (m *bpe) symbols(dst []int32, w []byte) []int32 {
	unk := false // an unk symbol is pending (fuse_unk joins the next to it)
	for i := 0; i < len(w); {
		var id int32 = -1
		n := 1
		if m.byteLevel {
			id = m.byteSym[w[i]]
		} else {
			_, n = utf8.DecodeRune(w[i:])
			if v, ok := m.pieces[string(w[i:i+n])]; ok {
				id = v
			}
		}
		ch := w[i : i+n]
		i += n
		if id >= 0 {
			if unk {
				dst, unk = append(dst, m.unk), false
			}
			dst = append(dst, id)
			continue
		}
		if m.byteFallback && m.hasFallback(ch) {
			// Hugging Face adds these without first adding a pending unk.
			for _, b := range ch {
				dst = append(dst, m.fallback[b])
			}
			continue
		}
		if m.unk < 0 {
			continue
		}
		if unk && !m.fuseUnk {
			dst = append(dst, m.unk)
		}
		unk = true
	}
	if unk {
		dst = append(dst, m.unk)
	}
	return dst
}

func (m *bpe) hasFallback(ch []byte) bool {
	for _, b := range ch {
		if m.fallback[b] < 0 {
			return false
		}
	}
	return true
}

// rank returns the rank of merging a and b and the merged id, and false
// if no merge joins them.
func (m *bpe) rank(a, b int32) (uint32, int32, bool) {
	v, ok := m.merges[uint64(uint32(a))<<32|uint64(uint32(b))]
	return uint32(v >> 32), int32(uint32(v)), ok
}

// linearMax is the most symbols merge gives mergeLinear, whose time grows
// as n²; longer words go to mergeHeap, n log n.
const linearMax = 48

// noRank is above every rank.
const noRank = ^uint32(0)

// mergeLinear merges syms in place and returns them: again and again the
// pair of lowest rank, the leftmost of equals, as Hugging Face's
// Word::merge_all does with its heap.
func (m *bpe) mergeLinear(syms []int32) []int32 {
	if len(syms) < 2 {
		return syms
	}
	var rbuf [linearMax]uint32
	var nbuf [linearMax]int32
	ranks, next := rbuf[:0], nbuf[:0]
	if len(syms)-1 > linearMax {
		ranks, next = make([]uint32, 0, len(syms)), make([]int32, 0, len(syms))
	}
	ranks, next = ranks[:len(syms)-1], next[:len(syms)-1]
	for i := range ranks {
		ranks[i], next[i] = m.pairRank(syms[i], syms[i+1])
	}
	for {
		best, br := -1, noRank
		for i, r := range ranks {
			if r < br {
				best, br = i, r
			}
		}
		if best < 0 {
			return syms
		}
		syms[best] = next[best]
		syms = append(syms[:best+1], syms[best+2:]...)
		ranks = append(ranks[:best], ranks[best+1:]...)
		next = append(next[:best], next[best+1:]...)
		if best > 0 {
			ranks[best-1], next[best-1] = m.pairRank(syms[best-1], syms[best])
		}
		if best < len(ranks) {
			ranks[best], next[best] = m.pairRank(syms[best], syms[best+1])
		}
	}
}

func (m *bpe) pairRank(a, b int32) (uint32, int32) {
	r, id, ok := m.rank(a, b)
	if !ok {
		return noRank, -1
	}
	return r, id
}

// heapSym is a symbol of mergeHeap's doubly linked list; a symbol merged
// into its left neighbour is dead.
type heapSym struct {
	id         int32
	prev, next int32 // indexes, -1 at the ends
	dead       bool
}

// heapMerge is a candidate merge of the symbol at pos with its right
// neighbour.
type heapMerge struct {
	rank uint32
	pos  int32
	id   int32 // the merged token
}

func (a heapMerge) less(b heapMerge) bool {
	return a.rank < b.rank || a.rank == b.rank && a.pos < b.pos
}

// mergeHeap merges syms as Hugging Face's Word::merge_all does: a heap of
// candidate merges ordered by rank then position; a candidate whose pair
// has changed since it was pushed is dropped when popped.
func (m *bpe) mergeHeap(ids []int32) []int32 {
	if len(ids) < 2 {
		return ids
	}
	syms := make([]heapSym, len(ids))
	var h mergeQueue
	for i, id := range ids {
		syms[i] = heapSym{id: id, prev: int32(i - 1), next: int32(i + 1)}
		if i > 0 {
			if r, nid, ok := m.rank(ids[i-1], id); ok {
				h.push(heapMerge{r, int32(i - 1), nid})
			}
		}
	}
	syms[len(syms)-1].next = -1
	for len(h) > 0 {
		top := h.pop()
		s := &syms[top.pos]
		if s.dead || s.next < 0 {
			continue
		}
		right := &syms[s.next]
		if _, nid, ok := m.rank(s.id, right.id); !ok || nid != top.id {
			continue // stale
		}
		s.id = top.id
		right.dead = true
		s.next = right.next
		if s.next >= 0 {
			syms[s.next].prev = top.pos
		}
		if s.prev >= 0 {
			if r, nid, ok := m.rank(syms[s.prev].id, s.id); ok {
				h.push(heapMerge{r, s.prev, nid})
			}
		}
		if s.next >= 0 {
			if r, nid, ok := m.rank(s.id, syms[s.next].id); ok {
				h.push(heapMerge{r, top.pos, nid})
			}
		}
	}
	ids = ids[:0]
	for _, s := range syms {
		if !s.dead {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// mergeQueue is a binary min-heap of candidate merges.
type mergeQueue []heapMerge

func (q *mergeQueue) push(x heapMerge) {
	*q = append(*q, x)
	h := *q
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !h[i].less(h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func (q *mergeQueue) pop() heapMerge {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		l, small := 2*i+1, i
		if l < len(h) && h[l].less(h[small]) {
			small = l
		}
		if r := l + 1; r < len(h) && h[r].less(h[small]) {
			small = r
		}
		if small == i {
			break
		}
		h[i], h[small] = h[small], h[i]
		i = small
	}
	*q = h
	return top
}
