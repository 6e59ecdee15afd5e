// Package pretok cuts text into the pre-tokens of the regular expressions
// that GPT-2, Llama 3 and Qwen2 tokenizers split text with, without a
// regular-expression engine: each function returns the length of the first
// pre-token, as the expression's leftmost-first match at the start of the
// text would.
//
// The classes are Unicode's, as Oniguruma (Hugging Face tokenizers),
// Python's regex module and regexp2 (tiktoken-go) define them: \s is
// unicode.IsSpace (the White_Space property), \p{L} unicode.IsLetter,
// \p{N} unicode.IsNumber. The callers' tests hold each function to a
// regular-expression engine.
//
// What this package does not do: invalid UTF-8. Every function takes
// non-empty, valid UTF-8; callers cut invalid bytes out first (ValidPrefix).
// The functions are pure and safe for concurrent use.
package pretok

import (
	"unicode"
	"unicode/utf8"
)

// Pattern strings that the functions implement, as Hugging Face
// tokenizer.json files and OpenAI's tiktoken spell them.
const (
	// GPT2Pattern is GPT-2's (tiktoken's r50k_base, and Hugging Face's
	// ByteLevel pre-tokenizer with use_regex).
	GPT2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	// Llama3Pattern is Llama 3's (tiktoken's cl100k_base).
	Llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// Qwen2Pattern is Qwen2's: Llama 3's with one digit a pre-token.
	Qwen2Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// A Func returns the length in bytes of the first pre-token of s, which is
// non-empty valid UTF-8; the result is in 1..len(s).
type Func func(s []byte) int

// ForPattern returns the Func of a pattern string this package implements,
// or nil.
func ForPattern(pattern string) Func {
	switch pattern {
	case GPT2Pattern:
		return GPT2
	case Llama3Pattern:
		return Llama3
	case Qwen2Pattern:
		return Qwen2
	}
	return nil
}

// GPT2 returns the length of the first pre-token of GPT2Pattern.
func GPT2(s []byte) int {
	// 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
	if n := contraction(s, false); n > 0 {
		return n
	}
	// ' ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+': an optional space, then a run of
	// one class that is not whitespace.
	j := 0
	if s[0] == ' ' {
		j = 1
	}
	if j < len(s) {
		r, n := decodeRune(s[j:])
		if c := Class(r); c != Space {
			return j + n + run(s[j+n:], c, len(s))
		}
	}
	return spaces(s)
}

// Llama3 returns the length of the first pre-token of Llama3Pattern.
func Llama3(s []byte) int { return llama3(s, 3) }

// Qwen2 returns the length of the first pre-token of Qwen2Pattern.
func Qwen2(s []byte) int { return llama3(s, 1) }

// llama3 is Llama3Pattern with \p{N}{1,maxDigits}.
func llama3(s []byte, maxDigits int) int {
	// (?i:'s|'t|'re|'ve|'m|'ll|'d)
	if n := contraction(s, true); n > 0 {
		return n
	}
	r, n := decodeRune(s)
	c := Class(r)
	// [^\r\n\p{L}\p{N}]?\p{L}+: a letter run, after at most one character
	// that is neither a line break, a letter nor a number.
	if c == Letter {
		return n + run(s[n:], Letter, len(s))
	}
	if c != Number && r != '\r' && r != '\n' && n < len(s) {
		if r2, n2 := decodeRune(s[n:]); Class(r2) == Letter {
			return n + n2 + run(s[n+n2:], Letter, len(s))
		}
	}
	// \p{N}{1,maxDigits}
	if c == Number {
		return n + run(s[n:], Number, maxDigits-1)
	}
	// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
	j := 0
	if s[0] == ' ' {
		j = 1
	}
	if j < len(s) {
		if r, n := decodeRune(s[j:]); Class(r) == Other {
			k := j + n
			k += run(s[k:], Other, len(s))
			for k < len(s) && (s[k] == '\r' || s[k] == '\n') {
				k++
			}
			return k
		}
	}
	// \s*[\r\n]+: the whitespace run up to and including its last line
	// break, if it has one.
	k, lastBreak := 0, -1
	for k < len(s) {
		r, n := decodeRune(s[k:])
		if !unicode.IsSpace(r) {
			break
		}
		if r == '\r' || r == '\n' {
			lastBreak = k
		}
		k += n
	}
	if lastBreak >= 0 {
		return lastBreak + 1
	}
	// \s+(?!\S)|\s+
	return spaces(s)
}

// contraction returns the length of 's, 't, 're, 've, 'm, 'll or 'd at the
// start of s, or 0. Case-insensitive matching folds as Unicode's simple
// case folding does, which also folds ſ (U+017F, long s) to s.
func contraction(s []byte, fold bool) int {
	if len(s) < 2 || s[0] != '\'' {
		return 0
	}
	c := s[1]
	if fold {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		} else if c == 0xC5 && len(s) >= 3 && s[2] == 0xBF { // ſ
			return 3
		}
	}
	switch c {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v', 'l':
		if len(s) < 3 {
			return 0
		}
		want := byte('e')
		if c == 'l' {
			want = 'l'
		}
		c2 := s[2]
		if fold && 'A' <= c2 && c2 <= 'Z' {
			c2 += 'a' - 'A'
		}
		if c2 == want {
			return 3
		}
	}
	return 0
}

// run returns the length of the run of class c at the start of s, of at
// most max characters.
func run(s []byte, c uint8, max int) int {
	k := 0
	for i := 0; i < max && k < len(s); i++ {
		r, n := decodeRune(s[k:])
		if Class(r) != c {
			break
		}
		k += n
	}
	return k
}

// spaces matches '\s+(?!\S)|\s+' at the start of s, which begins with
// whitespace: the whitespace run, less its last character when a
// non-space follows and the run has more than one.
func spaces(s []byte) int {
	k, last := 0, 0
	for k < len(s) {
		r, n := decodeRune(s[k:])
		if !unicode.IsSpace(r) {
			break
		}
		last = k
		k += n
	}
	if k == len(s) || last == 0 {
		return k
	}
	return last
}

// Character classes of the patterns.
const (
	Space  = iota // \s
	Letter        // \p{L}
	Number        // \p{N}
	Other         // [^\s\p{L}\p{N}]
)

// asciiClass is Class for ASCII.
var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for r := range rune(utf8.RuneSelf) {
		t[r] = classSlow(r)
	}
	return t
}()

// Class returns the class of r: Space, Letter, Number or Other.
func Class(r rune) uint8 {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return classSlow(r)
}

func classSlow(r rune) uint8 {
	switch {
	case unicode.IsSpace(r):
		return Space
	case unicode.IsLetter(r):
		return Letter
	case unicode.IsNumber(r):
		return Number
	}
	return Other
}

// decodeRune is utf8.DecodeRune with a fast path for ASCII.
func decodeRune(s []byte) (rune, int) {
	if s[0] < utf8.RuneSelf {
		return rune(s[0]), 1
	}
	return utf8.DecodeRune(s)
}

// ValidPrefix returns the length of the longest valid UTF-8 prefix of b.
func ValidPrefix(b []byte) int {
	n := 0
	for n < len(b) {
		if c := b[n]; c < utf8.RuneSelf {
			n++
			continue
		}
		r, size := utf8.DecodeRune(b[n:])
		if r == utf8.RuneError && size == 1 {
			break
		}
		n += size
	}
	return n
}
