package hftok_test

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/model/hftok"
)

// ParseFiles gives what Load gives for a directory holding the same files:
// the same name, ids, chat template and Files, chat_template.jinja used
// only where tokenizer_config.json has no template.
func TestParseFilesAsLoad(t *testing.T) {
	const jinja = "{{ messages }}"
	for _, c := range []struct {
		name, style string
		config      bool // with the fixture's tokenizer_config.json
		jinja       bool
		wantJinja   bool // Files holds chat_template.jinja
	}{
		{"tokenizer.json alone", "gpt2", false, false, false},
		{"with tokenizer_config.json", "gpt2", true, false, false},
		{"chat_template.jinja used", "gpt2", true, true, true},
		{"chat_template.jinja unused", "llama3", true, true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tj, cj := styleFiles(t, c.style)
			files := map[string][]byte{hftok.TokenizerFile: tj}
			if c.config {
				files[hftok.ConfigFile] = cj
			}
			if c.jinja {
				files[hftok.ChatTemplateFile] = []byte(jinja)
			}
			dir := t.TempDir()
			for name, b := range files {
				if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := hftok.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			got, err := hftok.ParseFiles(files)
			if err != nil {
				t.Fatal(err)
			}
			text := []byte("Hello world, it's 2024!")
			if got.Name() != want.Name() || got.ChatTemplate() != want.ChatTemplate() || !slices.Equal(got.Encode(nil, text), want.Encode(nil, text)) {
				t.Errorf("ParseFiles: %s with template %q; Load: %s with %q", got.Name(), got.ChatTemplate(), want.Name(), want.ChatTemplate())
			}
			gotFiles, wantFiles := slices.Sorted(maps.Keys(got.Files())), slices.Sorted(maps.Keys(want.Files()))
			if !slices.Equal(gotFiles, wantFiles) || slices.Contains(gotFiles, hftok.ChatTemplateFile) != c.wantJinja {
				t.Errorf("Files: ParseFiles %v, Load %v; chat_template.jinja wanted: %v", gotFiles, wantFiles, c.wantJinja)
			}
		})
	}
}

// ParseFiles refuses what a directory could not hold for Load: a file of
// another name, a file over its limit, no tokenizer.json.
func TestParseFilesRefuses(t *testing.T) {
	tj, cj := styleFiles(t, "gpt2")
	for _, c := range []struct {
		name  string
		files map[string][]byte
		want  string
	}{
		{"another name", map[string][]byte{hftok.TokenizerFile: tj, "../tokenizer.json": tj}, `"../tokenizer.json" is not a tokenizer file`},
		{"vocab.json", map[string][]byte{hftok.TokenizerFile: tj, "vocab.json": tj}, `"vocab.json" is not a tokenizer file`},
		{"too large", map[string][]byte{hftok.TokenizerFile: tj, hftok.ChatTemplateFile: make([]byte, hftok.MaxConfigBytes+1)}, "more than the"},
		{"no tokenizer.json", map[string][]byte{hftok.ConfigFile: cj}, "no tokenizer.json"},
		{"none", nil, "no tokenizer.json"},
	} {
		if _, err := hftok.ParseFiles(c.files); !errors.Is(err, hftok.ErrMalformed) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrMalformed saying %q", c.name, err, c.want)
		}
	}
	for _, name := range hftok.FileNames() {
		if hftok.MaxFileBytes(name) <= 0 {
			t.Errorf("MaxFileBytes(%s) = %d", name, hftok.MaxFileBytes(name))
		}
	}
	if hftok.MaxFileBytes("vocab.json") != 0 || !slices.IsSorted(hftok.FileNames()) {
		t.Errorf("MaxFileBytes(vocab.json) = %d, FileNames %v", hftok.MaxFileBytes("vocab.json"), hftok.FileNames())
	}
}
