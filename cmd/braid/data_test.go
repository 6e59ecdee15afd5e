package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braidml/braid/shard"
)

// TestDataPrepareThenVerify: prepare writes a dataset and reports what it
// did and how fast; the same input prepares to the same id; verify passes
// it, then names a damaged shard and fails.
func TestDataPrepareThenVerify(t *testing.T) {
	in, base := corpusDir(t), t.TempDir()
	args := []string{"data", "prepare", "--input", in, "--seq-len", "32", "--holdout", "0.2", "--shard-mib", "1"}
	log, err := run(t, append(args, "--out", filepath.Join(base, "a"))...)
	if err != nil {
		t.Fatalf("prepare: %v\n%s", err, log)
	}
	lines := strings.Split(strings.TrimSpace(log), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "prepared ") || !strings.Contains(last, "MB/s") || !strings.Contains(last, "tokens/s") {
		t.Errorf("the last line does not give the throughput: %q", last)
	}
	for _, want := range []string{"wrote " + filepath.Join(base, "a"), "60 documents from 60 files", "train", "heldout", "prepare: 100%"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
	a, err := shard.ReadManifest(filepath.Join(base, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != filepath.Base(in) || a.SeqLen != 32 || a.Tokenizer != "byte" || a.Holdout != 0.2 {
		t.Errorf("manifest %+v", a)
	}
	if _, err := run(t, append(args, "--out", filepath.Join(base, "b"), "--name", "again")...); err != nil {
		t.Fatal(err)
	}
	b, _ := shard.ReadManifest(filepath.Join(base, "b"))
	if b == nil || b.ID != a.ID || b.Name != "again" {
		t.Errorf("the same input gave id %v, first %s", b, a.ID)
	}

	log, err = run(t, "data", "verify", filepath.Join(base, "a"))
	if err != nil || !strings.Contains(log, "ok ") || !strings.Contains(log, a.ID) {
		t.Fatalf("verify: %v\n%s", err, log)
	}
	victim := shard.ShardPath(filepath.Join(base, "a"), a.Shards[0].Hash)
	data, _ := os.ReadFile(victim)
	os.WriteFile(victim, data[:len(data)/2], 0o644)
	os.Remove(shard.ShardPath(filepath.Join(base, "a"), a.Shards[len(a.Shards)-1].Hash))
	log, err = run(t, "data", "verify", filepath.Join(base, "a"))
	if err == nil || !strings.Contains(err.Error(), "2 of") {
		t.Errorf("verify of a damaged dataset: %v, want an error counting 2 bad shards", err)
	}
	for _, want := range []string{"BAD " + victim, "truncated", "missing"} {
		if !strings.Contains(log, want) {
			t.Errorf("verify output lacks %q:\n%s", want, log)
		}
	}
}

// TestDataPrepareBadInput: a file that is not UTF-8 fails prepare, naming
// it and the flag that skips it, and nothing is written; with --skip-bad
// it is skipped and reported. Binary files are skipped either way.
func TestDataPrepareBadInput(t *testing.T) {
	in := corpusDir(t)
	os.WriteFile(filepath.Join(in, "latin1.txt"), []byte("na\xefve caf\xe9"), 0o644)
	os.WriteFile(filepath.Join(in, "program.bin"), []byte("\x7fELF\x00\x00"), 0o644)
	out := filepath.Join(t.TempDir(), "ds")
	log, err := run(t, "data", "prepare", "--input", in, "--out", out, "--seq-len", "32")
	if err == nil || !strings.Contains(err.Error(), "latin1.txt") || !strings.Contains(err.Error(), "--skip-bad") {
		t.Fatalf("bad input: %v, want an error naming latin1.txt and --skip-bad\n%s", err, log)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("%s exists after a failed prepare", out)
	}
	log, err = run(t, "data", "prepare", "--input", in, "--out", out, "--seq-len", "32", "--skip-bad")
	if err != nil {
		t.Fatalf("--skip-bad: %v\n%s", err, log)
	}
	for _, want := range []string{"skipped bad " + filepath.Join(in, "latin1.txt") + ": invalid_utf8", "skipped " + filepath.Join(in, "program.bin") + ": binary", "skipped: binary 1, invalid_utf8 1"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
	if log, err := run(t, "data", "prepare", "--input", in, "--out", out); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("prepare into an existing dataset: %v\n%s", err, log)
	}
}

// TestDataPrepareJSONL: records are read from a field; bad records are
// named by file:line.
func TestDataPrepareJSONL(t *testing.T) {
	in := t.TempDir()
	var b strings.Builder
	for i := range 50 {
		b.WriteString(`{"id":` + strings.Repeat("1", 1+i%3) + `,"body":"` + strings.Repeat("lorem ipsum dolor sit amet ", 3+i%5) + `"}` + "\n")
	}
	b.WriteString(`{"id":7,"body":42}` + "\n")
	b.WriteString(`{"id":8,"body":"unterminated` + "\n")
	path := filepath.Join(in, "records.jsonl")
	os.WriteFile(path, []byte(b.String()), 0o644)
	args := []string{"data", "prepare", "--input", path, "--format", "jsonl", "--field", "body", "--seq-len", "16"}
	log, err := run(t, append(args, "--out", filepath.Join(t.TempDir(), "x"))...)
	if err == nil || !strings.Contains(err.Error(), path+":51") || !strings.Contains(err.Error(), "not_string") {
		t.Fatalf("bad records: %v, want the first named records.jsonl:51\n%s", err, log)
	}
	log, err = run(t, append(args, "--out", filepath.Join(t.TempDir(), "y"), "--skip-bad")...)
	if err != nil {
		t.Fatalf("--skip-bad: %v\n%s", err, log)
	}
	for _, want := range []string{path + ":51: not_string", path + ":52: bad_json", "50 documents from 1 file ", "dataset records,"} {
		if !strings.Contains(log, want) {
			t.Errorf("output lacks %q:\n%s", want, log)
		}
	}
}

func TestDataCommandErrors(t *testing.T) {
	in := corpusDir(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"data", "prepare", "--input", in, "--out", filepath.Join(t.TempDir(), "o"), "--tokenizer", "klingon"}, "klingon"},
		{[]string{"data", "prepare", "--input", in, "--out", filepath.Join(t.TempDir(), "o"), "--seq-len", "0"}, "SeqLen"},
		{[]string{"data", "prepare", "--input", in, "--out", filepath.Join(t.TempDir(), "o"), "--format", "xml"}, "xml"},
		{[]string{"data", "prepare", "--input", in, "--out", filepath.Join(t.TempDir(), "o"), "--shard-mib", "0"}, "--shard-mib"},
		{[]string{"data", "verify"}, "one dataset DIR"},
		{[]string{"data", "verify", t.TempDir()}, "manifest.json"},
	} {
		if log, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error mentioning %q\n%s", tc.args, err, tc.want, log)
		}
	}
	// A truncated manifest is named as such.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(`{"id": "ab`), 0o644)
	if _, err := run(t, "data", "verify", dir); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("truncated manifest: %v", err)
	}
}

// TestDataPrepareOneFileCorpus: a corpus of one large file is cut into
// documents, the output says how, and both splits have sequences; without
// cutting, its held-out split is empty and a one-line warning on stderr
// names the fix.
func TestDataPrepareOneFileCorpus(t *testing.T) {
	var b strings.Builder
	for i := 0; b.Len() < 3<<20/2; i++ {
		fmt.Fprintf(&b, "Paragraph %d. %s\n\n", i, strings.Repeat("the quick brown fox jumps over the lazy dog ", 2+i%9))
	}
	in := filepath.Join(t.TempDir(), "book.txt")
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	prepare := func(extra ...string) (stdout, stderr string, m *shard.Manifest) {
		out := filepath.Join(t.TempDir(), "ds")
		app := newApp()
		var o, e bytes.Buffer
		app.Writer, app.ErrWriter = &o, &e
		if err := runApp(context.Background(), app, append([]string{"braid", "data", "prepare", "--input", in, "--out", out}, extra...)); err != nil {
			t.Fatalf("prepare %v: %v\n%s%s", extra, err, o.String(), e.String())
		}
		m, err := shard.ReadManifest(out)
		if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), m
	}

	stdout, stderr, m := prepare()
	if !strings.Contains(stdout, "cut 1 file over 1 MiB into ") || !strings.Contains(stdout, "1 at blank lines (paragraphs)") {
		t.Errorf("the output does not say how the file was cut:\n%s", stdout)
	}
	if m.Totals.Heldout.Sequences == 0 || m.Totals.Train.Sequences == 0 || strings.Contains(stderr, "warning") {
		t.Errorf("train %d and held-out %d sequences; stderr:\n%s", m.Totals.Train.Sequences, m.Totals.Heldout.Sequences, stderr)
	}

	stdout, stderr, m = prepare("--cut-above-mib", "0")
	if m.Totals.Heldout.Sequences != 0 || strings.Contains(stdout, "cut ") {
		t.Fatalf("uncut: %d held-out sequences:\n%s", m.Totals.Heldout.Sequences, stdout)
	}
	var warnings []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(l, "warning:") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "held-out split is empty") || !strings.Contains(warnings[0], "--cut-above-mib") {
		t.Errorf("want one warning naming the empty held-out split and the fix, got %q", warnings)
	}
}
