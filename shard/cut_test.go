package shard_test

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/braidml/braid/shard"
)

// checkCut checks the contract of CutDocuments: the documents are text,
// in order, none empty or over the bound, none starting inside a UTF-8
// sequence.
func checkCut(t testing.TB, text []byte, target int, docs [][]byte) {
	t.Helper()
	if got := bytes.Join(docs, nil); !bytes.Equal(got, text) {
		t.Fatalf("the %d documents join to %d bytes, not the text's %d", len(docs), len(got), len(text))
	}
	for i, d := range docs {
		if len(d) == 0 {
			t.Fatalf("document %d of %d is empty", i, len(docs))
		}
		target := max(target, utf8.UTFMax)
		limit := 2 * target
		if i == len(docs)-1 {
			limit += target / 4
		}
		if len(docs) > 1 && len(d) > limit {
			t.Fatalf("document %d of %d has %d bytes, more than %d (target %d)", i, len(docs), len(d), limit, target)
		}
		if utf8.Valid(text) && !utf8.Valid(d) {
			t.Fatalf("document %d starts or ends inside a UTF-8 sequence: %q...", i, d[:min(8, len(d))])
		}
	}
}

func TestCutDocumentsParagraphs(t *testing.T) {
	// 400 paragraphs of 100..400 bytes, separated by blank lines.
	rng := rand.New(rand.NewPCG(7, 7))
	var b strings.Builder
	for i := range 400 {
		if i > 0 {
			b.WriteString("\n\n")
		}
		n := 100 + rng.IntN(300)
		for j := 0; j < n; j++ {
			b.WriteByte("abcdefgh "[rng.IntN(9)])
			if j%70 == 69 {
				b.WriteByte('\n') // a line end, not a blank line
			}
		}
		b.WriteString("end.")
	}
	text := []byte(strings.ReplaceAll(b.String(), "\n\n\n", "\n \n")) // a blank line of white space counts too
	docs, method := shard.CutDocuments(text, 2048)
	if method != shard.CutParagraphs {
		t.Fatalf("method %s, want %s", method, shard.CutParagraphs)
	}
	checkCut(t, text, 2048, docs)
	if len(docs) < len(text)/4096 || len(docs) > len(text)/2048+1 {
		t.Errorf("%d documents from %d bytes at a target of 2048", len(docs), len(text))
	}
	for i, d := range docs[:len(docs)-1] {
		if !bytes.HasSuffix(d, []byte("end.\n\n")) && !bytes.HasSuffix(d, []byte("end.\n \n")) {
			t.Fatalf("document %d does not end at a blank line: ...%q", i, d[max(0, len(d)-20):])
		}
		if len(d) < 2048 {
			t.Errorf("document %d has %d bytes, fewer than the target", i, len(d))
		}
	}
}

func TestCutDocumentsFixed(t *testing.T) {
	// One term per line, no blank line (like go-terms.txt), with some
	// multi-byte characters.
	var b strings.Builder
	for i := 0; b.Len() < 100_000; i++ {
		b.WriteString("term é ü 漢字 number ")
		b.WriteString(strings.Repeat("x", i%50))
		b.WriteByte('\n')
	}
	text := []byte(b.String())
	docs, method := shard.CutDocuments(text, 1000)
	if method != shard.CutFixed {
		t.Fatalf("method %s, want %s", method, shard.CutFixed)
	}
	checkCut(t, text, 1000, docs)
	for i, d := range docs[:len(docs)-1] {
		if d[len(d)-1] != '\n' || len(d) < 500 {
			t.Fatalf("document %d (%d bytes) does not end at a line end in the target's second half", i, len(d))
		}
	}

	// No line ends at all: cut at character boundaries.
	text = []byte(strings.Repeat("漢字é", 10_000))
	docs, _ = shard.CutDocuments(text, 1000)
	checkCut(t, text, 1000, docs)
	if len(docs) < 40 {
		t.Errorf("%d documents from %d bytes at a target of 1000", len(docs), len(text))
	}
}

func TestCutDocumentsLongParagraph(t *testing.T) {
	// Short paragraphs, then one 50 KB paragraph, then short ones.
	text := []byte(strings.Repeat("a short one.\n\n", 100) + strings.Repeat("long line of text\n", 3000) + "\n" + strings.Repeat("b\n\n", 100))
	docs, method := shard.CutDocuments(text, 1000)
	if method != shard.CutParagraphs {
		t.Fatalf("method %s", method)
	}
	checkCut(t, text, 1000, docs)
}

func FuzzCutDocuments(f *testing.F) {
	f.Add([]byte("a\n\nb\n\nc"), 1)
	f.Add([]byte("漢字\n\n\n  \nx"), 3)
	f.Add([]byte(strings.Repeat("é", 100)), 7)
	f.Fuzz(func(t *testing.T, text []byte, target int) {
		target = (target%4096 + 4096) % 4096 // below 4 counts as 4
		docs, _ := shard.CutDocuments(text, target)
		checkCut(t, text, target, docs)
	})
}

// TestPrepareCutsOneFileCorpus: a corpus of one large file gets a held-out
// split of about the held-out fraction of its text, and the manifest says
// how the file was cut.
func TestPrepareCutsOneFileCorpus(t *testing.T) {
	var b strings.Builder
	rng := rand.New(rand.NewPCG(3, 3))
	for b.Len() < 3<<20 {
		for range 50 + rng.IntN(400) {
			b.WriteByte("etaoin shrdlu\n"[rng.IntN(14)])
		}
		b.WriteString(".\n\n")
	}
	in := writeFiles(t, map[string]string{"book.txt": b.String()})
	for _, tc := range []struct {
		name     string
		cutAbove int64
		wantHeld bool
	}{{"cut", 1 << 20, true}, {"not cut", 0, false}} {
		c := config(filepath.Join(t.TempDir(), "ds"), in)
		c.Holdout, c.ShardBytes, c.CutAbove = 0.05, 1<<20, tc.cutAbove
		m := prepare(t, c).Manifest
		held := float64(m.Totals.Heldout.Sequences) / float64(m.Totals.Heldout.Sequences+m.Totals.Train.Sequences)
		t.Logf("%s: %d documents, held-out %.3f of the sequences, cut %+v", tc.name, m.Source.Documents, held, m.Source.Cut)
		if !tc.wantHeld {
			if m.Source.Documents != 1 || m.Source.Cut != nil {
				t.Errorf("%s: %d documents, cut %+v; want the file whole", tc.name, m.Source.Documents, m.Source.Cut)
			}
			continue
		}
		if m.Source.Cut == nil || m.Source.Cut.Paragraphs != 1 || m.Source.Cut.Fixed != 0 || m.Source.Cut.Documents != m.Source.Documents {
			t.Fatalf("%s: source.cut %+v of %d documents, want 1 file cut at paragraphs", tc.name, m.Source.Cut, m.Source.Documents)
		}
		if m.Source.Documents < 3<<20/(16<<10) {
			t.Errorf("%s: %d documents from 3 MB at a target of 8 KiB", tc.name, m.Source.Documents)
		}
		if held < 0.02 || held > 0.09 {
			t.Errorf("%s: %.3f of the sequences held out, want about 0.05", tc.name, held)
		}
	}
}

// TestPrepareCutsSharedCorpora: the real one-file corpora of
// ../shared/corpora (skipped where absent) get both splits.
func TestPrepareCutsSharedCorpora(t *testing.T) {
	for _, tc := range []struct {
		file   string
		method shard.CutMethod
	}{{"jargon/jargon.txt", shard.CutParagraphs}, {"english/moby-dick.txt", shard.CutParagraphs}} {
		in := filepath.Join(corporaDir, tc.file)
		if _, err := os.Stat(in); err != nil {
			t.Logf("skipping %s: %v", tc.file, err)
			continue
		}
		c := shard.DefaultConfig()
		c.Inputs, c.Out = []string{in}, filepath.Join(t.TempDir(), "ds")
		m := prepare(t, c).Manifest
		cut := m.Source.Cut
		t.Logf("%s: %d documents, train %d sequences, held-out %d, cut %+v", tc.file, m.Source.Documents,
			m.Totals.Train.Sequences, m.Totals.Heldout.Sequences, cut)
		if cut == nil || (tc.method == shard.CutParagraphs) != (cut.Paragraphs == 1) {
			t.Fatalf("%s: source.cut %+v, want 1 file cut by %s", tc.file, cut, tc.method)
		}
		held := float64(m.Totals.Heldout.Sequences) / float64(m.Totals.Heldout.Sequences+m.Totals.Train.Sequences)
		if held < 0.01 || held > 0.12 {
			t.Errorf("%s: %.3f of the sequences held out, want about 0.05", tc.file, held)
		}
	}
}
