package hftok

import (
	"bytes"
	"unicode"
	"unicode/utf8"

	"github.com/braidml/braid/model/internal/pretok"
	"github.com/dlclark/regexp2"
)

// A preTokenizer cuts text into pre-tokens, which the model encodes one by
// one. atStart reports whether p begins the text (Metaspace's
// prepend_scheme "first" prepends only there). split calls emit with each
// non-empty pre-token in order; emit may keep nothing of what it is given.
type preTokenizer interface {
	split(p []byte, atStart bool, emit func(p []byte, atStart bool))
}

// sequencePre is the Sequence pre-tokenizer: each one splits the pieces of
// the one before.
type sequencePre []preTokenizer

func (s sequencePre) split(p []byte, atStart bool, emit func([]byte, bool)) {
	if len(s) == 0 {
		emit(p, atStart)
		return
	}
	s[0].split(p, atStart, func(q []byte, at bool) { s[1:].split(q, at, emit) })
}

// A pattern finds the matches of a Split or Replace pattern.
type pattern struct {
	literal []byte          // a String pattern
	tile    pretok.Func     // a Regex pattern package pretok implements
	re      *regexp2.Regexp // any other Regex pattern
}

// newRegex compiles a Regex pattern. The patterns of GPT-2, Llama 3 and
// Qwen2 are matched by package pretok, which is about ten times faster;
// others by regexp2, whose syntax is .NET's rather than Oniguruma's: most
// tokenizer patterns mean the same in both.
func newRegex(expr string) (*pattern, error) {
	if f := pretok.ForPattern(expr); f != nil {
		return &pattern{tile: f}, nil
	}
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, err
	}
	return &pattern{re: re}, nil
}

// find appends the spans [start, end) of the leftmost, non-overlapping
// matches in s, which is valid UTF-8, to dst.
func (pt *pattern) find(dst [][2]int, s []byte) [][2]int {
	if pt.literal != nil {
		if len(pt.literal) == 0 {
			return dst
		}
		for i := 0; ; {
			k := bytes.Index(s[i:], pt.literal)
			if k < 0 {
				return dst
			}
			dst = append(dst, [2]int{i + k, i + k + len(pt.literal)})
			i += k + len(pt.literal)
		}
	}
	if pt.tile != nil {
		for i := 0; i < len(s); {
			n := pt.tile(s[i:])
			dst = append(dst, [2]int{i, i + n})
			i += n
		}
		return dst
	}
	runes := make([]rune, 0, len(s))
	at := make([]int, 0, len(s)+1) // byte offset of each rune
	for i, r := range string(s) {
		runes = append(runes, r)
		at = append(at, i)
	}
	at = append(at, len(s))
	m, err := pt.re.FindRunesMatch(runes)
	for err == nil && m != nil {
		dst = append(dst, [2]int{at[m.Index], at[m.Index+m.Length]})
		m, err = pt.re.FindNextMatch(m)
	}
	return dst
}

// validRuns calls fn with each maximal run of valid UTF-8 in p and each
// byte between them, in order, and the offset of each in p.
func validRuns(p []byte, fn func(off int, run []byte, valid bool)) {
	for off := 0; off < len(p); {
		if n := pretok.ValidPrefix(p[off:]); n > 0 {
			fn(off, p[off:off+n], true)
			off += n
			continue
		}
		fn(off, p[off:off+1], false)
		off++
	}
}

// Split's behaviours (Hugging Face's SplitDelimiterBehavior).
const (
	isolated           = iota // a match is a piece of its own
	removed                   // a match is dropped
	mergedWithPrevious        // a match ends the piece before it
	mergedWithNext            // a match starts the piece after it
	contiguous                // consecutive matches are one piece
)

var behaviors = map[string]int{
	"Isolated": isolated, "Removed": removed, "MergedWithPrevious": mergedWithPrevious,
	"MergedWithNext": mergedWithNext, "Contiguous": contiguous,
}

// span is a piece of text that Split cuts: matched or not.
type span struct {
	start, end int
	match      bool
}

// splitBy cuts s as Hugging Face's NormalizedString::split does with the
// given matches and behaviour, and calls emit with each non-empty piece.
func splitBy(s []byte, matches [][2]int, behavior int, invert bool, atStart bool, emit func([]byte, bool)) {
	// The spans that cover s: matches and the gaps between them.
	var spans []span
	prev := 0
	for _, m := range matches {
		if m[0] > prev {
			spans = append(spans, span{prev, m[0], invert})
		}
		spans = append(spans, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev < len(s) {
		spans = append(spans, span{prev, len(s), invert})
	}
	var out []span // pieces; match marks the ones to remove
	switch behavior {
	case isolated:
		for _, sp := range spans {
			out = append(out, span{sp.start, sp.end, false})
		}
	case removed:
		out = spans
	case contiguous:
		prevMatch := false
		for _, sp := range spans {
			if sp.match == prevMatch && len(out) > 0 {
				out[len(out)-1].end = sp.end
			} else {
				out = append(out, span{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
	case mergedWithPrevious:
		prevMatch := false
		for _, sp := range spans {
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].end = sp.end
			} else {
				out = append(out, span{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
	case mergedWithNext:
		prevMatch := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.match && !prevMatch && len(out) > 0 {
				out[len(out)-1].start = sp.start
			} else {
				out = append(out, span{sp.start, sp.end, false})
			}
			prevMatch = sp.match
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	for _, sp := range out {
		if !sp.match && sp.end > sp.start {
			emit(s[sp.start:sp.end], atStart && sp.start == 0)
		}
	}
}

// splitPre is the Split pre-tokenizer.
type splitPre struct {
	pattern  *pattern
	behavior int
	invert   bool
}

// Bytes that are not UTF-8 are pieces of their own: the pattern is matched
// against the valid runs between them.
func (sp *splitPre) split(p []byte, atStart bool, emit func([]byte, bool)) {
	validRuns(p, func(off int, run []byte, valid bool) {
		if !valid {
			emit(run, atStart && off == 0)
			return
		}
		splitBy(run, sp.pattern.find(nil, run), sp.behavior, sp.invert, atStart && off == 0, emit)
	})
}

// byteLevelPre is the ByteLevel pre-tokenizer. Its mapping of bytes to the
// byte-level alphabet is implicit: the model of a tokenizer with one works
// on raw bytes, and so ByteLevel must be the last pre-tokenizer.
type byteLevelPre struct {
	addPrefixSpace bool
	useRegex       bool
}

func (bl byteLevelPre) split(p []byte, atStart bool, emit func([]byte, bool)) {
	if bl.addPrefixSpace && p[0] != ' ' {
		p = append([]byte{' '}, p...)
	}
	if !bl.useRegex {
		emit(p, atStart)
		return
	}
	gpt2Split.split(p, atStart, emit)
}

// gpt2Split is the split of ByteLevel's use_regex.
var gpt2Split = &splitPre{pattern: &pattern{tile: pretok.GPT2}, behavior: isolated}

// Metaspace's prepend schemes.
const (
	prependAlways = iota
	prependFirst
	prependNever
)

// metaspacePre is the Metaspace pre-tokenizer: spaces become the
// replacement character, which is prepended to the text (or to every
// piece), and pieces are split before it if split is set.
type metaspacePre struct {
	repl    []byte
	prepend int
	splitAt bool // split before the replacement character
}

func (ms *metaspacePre) split(p []byte, atStart bool, emit func([]byte, bool)) {
	q := bytes.ReplaceAll(p, []byte(" "), ms.repl)
	if !bytes.HasPrefix(q, ms.repl) && (ms.prepend == prependAlways || ms.prepend == prependFirst && atStart) {
		q = append(append([]byte(nil), ms.repl...), q...)
	}
	if !ms.splitAt {
		emit(q, atStart)
		return
	}
	splitBy(q, (&pattern{literal: ms.repl}).find(nil, q), mergedWithNext, false, atStart, emit)
}

// digitsPre is the Digits pre-tokenizer: numbers one by one, or runs of
// them, are pieces of their own.
type digitsPre struct{ individual bool }

func (d digitsPre) split(p []byte, atStart bool, emit func([]byte, bool)) {
	var matches [][2]int
	for i := 0; i < len(p); {
		r, n := utf8.DecodeRune(p[i:])
		if unicode.IsNumber(r) && !(r == utf8.RuneError && n == 1) {
			matches = append(matches, [2]int{i, i + n})
		}
		i += n
	}
	behavior := contiguous
	if d.individual {
		behavior = isolated
	}
	splitBy(p, matches, behavior, false, atStart, emit)
}
