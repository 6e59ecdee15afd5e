package shard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/shard"
)

// writeFiles creates files (relative path → content) under a new
// directory and returns it.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// textCorpus returns n documents of seeded pseudo-English, 50..2000 bytes.
func textCorpus(n int, seed uint64) map[string]string {
	words := strings.Fields("the of and to in a is that for it as was with be by on not he this are or his from at which but have an they you were her she there one all we their")
	rng := rand.New(rand.NewPCG(seed, 1))
	files := map[string]string{}
	for i := range n {
		var b strings.Builder
		for b.Len() < 50+rng.IntN(1950) {
			b.WriteString(words[rng.IntN(len(words))])
			b.WriteByte(" \n"[rng.IntN(2)])
		}
		files[fmt.Sprintf("d%02d/doc%03d.txt", i%7, i)] = b.String()
	}
	return files
}

// config is a Prepare configuration for tests: small sequences and shards
// so that a small corpus gives several shards in both splits.
func config(out string, inputs ...string) shard.Config {
	c := shard.DefaultConfig()
	c.Inputs, c.Out = inputs, out
	c.SeqLen = 32
	c.Holdout = 0.2
	c.ShardBytes = 4 << 10
	return c
}

func prepare(t testing.TB, c shard.Config) *shard.Result {
	t.Helper()
	res, err := shard.Prepare(context.Background(), c)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	return res
}

// readDir returns every file of a directory by name.
func readDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// TestPrepareIsDeterministic: the same inputs give byte-identical datasets
// and the same id, whatever the number of workers; another seq_len gives
// another id.
func TestPrepareIsDeterministic(t *testing.T) {
	in := writeFiles(t, textCorpus(120, 1))
	base := t.TempDir()
	var ids []string
	var dirs []map[string][]byte
	for i, workers := range []int{1, 4, 0} {
		c := config(filepath.Join(base, fmt.Sprint("out", i)), in)
		c.Workers = workers
		res := prepare(t, c)
		ids = append(ids, res.Manifest.ID)
		dirs = append(dirs, readDir(t, res.Dir))
	}
	if ids[0] != ids[1] || ids[0] != ids[2] {
		t.Errorf("ids differ between runs: %v", ids)
	}
	for i := 1; i < len(dirs); i++ {
		if len(dirs[i]) != len(dirs[0]) {
			t.Fatalf("run %d wrote %d files, run 0 %d", i, len(dirs[i]), len(dirs[0]))
		}
		for name, b := range dirs[0] {
			if !bytes.Equal(dirs[i][name], b) {
				t.Errorf("run %d: %s differs", i, name)
			}
		}
	}
	if len(dirs[0]) < 4 {
		t.Errorf("only %d files: the test wants several shards", len(dirs[0]))
	}
	c := config(filepath.Join(base, "other"), in)
	c.SeqLen = 33
	if res := prepare(t, c); res.Manifest.ID == ids[0] {
		t.Error("another seq_len gave the same id")
	}
	// The name is a label, not content.
	c = config(filepath.Join(base, "named"), in)
	c.Name = "something-else"
	if res := prepare(t, c); res.Manifest.ID != ids[0] || res.Manifest.Name != "something-else" {
		t.Errorf("a new name changed the id (%s vs %s) or was not kept (%q)", res.Manifest.ID, ids[0], res.Manifest.Name)
	}
}

// TestPreparePacksStreams rebuilds each split's token stream from the
// dataset and compares it with the documents, tokenised and split by
// HeldOut, in the order of the sorted walk: sequences are consecutive
// windows of T+1 tokens sharing one token, and only the tail is dropped.
func TestPreparePacksStreams(t *testing.T) {
	files := textCorpus(80, 2)
	in := writeFiles(t, files)
	for _, tok := range []model.Tokenizer{model.ByteTokenizer{}, model.GPT2Tokenizer{}} {
		t.Run(tok.Name(), func(t *testing.T) {
			c := config(filepath.Join(t.TempDir(), "ds"), in)
			c.Tokenizer = tok
			c.ShardBytes = 1 << 10
			res := prepare(t, c)
			m := res.Manifest
			if m.Tokenizer != tok.Name() || m.Vocab != tok.Vocab() || m.EOT != tok.EOT() || m.SeqLen != 32 {
				t.Errorf("manifest tokenizer %s/%d/%d seq_len %d", m.Tokenizer, m.Vocab, m.EOT, m.SeqLen)
			}

			// The expected streams: files in walk order (d00/doc000, d00/doc007, ...).
			want := map[shard.Split][]int32{}
			var names []string
			for name := range files {
				names = append(names, name)
			}
			slices.Sort(names)
			heldout := 0
			for _, name := range names {
				s := shard.Train
				if shard.HeldOut([]byte(files[name]), c.Holdout) {
					s = shard.Heldout
					heldout++
				}
				want[s] = append(tok.Encode(want[s], []byte(files[name])), tok.EOT())
			}
			if heldout == 0 || heldout == len(names) {
				t.Fatalf("%d of %d documents held out: the test needs both splits", heldout, len(names))
			}

			d, err := shard.Open(res.Dir)
			if err != nil {
				t.Fatal(err)
			}
			T := int64(c.SeqLen)
			for _, s := range []shard.Split{shard.Train, shard.Heldout} {
				n := d.NumSequences(s)
				tot := m.Totals.Of(s)
				if n != tot.Sequences || n != (int64(len(want[s]))-1)/T {
					t.Fatalf("%s: %d sequences, totals %d, stream of %d tokens gives %d", s, n, tot.Sequences, len(want[s]), (int64(len(want[s]))-1)/T)
				}
				if wantDrop := int64(len(want[s])) - (n*T + 1); tot.Dropped != wantDrop {
					t.Errorf("%s: dropped %d, want %d", s, tot.Dropped, wantDrop)
				}
				if tot.Shards < 2 {
					t.Errorf("%s: %d shards, the test wants several", s, tot.Shards)
				}
				var seq []int32
				for id := range n {
					seq, err = d.Sequence(s, id, seq[:0])
					if err != nil {
						t.Fatal(err)
					}
					if got, exp := seq, want[s][id*T:id*T+T+1]; !slices.Equal(got, exp) {
						t.Fatalf("%s sequence %d: %v, want %v", s, id, got, exp)
					}
				}
				if _, err := d.Sequence(s, n, nil); err == nil {
					t.Errorf("%s sequence %d of %d: no error", s, n, n)
				}
			}
			if m.Source.Documents != int64(len(files)) || m.Source.Files != int64(len(files)) ||
				m.Source.Tokens != int64(len(want[shard.Train])+len(want[shard.Heldout])) {
				t.Errorf("source stats %+v", m.Source)
			}
		})
	}
}

// TestPrepareHeldOutByHash: a document's split depends on its bytes only,
// and the fraction held out is about Holdout.
func TestPrepareHeldOutByHash(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	held := 0
	const n = 20000
	for i := range n {
		doc := fmt.Appendf(nil, "document %d %d", i, rng.Uint64())
		if shard.HeldOut(doc, 0.05) {
			held++
		}
		if shard.HeldOut(doc, 0.05) != shard.HeldOut(bytes.Clone(doc), 0.05) {
			t.Fatal("HeldOut is not a function of the bytes")
		}
		if shard.HeldOut(doc, 0) || !shard.HeldOut(doc, 1) {
			t.Fatal("fractions 0 and 1 are not none and all")
		}
	}
	if frac := float64(held) / n; frac < 0.04 || frac > 0.06 {
		t.Errorf("%.3f held out, want about 0.05", frac)
	}
	// A known value, so that the rule cannot drift: SHA-256("hello") starts
	// 2cf24dba5fb0a30e, and 0x2cf24dba5fb0a30e / 2^64 = 0.1756.
	if shard.HeldOut([]byte("hello"), 0.17) || !shard.HeldOut([]byte("hello"), 0.18) {
		t.Error(`HeldOut("hello") is not decided by SHA-256's first 8 bytes`)
	}
}

// TestPrepareWalk: directories are walked in lexical order; symlinks are not
// followed and hidden entries are skipped, both counted; several inputs are
// read in the order given; the name defaults to the first input's base.
func TestPrepareWalk(t *testing.T) {
	in := writeFiles(t, map[string]string{
		"b.txt":          strings.Repeat("bbbb ", 20),
		"a/z.txt":        strings.Repeat("zzzz ", 20),
		"a/y.txt":        strings.Repeat("yyyy ", 20),
		".git/config":    strings.Repeat("hidden ", 20),
		".hidden.txt":    strings.Repeat("hidden ", 20),
		"c/sub/deep.txt": strings.Repeat("dddd ", 20),
	})
	other := writeFiles(t, map[string]string{"first.txt": strings.Repeat("ffff ", 20)})
	if err := os.Symlink(filepath.Join(other, "first.txt"), filepath.Join(in, "link.txt")); err != nil {
		t.Skip("no symlinks here:", err)
	}
	c := config(filepath.Join(t.TempDir(), "ds"), filepath.Join(other, "first.txt"), in)
	c.Holdout, c.SeqLen = 0, 8
	res := prepare(t, c)
	m := res.Manifest
	if m.Source.Files != 5 || m.Source.Documents != 5 {
		t.Errorf("files %d documents %d, want 5 and 5", m.Source.Files, m.Source.Documents)
	}
	if m.Source.Skipped[shard.ReasonHidden] != 2 || m.Source.Skipped[shard.ReasonNotRegular] != 1 {
		t.Errorf("skipped %v, want hidden 2 and not_regular 1 (the symlink)", m.Source.Skipped)
	}
	if m.Name != "first" {
		t.Errorf("name %q, want first (the first input's base name)", m.Name)
	}
	d, err := shard.Open(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var stream []int32
	for id := range d.NumSequences(shard.Train) {
		seq, _ := d.Sequence(shard.Train, id, nil)
		if id > 0 {
			seq = seq[1:]
		}
		stream = append(stream, seq...)
	}
	text := string(model.ByteTokenizer{}.Decode(nil, stream))
	order := []string{"ffff", "yyyy", "zzzz", "bbbb", "dddd"}
	last := -1
	for _, w := range order {
		i := strings.Index(text, w)
		if i < last {
			t.Errorf("%q comes before the document before it: order %v in %q", w, order, text)
		}
		last = i
	}
	if strings.Contains(text, "hidden") {
		t.Error("a hidden file was read")
	}
}

// TestPrepareBadInput covers every kind of bad input, with and without
// SkipBad.
func TestPrepareBadInput(t *testing.T) {
	good := strings.Repeat("some good text here. ", 30)
	tests := []struct {
		name    string
		format  shard.Format
		files   map[string]string
		reason  shard.Reason
		count   int64
		bad     bool   // fails without SkipBad
		mention string // the error names this
	}{
		{"binary", shard.FormatText, map[string]string{"bin.dat": "ELF\x00\x01\x02" + good}, shard.ReasonBinary, 1, false, ""},
		{"binary JSONL", shard.FormatJSONL, map[string]string{"bin.jsonl": "\x00\x01"}, shard.ReasonBinary, 1, false, ""},
		{"empty", shard.FormatText, map[string]string{"empty.txt": ""}, shard.ReasonEmpty, 1, false, ""},
		{"empty JSONL", shard.FormatJSONL, map[string]string{"empty.jsonl": ""}, shard.ReasonEmpty, 1, false, ""},
		{"empty record", shard.FormatJSONL, map[string]string{"e.jsonl": `{"text":""}` + "\n"}, shard.ReasonEmpty, 1, false, ""},
		{"invalid UTF-8", shard.FormatText, map[string]string{"latin1.txt": "caf\xe9 au lait"}, shard.ReasonInvalidUTF8, 1, true, "latin1.txt"},
		{"invalid JSON", shard.FormatJSONL, map[string]string{"r.jsonl": " \t\n" + `{"text": nope}` + "\n"}, shard.ReasonBadJSON, 1, true, "r.jsonl:2"},
		{"not an object", shard.FormatJSONL, map[string]string{"r.jsonl": `["text"]` + "\nnull\n"}, shard.ReasonBadJSON, 2, true, "r.jsonl:1"},
		{"missing field", shard.FormatJSONL, map[string]string{"r.jsonl": "\n" + `{"body":"x"}` + "\n"}, shard.ReasonMissingField, 1, true, "r.jsonl:2"},
		{"not a string", shard.FormatJSONL, map[string]string{"r.jsonl": `{"text":12}` + "\n" + `{"text":null}` + "\r\n" + `{"text":["a"]}`}, shard.ReasonNotString, 3, true, "r.jsonl:1"},
		{"invalid UTF-8 record", shard.FormatJSONL, map[string]string{"r.jsonl": "{\"text\":\"caf\xe9\"}\n"}, shard.ReasonInvalidUTF8, 1, true, "r.jsonl:1"},
		{"record too large", shard.FormatJSONL, map[string]string{"r.jsonl": `{"text":"` + strings.Repeat("x", 2000) + `"}` + "\n"}, shard.ReasonTooLarge, 1, true, "r.jsonl:1"},
		{"file too large", shard.FormatText, map[string]string{"big.txt": strings.Repeat("x", 5000)}, shard.ReasonTooLarge, 1, true, "big.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"zz-good.txt": good}
			if tt.format == shard.FormatJSONL {
				files = map[string]string{"zz-good.jsonl": fmt.Sprintf(`{"text":%q, "id": 1}`+"\n", good)}
			}
			for k, v := range tt.files {
				files[k] = v
			}
			in := writeFiles(t, files)
			out := filepath.Join(t.TempDir(), "ds")
			c := config(out, in)
			c.Format = tt.format
			c.MaxRecordBytes, c.MaxDocumentBytes = 1000, 1000
			_, err := shard.Prepare(context.Background(), c)
			if tt.bad {
				if !errors.Is(err, shard.ErrBadInput) || !strings.Contains(err.Error(), tt.mention) || !strings.Contains(err.Error(), string(tt.reason)) {
					t.Fatalf("without SkipBad: %v, want ErrBadInput naming %s and %s", err, tt.mention, tt.reason)
				}
				t.Log(err)
				assertNothingWritten(t, out)
				c.SkipBad = true
			} else if err != nil {
				t.Fatalf("skipped input failed Prepare: %v", err)
			} else {
				os.RemoveAll(out)
			}
			res, err := shard.Prepare(context.Background(), c)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			m := res.Manifest
			if m.Source.Skipped[tt.reason] != tt.count || m.Source.Documents != 1 {
				t.Errorf("skipped %v documents %d, want %s %d and 1 document", m.Source.Skipped, m.Source.Documents, tt.reason, tt.count)
			}
			if len(res.Issues) == 0 || res.Issues[0].Reason != tt.reason {
				t.Errorf("issues %v, want %s first", res.Issues, tt.reason)
			} else if tt.mention != "" && !strings.Contains(res.Issues[0].String(), tt.mention) {
				t.Errorf("issue %q does not name %s", res.Issues[0], tt.mention)
			}
		})
	}
}

// assertNothingWritten: a failed Prepare leaves neither out nor a
// temporary directory beside it.
func assertNothingWritten(t *testing.T, out string) {
	t.Helper()
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a failed Prepare", out)
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range entries {
		t.Errorf("left behind: %s", e.Name())
	}
}

// TestPrepareGiantLine: a 20 MiB text file without a newline is one
// document (when large files are not cut into documents); a JSONL record of 20 MiB works when the limit allows it.
func TestPrepareGiantLine(t *testing.T) {
	if testing.Short() {
		t.Skip("20 MiB of input")
	}
	line := bytes.Repeat([]byte("abcdefghij"), 2<<20)
	in := t.TempDir()
	if err := os.WriteFile(filepath.Join(in, "giant.txt"), line, 0o644); err != nil {
		t.Fatal(err)
	}
	c := config(filepath.Join(t.TempDir(), "ds"), in)
	c.SeqLen, c.Holdout, c.ShardBytes, c.CutAbove = 256, 0, 1<<20, 0
	res := prepare(t, c)
	tot := res.Manifest.Totals.Train
	if want := int64(len(line)+1-1) / 256; tot.Sequences != want {
		t.Errorf("%d sequences, want %d", tot.Sequences, want)
	}
	if tot.Shards < 40 {
		t.Errorf("%d shards of 1 MiB for 40 MiB of tokens", tot.Shards)
	}

	jl := append(append([]byte(`{"text":"`), line...), "\"}\n"...)
	in2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(in2, "giant.jsonl"), jl, 0o644); err != nil {
		t.Fatal(err)
	}
	c = config(filepath.Join(t.TempDir(), "ds"), in2)
	c.Format, c.SeqLen, c.Holdout, c.ShardBytes = shard.FormatJSONL, 256, 0, 1<<20
	c.MaxRecordBytes = len(jl)
	if got := prepare(t, c).Manifest.Totals.Train.Sequences; got != tot.Sequences {
		t.Errorf("JSONL: %d sequences, text gave %d", got, tot.Sequences)
	}
}

// TestPrepareRefusesOutput: an existing non-empty output is refused before
// anything is read; an empty directory is filled.
func TestPrepareRefusesOutput(t *testing.T) {
	in := writeFiles(t, textCorpus(5, 4))
	out := writeFiles(t, map[string]string{"keep.txt": "x"})
	if _, err := shard.Prepare(context.Background(), config(out, in)); !errors.Is(err, shard.ErrOutExists) || !strings.Contains(err.Error(), out) {
		t.Errorf("non-empty output: %v, want ErrOutExists naming it", err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "keep.txt")); string(b) != "x" {
		t.Error("the existing output was touched")
	}
	file := filepath.Join(out, "keep.txt")
	if _, err := shard.Prepare(context.Background(), config(file, in)); !errors.Is(err, shard.ErrOutExists) {
		t.Errorf("output is a file: %v, want ErrOutExists", err)
	}
	empty := t.TempDir()
	res := prepare(t, config(empty, in))
	if _, err := shard.Verify(res.Dir); err != nil {
		t.Errorf("prepared into an empty directory: %v", err)
	}
}

// TestPrepareNothingUsable: inputs without text, or too little of it,
// fail clearly and leave nothing behind.
func TestPrepareNothingUsable(t *testing.T) {
	in := writeFiles(t, map[string]string{"a.bin": "\x00\x00", "b.txt": ""})
	out := filepath.Join(t.TempDir(), "ds")
	_, err := shard.Prepare(context.Background(), config(out, in))
	if !errors.Is(err, shard.ErrNoDocuments) || !strings.Contains(err.Error(), "binary 1") {
		t.Errorf("no text: %v, want ErrNoDocuments counting the binary file", err)
	}
	assertNothingWritten(t, out)
	in = writeFiles(t, map[string]string{"short.txt": "tiny"})
	if _, err := shard.Prepare(context.Background(), config(out, in)); !errors.Is(err, shard.ErrTooSmall) {
		t.Errorf("4 bytes for sequences of 32: %v, want ErrTooSmall", err)
	}
	assertNothingWritten(t, out)
	if _, err := shard.Prepare(context.Background(), config(out, filepath.Join(in, "missing.txt"))); err == nil || !strings.Contains(err.Error(), "missing.txt") {
		t.Errorf("missing input: %v, want an error naming it", err)
	}
}

// TestPrepareCancel: a cancelled context stops Prepare and leaves nothing.
func TestPrepareCancel(t *testing.T) {
	in := writeFiles(t, textCorpus(50, 5))
	out := filepath.Join(t.TempDir(), "ds")
	ctx, cancel := context.WithCancel(context.Background())
	c := config(out, in)
	c.Progress = func(shard.Progress) { cancel() }
	if _, err := shard.Prepare(ctx, c); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	assertNothingWritten(t, out)
}

// TestPrepareProgress: progress counts rise to the totals.
func TestPrepareProgress(t *testing.T) {
	in := writeFiles(t, textCorpus(30, 6))
	c := config(filepath.Join(t.TempDir(), "ds"), in)
	var last shard.Progress
	calls := 0
	c.Progress = func(p shard.Progress) {
		if p.Bytes < last.Bytes || p.Tokens < last.Tokens || p.Files < last.Files {
			t.Errorf("progress went back: %+v after %+v", p, last)
		}
		last = p
		calls++
	}
	res := prepare(t, c)
	if calls == 0 || last.Files != 30 || last.FilesTotal != 30 || last.Bytes != last.BytesTotal || last.Tokens != res.Manifest.Source.Tokens {
		t.Errorf("last progress %+v after %d calls; source %+v", last, calls, res.Manifest.Source)
	}
}

func TestConfigValidateNamesField(t *testing.T) {
	for field, mutate := range map[string]func(*shard.Config){
		"Inputs":     func(c *shard.Config) { c.Inputs = nil },
		"Out":        func(c *shard.Config) { c.Out = "" },
		"SeqLen":     func(c *shard.Config) { c.SeqLen = 0 },
		"Holdout":    func(c *shard.Config) { c.Holdout = 1.5 },
		"Format":     func(c *shard.Config) { c.Format = "csv" },
		"Field":      func(c *shard.Config) { c.Format, c.Field = shard.FormatJSONL, "" },
		"ShardBytes": func(c *shard.Config) { c.ShardBytes = 0 },
		"Tokenizer":  func(c *shard.Config) { c.Tokenizer = nil },
	} {
		c := config("out", "in")
		mutate(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming it", field, err)
		}
	}
}

// TestDefaultSeqLenIsBaseModelContext: the default sequence length is the
// context of the bundled base model, so its datasets fit it unchanged.
func TestDefaultSeqLenIsBaseModelContext(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "models", "base-en", "config.json"))
	if err != nil {
		t.Skip("no bundled base model:", err)
	}
	var cfg struct {
		NPositions int    `json:"n_positions"`
		Tokenizer  string `json:"braid_tokenizer"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	def := shard.DefaultConfig()
	if def.SeqLen != cfg.NPositions || def.Tokenizer.Name() != cfg.Tokenizer {
		t.Errorf("default seq_len %d and tokenizer %s; models/base-en has n_positions %d and tokenizer %s",
			def.SeqLen, def.Tokenizer.Name(), cfg.NPositions, cfg.Tokenizer)
	}
}

// TestPrepareSharedCorpora prepares real text (the shared corpora, when
// present) with both tokenizers and checks the result end to end: Verify
// passes, about Holdout of the documents are held out, and the first
// train sequence decodes to the start of the first train document.
func TestPrepareSharedCorpora(t *testing.T) {
	for _, tc := range []struct {
		corpus string
		tok    model.Tokenizer
	}{{"legal", model.GPT2Tokenizer{}}, {"jargon", model.ByteTokenizer{}}} {
		in := filepath.Join(corporaDir, tc.corpus)
		if _, err := os.Stat(in); err != nil {
			t.Logf("skipping %s: %v", tc.corpus, err)
			continue
		}
		c := shard.DefaultConfig()
		c.Inputs, c.Out, c.Tokenizer = []string{in}, filepath.Join(t.TempDir(), tc.corpus), tc.tok
		res := prepare(t, c)
		r, err := shard.Verify(res.Dir)
		if err != nil || !r.OK() {
			t.Fatalf("%s: verify: %v %v", tc.corpus, err, r.Problems)
		}
		m := res.Manifest
		t.Logf("%s/%s: %d documents, %d tokens, train %d sequences in %d shards, held-out %d, %.1f MB of shards",
			tc.corpus, tc.tok.Name(), m.Source.Documents, m.Source.Tokens, m.Totals.Train.Sequences, m.Totals.Train.Shards,
			m.Totals.Heldout.Sequences, float64(m.Totals.Train.Bytes+m.Totals.Heldout.Bytes)/1e6)

		var first []byte
		var docs, held int
		filepath.WalkDir(in, func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, _ := os.ReadFile(path)
			pieces := [][]byte{b}
			if int64(len(b)) > c.CutAbove {
				pieces, _ = shard.CutDocuments(b, int(c.DocumentBytes))
			}
			for _, p := range pieces {
				docs++
				if shard.HeldOut(p, c.Holdout) {
					held++
				} else if first == nil {
					first = p
				}
			}
			return nil
		})
		if docs > 100 && (float64(held)/float64(docs) < 0.02 || float64(held)/float64(docs) > 0.09) {
			t.Errorf("%s: %d of %d documents held out, want about 5%%", tc.corpus, held, docs)
		}
		d, err := shard.Open(res.Dir)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := d.Sequence(shard.Train, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.Index(seq, tc.tok.EOT()); i >= 0 {
			seq = seq[:i]
		}
		if text := tc.tok.Decode(nil, seq); !bytes.HasPrefix(first, text) || len(text) == 0 {
			t.Errorf("%s: train sequence 0 decodes to %q, not the start of the first train document", tc.corpus, text)
		}
	}
}
