package pretok_test

import (
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/braidml/braid/model/internal/pretok"
	"github.com/dlclark/regexp2"
)

// funcs are the functions with the patterns they implement.
var funcs = []struct {
	name    string
	pattern string
	f       pretok.Func
}{
	{"gpt2", pretok.GPT2Pattern, pretok.GPT2},
	{"llama3", pretok.Llama3Pattern, pretok.Llama3},
	{"qwen2", pretok.Qwen2Pattern, pretok.Qwen2},
}

// byFunc cuts s into pre-tokens with f.
func byFunc(f pretok.Func, s string) []string {
	var out []string
	for b := []byte(s); len(b) > 0; {
		n := f(b)
		if n < 1 || n > len(b) {
			panic("pretok: length out of range")
		}
		out = append(out, string(b[:n]))
		b = b[n:]
	}
	return out
}

// byRegexp cuts s into the matches of re (the patterns match every
// character, so the matches tile s).
func byRegexp(t testing.TB, re *regexp2.Regexp, s string) []string {
	var out []string
	runes := []rune(s)
	m, err := re.FindRunesMatch(runes)
	for ; m != nil && err == nil; m, err = re.FindNextMatch(m) {
		out = append(out, string(runes[m.Index:m.Index+m.Length]))
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// alphabet holds characters at the edges of the patterns' classes: each
// kind of whitespace and line break, letters, marks and numbers of several
// scripts, the contractions' letters in both cases, punctuation, controls.
var alphabet = []rune("  \t\n\r\v\f\u0085\u00a0\u2028\u3000\ufeff'sSrRtTvVeEmMlLdDaZé世0९²Ⅻ٣.,!-_\"(😀\u0301\u200d\x00\x1c")

// randomTexts are deterministic random strings over alphabet.
func randomTexts(n int) []string {
	rng := rand.New(rand.NewSource(3))
	texts := make([]string, n)
	for i := range texts {
		r := make([]rune, rng.Intn(24))
		for j := range r {
			r[j] = alphabet[rng.Intn(len(alphabet))]
		}
		texts[i] = string(r)
	}
	return texts
}

// realTexts are windows of real text: the shared corpora where present,
// and Go source.
func realTexts(t testing.TB) []string {
	var texts []string
	for _, f := range []string{"english/moby-dick.txt", "legal/spdx/MIT.txt", "bio/go-terms.txt", "jargon/jargon.txt"} {
		if b, err := os.ReadFile(filepath.Join("../../../../shared/corpora", f)); err == nil {
			texts = append(texts, string(b[:min(len(b), 16<<10)]))
		}
	}
	for _, f := range []string{"fmt/print.go", "unicode/tables.go", "strconv/quote.go"} {
		b, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", f))
		if err != nil {
			t.Fatal(err)
		}
		texts = append(texts, string(b[:min(len(b), 16<<10)]))
	}
	return texts
}

// Each function splits as regexp2 (tiktoken-go's engine) splits by its
// pattern, on random strings of characters at the classes' edges and on
// real text. regexp2 does not fold ſ to s in (?i:'s), as Oniguruma and
// Python's regex do; TestLongS checks that case.
func TestMatchesRegexp(t *testing.T) {
	texts := append(randomTexts(5000), realTexts(t)...)
	for _, fn := range funcs {
		re := regexp2.MustCompile(fn.pattern, regexp2.None)
		for _, s := range texts {
			if want := byRegexp(t, re, s); !slices.Equal(byFunc(fn.f, s), want) {
				t.Errorf("%s: %.60q splits as %.200q, want %.200q", fn.name, s, byFunc(fn.f, s), want)
			}
		}
	}
}

// The case-insensitive contractions of Llama 3 and Qwen2 fold as Unicode
// does: "'ſ" (long s) is a contraction there, as Oniguruma and Python's
// regex module find; GPT-2's are case-sensitive.
func TestLongS(t *testing.T) {
	for _, c := range []struct {
		f    pretok.Func
		s    string
		want []string
	}{
		{pretok.Llama3, "'ſt", []string{"'ſ", "t"}},
		{pretok.Qwen2, "x'ſ", []string{"x", "'ſ"}},
		{pretok.Llama3, "'S'RE'Ll", []string{"'S", "'RE", "'Ll"}},
		{pretok.GPT2, "'S'ſ", []string{"'", "S", "'", "ſ"}},
	} {
		if got := byFunc(c.f, c.s); !slices.Equal(got, c.want) {
			t.Errorf("%q splits as %q, want %q", c.s, got, c.want)
		}
	}
}

func TestForPattern(t *testing.T) {
	for _, fn := range funcs {
		if pretok.ForPattern(fn.pattern) == nil {
			t.Errorf("ForPattern(%s) = nil", fn.name)
		}
	}
	if pretok.ForPattern(`\s+|\S+`) != nil {
		t.Error("ForPattern of another pattern is not nil")
	}
}

func TestValidPrefix(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int
	}{{"", 0}, {"abc", 3}, {"ab\xffc", 2}, {"你好\xe4\xb8", 6}, {"\xed\xa0\x80", 0}, {"é", 2}} {
		if got := pretok.ValidPrefix([]byte(c.s)); got != c.want {
			t.Errorf("ValidPrefix(%q) = %d, want %d", c.s, got, c.want)
		}
	}
}

// FuzzMatchesRegexp: on valid UTF-8 without ſ, each function splits as
// regexp2 does, and its pieces tile the text.
func FuzzMatchesRegexp(f *testing.F) {
	for _, s := range randomTexts(20) {
		f.Add(s)
	}
	f.Add("I'm  \n\n  don't 123456 x")
	res := make([]*regexp2.Regexp, len(funcs))
	for i, fn := range funcs {
		res[i] = regexp2.MustCompile(fn.pattern, regexp2.None)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.ContainsRune(s, 'ſ') {
			return
		}
		for i, fn := range funcs {
			got := byFunc(fn.f, s)
			if strings.Join(got, "") != s {
				t.Fatalf("%s: pieces %q do not tile %q", fn.name, got, s)
			}
			if want := byRegexp(t, res[i], s); !slices.Equal(got, want) {
				t.Fatalf("%s: %q splits as %q, want %q", fn.name, s, got, want)
			}
		}
	})
}
