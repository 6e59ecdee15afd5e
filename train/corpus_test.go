package train_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCorpusBadInput: each bad corpus is an error naming the path and the
// problem.
func TestCorpusBadInput(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "empty.txt"), nil)
	writeFile(t, filepath.Join(dir, "binary.bin"), []byte{0x7f, 'E', 'L', 'F', 0, 0, 1})
	writeFile(t, filepath.Join(dir, "latin1.txt"), []byte("caf\xe9"))
	writeFile(t, filepath.Join(dir, "bins", "a.bin"), []byte{1, 2, 0, 3})
	writeFile(t, filepath.Join(dir, "bins", "b.txt"), nil)
	tok := model.ByteTokenizer{}
	for _, c := range []struct {
		name  string
		paths []string
		is    error
		want  string
	}{
		{"no paths", nil, train.ErrNoInput, ""},
		{"missing", []string{filepath.Join(dir, "nope.txt")}, os.ErrNotExist, "nope.txt"},
		{"empty", []string{filepath.Join(dir, "empty.txt")}, train.ErrEmptyFile, "empty.txt"},
		{"binary", []string{filepath.Join(dir, "binary.bin")}, train.ErrNotText, "binary.bin"},
		{"not UTF-8", []string{filepath.Join(dir, "latin1.txt")}, train.ErrNotText, "latin1.txt"},
		{"dir without text", []string{filepath.Join(dir, "bins")}, train.ErrNoText, "bins"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := train.LoadCorpus(c.paths, tok, train.CorpusOptions{HoldoutEvery: 10})
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %v naming %q", err, c.is, c.want)
			}
			t.Log(err)
		})
	}
}

// TestCorpusSplitAndSkip: directories are walked in order, binary and hidden
// files are skipped and counted, and the held-out split depends only on
// content.
func TestCorpusSplitAndSkip(t *testing.T) {
	dir := t.TempDir()
	var docs []string
	for i := 0; i < 40; i++ {
		doc := strings.Repeat(string(rune('a'+i%26)), 10+i)
		docs = append(docs, doc)
		writeFile(t, filepath.Join(dir, "d", string(rune('a'+i%26))+string(rune('0'+i/26))+".txt"), []byte(doc))
	}
	writeFile(t, filepath.Join(dir, "d", "blob.bin"), []byte{0, 1, 2})
	writeFile(t, filepath.Join(dir, "d", ".git", "config"), []byte("hidden"))
	tok := model.ByteTokenizer{}
	c, err := train.LoadCorpus([]string{filepath.Join(dir, "d")}, tok, train.CorpusOptions{HoldoutEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	if c.Files != 40 || c.Skipped != 1 {
		t.Errorf("files %d skipped %d, want 40 and 1", c.Files, c.Skipped)
	}
	total := 0
	for _, d := range docs {
		total += len(d) + 1 // + EOT
	}
	if got := len(c.Train) + len(c.Heldout); got != total {
		t.Errorf("%d tokens, want %d", got, total)
	}
	if len(c.Heldout) == 0 || len(c.Train) == 0 {
		t.Errorf("split %d/%d: want both non-empty", len(c.Train), len(c.Heldout))
	}
	// Same content in another directory, other names: same split.
	for i, d := range docs {
		writeFile(t, filepath.Join(dir, "e", "doc"+string(rune('A'+i%26))+string(rune('0'+i/26))), []byte(d))
	}
	c2, err := train.LoadCorpus([]string{filepath.Join(dir, "e")}, tok, train.CorpusOptions{HoldoutEvery: 4})
	if err != nil {
		t.Fatal(err)
	}
	if len(c2.Heldout) != len(c.Heldout) {
		t.Errorf("held-out tokens %d vs %d for the same documents under other names", len(c2.Heldout), len(c.Heldout))
	}
}

func TestSamplerIsSeeded(t *testing.T) {
	toks := make([]uint16, 1000)
	for i := range toks {
		toks[i] = uint16(i % 251)
	}
	draw := func(seed uint64) []int32 {
		s, err := train.NewSampler(toks, 16, seed)
		if err != nil {
			t.Fatal(err)
		}
		x, y := make([]int32, 4*16), make([]int32, 4*16)
		s.Next(x, y, 4, 16)
		for i := range x {
			if i%16 < 15 && y[i] != x[i+1] {
				t.Fatalf("targets are not inputs shifted by one at %d", i)
			}
		}
		return x
	}
	a, b, c := draw(1), draw(1), draw(2)
	same := func(p, q []int32) bool {
		for i := range p {
			if p[i] != q[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) || same(a, c) {
		t.Errorf("same seed same batch: %v; different seed different batch: %v", same(a, b), !same(a, c))
	}
	if _, err := train.NewSampler(toks[:10], 16, 1); !errors.Is(err, train.ErrTooSmall) {
		t.Errorf("10 tokens for a 16-token window: err %v, want ErrTooSmall", err)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	for field, mutate := range map[string]func(*train.Config){
		"steps": func(c *train.Config) { c.Steps = 0 },
		"batch": func(c *train.Config) { c.Batch = -1 },
		"lr":    func(c *train.Config) { c.LR = 0 },
		"betas": func(c *train.Config) { c.Beta2 = 1 },
		"clip":  func(c *train.Config) { c.Clip = -1 },
	} {
		c := train.DefaultConfig()
		mutate(&c)
		err := c.Validate()
		if !errors.Is(err, train.ErrConfig) || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: error %v, want ErrConfig naming the field", field, err)
		}
	}
	if err := train.DefaultConfig().Validate(); err != nil {
		t.Errorf("default config: %v", err)
	}
}

func TestCorpusRefusesDevices(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skip("no /dev/zero")
	}
	_, err := train.LoadCorpus([]string{"/dev/zero"}, model.ByteTokenizer{}, train.CorpusOptions{})
	if err == nil || !strings.Contains(err.Error(), "/dev/zero") {
		t.Fatalf("reading /dev/zero: %v, want an error naming it", err)
	}
}

// TestCorpusCutsLargeFile: a corpus of one large file (synthetic, and the
// Jargon File of ../shared/corpora where present) is cut into documents,
// so about one token in HoldoutEvery is held out; uncut, it is one
// document and nothing or everything is.
func TestCorpusCutsLargeFile(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 2<<20; i++ {
		b.WriteString(strings.Repeat("a line of text in paragraph ", 1+i%13))
		b.WriteString(strconv.Itoa(i))
		b.WriteString("\n\n")
	}
	synthetic := filepath.Join(t.TempDir(), "book.txt")
	writeFile(t, synthetic, []byte(b.String()))
	cut := train.CorpusOptions{HoldoutEvery: 20, CutAbove: 1 << 20, DocumentBytes: 8 << 10}
	for _, path := range []string{synthetic, filepath.Join("..", "..", "shared", "corpora", "jargon", "jargon.txt")} {
		if _, err := os.Stat(path); err != nil {
			t.Logf("skipping %s: %v", path, err)
			continue
		}
		c, err := train.LoadCorpus([]string{path}, model.ByteTokenizer{}, cut)
		if err != nil {
			t.Fatal(err)
		}
		held := float64(len(c.Heldout)) / float64(len(c.Heldout)+len(c.Train))
		t.Logf("%s: %d documents (cut at paragraphs %d, fixed %d), %.3f of the tokens held out", filepath.Base(path), c.Documents, c.CutParagraphs, c.CutFixed, held)
		if c.Files != 1 || c.CutParagraphs != 1 || c.Documents < 100 {
			t.Errorf("%s: %d files, %d documents, %d cut at paragraphs: want 1 file cut into about 8 KiB documents", path, c.Files, c.Documents, c.CutParagraphs)
		}
		if held < 0.01 || held > 0.12 {
			t.Errorf("%s: %.3f of the tokens held out, want about 1/20", path, held)
		}
		whole, err := train.LoadCorpus([]string{path}, model.ByteTokenizer{}, train.CorpusOptions{HoldoutEvery: 20})
		if err != nil {
			t.Fatal(err)
		}
		if whole.Documents != 1 || (len(whole.Heldout) != 0 && len(whole.Train) != 0) {
			t.Errorf("%s uncut: %d documents, train %d and held-out %d tokens", path, whole.Documents, len(whole.Train), len(whole.Heldout))
		}
	}
}
