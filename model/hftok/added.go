package hftok

import (
	"bytes"
	"cmp"
	"slices"
	"unicode"
	"unicode/utf8"
)

// addedToken is one of tokenizer.json's added_tokens.
type addedToken struct {
	id      int32
	content string // what it matches: the content, normalized for a normalized token
	special bool
	// Hugging Face's AddedToken options: match only between non-word
	// characters (single_word), and take the whitespace before (lstrip) or
	// after (rstrip) the match into it.
	singleWord, lstrip, rstrip bool
}

// addedSet finds added tokens in text, leftmost and then longest first, as
// Hugging Face's AddedVocabulary does with its Aho-Corasick automaton.
type addedSet struct {
	tokens []addedToken // longest content first
	first  [256][]int   // indexes into tokens, by first byte
	// only is the first byte of every token when they share one ('<' in
	// most tokenizers), which the search skips to with bytes.IndexByte.
	only int
}

func newAddedSet(tokens []addedToken) *addedSet {
	if len(tokens) == 0 {
		return nil
	}
	a := &addedSet{tokens: slices.Clone(tokens)}
	slices.SortStableFunc(a.tokens, func(x, y addedToken) int { return cmp.Compare(len(y.content), len(x.content)) })
	a.only = int(a.tokens[0].content[0])
	for i, t := range a.tokens {
		a.first[t.content[0]] = append(a.first[t.content[0]], i)
		if int(t.content[0]) != a.only {
			a.only = -1
		}
	}
	return a
}

// segment is a part of text that split cuts: an added token (id ≥ 0) or
// text to encode (id < 0).
type segment struct {
	start, end int
	id         int32
}

// split appends to dst the segments of s: the matches of added tokens and
// the text between them, which may be empty. Special tokens are skipped
// unless special is set, as Hugging Face's encode_special_tokens does: a
// special token that is the longest match at a position hides the shorter
// ones there.
func (a *addedSet) split(dst []segment, s []byte, special bool) []segment {
	if a == nil {
		return append(dst, segment{0, len(s), -1})
	}
	n0, prev := len(dst), 0 // prev: where the text not yet taken starts
	for i := 0; i < len(s); {
		if a.only >= 0 {
			k := bytes.IndexByte(s[i:], byte(a.only))
			if k < 0 {
				break
			}
			i += k
		}
		t, ok := a.longest(s[i:])
		if !ok {
			i++
			continue
		}
		start, stop := i, i+len(t.content)
		if t.special && !special || t.singleWord && !alone(s, start, stop) {
			i = stop // the search goes on after the match, which stays text
			continue
		}
		if t.lstrip {
			start = max(prev, lastNonSpace(s[:start]))
		}
		if t.rstrip {
			stop += firstNonSpace(s[stop:])
		}
		if start > prev {
			dst = append(dst, segment{prev, start, -1})
		}
		dst = append(dst, segment{start, stop, t.id})
		prev, i = stop, stop
	}
	if prev < len(s) || len(dst) == n0 {
		dst = append(dst, segment{prev, len(s), -1})
	}
	return dst
}

// longest returns the longest added token at the start of s.
func (a *addedSet) longest(s []byte) (addedToken, bool) {
	for _, k := range a.first[s[0]] {
		if t := a.tokens[k]; bytes.HasPrefix(s, []byte(t.content)) {
			return t, true
		}
	}
	return addedToken{}, false
}

// alone reports whether s[start:stop] has no word character right before
// or after it (Hugging Face's single_word: \w at neither side).
func alone(s []byte, start, stop int) bool {
	if r, n := utf8.DecodeLastRune(s[:start]); n > 0 && isWord(r) {
		return false
	}
	if r, n := utf8.DecodeRune(s[stop:]); n > 0 && isWord(r) {
		return false
	}
	return true
}

// isWord is the regex class \w: letters, marks, decimal digits and
// connector punctuation, and the joiners.
func isWord(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) || unicode.Is(unicode.Nl, r) ||
		unicode.Is(unicode.Pc, r) || r == 0x200C || r == 0x200D
}

// lastNonSpace returns where the whitespace at the end of s starts.
func lastNonSpace(s []byte) int {
	return len(bytes.TrimRightFunc(s, unicode.IsSpace))
}

// firstNonSpace returns the length of the whitespace at the start of s.
func firstNonSpace(s []byte) int {
	return len(s) - len(bytes.TrimLeftFunc(s, unicode.IsSpace))
}
