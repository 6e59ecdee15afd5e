package provenance

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyRefusesUnrecordedEntries: every entry of the directory but
// the recorded files, the record, its signature and the model card is a
// mismatch naming it: a loader reads more than the weights.
func TestVerifyRefusesUnrecordedEntries(t *testing.T) {
	for name, add := range map[string]func(dir string) error{
		"tokenizer_config.json": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"auto_map": {"AutoTokenizer": "evil.Tok"}, "chat_template": "x"}`), 0o644)
		},
		"evil.py": func(dir string) error { return os.WriteFile(filepath.Join(dir, "evil.py"), []byte("import os"), 0o644) },
		"training.pkl": func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "training.pkl"), []byte("\x80\x04"), 0o644)
		},
		"extra/": func(dir string) error { return os.Mkdir(filepath.Join(dir, "extra"), 0o755) },
	} {
		t.Run(name, func(t *testing.T) {
			dir, ca, _ := signedDir(t)
			if err := add(dir); err != nil {
				t.Fatal(err)
			}
			wantProblem(t, verify(t, dir, Options{Roots: roots(t, ca)}), name, "the record does not name")
			// Named with AllowUnrecorded, it is a warning, not checked.
			rep := verify(t, dir, Options{Roots: roots(t, ca), AllowUnrecorded: []string{strings.TrimSuffix(name, "/")}})
			if !rep.OK() || len(rep.Warnings) != 1 {
				t.Errorf("allowed: problems %q, warnings %q", rep.Problems, rep.Warnings)
			}
		})
	}
}

// TestVerifyChecksTheCard: README.md must be the card rendered from the
// record; an edited one is a mismatch, a missing one is not.
func TestVerifyChecksTheCard(t *testing.T) {
	dir, ca, _ := signedDir(t)
	path := filepath.Join(dir, CardFile)
	card := must(os.ReadFile(path))
	rec, err := Decode(must(os.ReadFile(filepath.Join(dir, RecordFile))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(Card(rec), card) || !bytes.Equal(Card(rec), Card(rec)) {
		t.Fatal("Card does not render the same card from the same record")
	}
	edited := bytes.Replace(card, []byte("held by unit n2"), []byte("held by unit n3"), 1)
	if bytes.Equal(edited, card) {
		t.Fatal("the test's edit changed nothing")
	}
	if err := os.WriteFile(path, edited, 0o644); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, verify(t, dir, Options{Roots: roots(t, ca)}), CardFile, "not the model card rendered")
	os.Remove(path)
	if rep := verify(t, dir, Options{Roots: roots(t, ca)}); !rep.OK() {
		t.Errorf("without a README.md: problems %q", rep.Problems)
	}
}
