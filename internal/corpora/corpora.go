// Package corpora reads the shared corpora (real text that the project
// keeps beside the repository, in ../shared/corpora: see its README) and a
// sample of the Go distribution's source, for tests and benchmarks that
// tokenise real text. Tests that need the corpora skip where they are
// absent; the Go source is on every machine that builds the project.
//
// What this package does not do: copy, fetch or change anything.
package corpora

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Domains are the corpora's folders of text.
var Domains = []string{"english", "legal", "bio", "jargon"}

// A File is one text to tokenise.
type File struct {
	Name string
	Text []byte
}

// Dir returns the shared corpora's directory: shared/corpora beside the
// repository that holds the working directory (found by its go.mod).
func Dir() string {
	wd, err := os.Getwd()
	if err != nil {
		return filepath.Join("..", "shared", "corpora")
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "corpora")
		}
		if filepath.Dir(dir) == dir {
			return filepath.Join("..", "shared", "corpora")
		}
	}
}

// Files reads every file of the corpora, or skips the test where they are
// absent.
func Files(tb testing.TB) []File {
	tb.Helper()
	var files []File
	for _, domain := range Domains {
		err := filepath.WalkDir(filepath.Join(Dir(), domain), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			text, err := os.ReadFile(path)
			files = append(files, File{path, text})
			return err
		})
		if err != nil {
			tb.Skipf("corpora not available: %v", err)
		}
	}
	return files
}

// GoSource is a deterministic sample of the Go distribution's source: every
// 40th .go file under GOROOT/src in lexical order, about 1 MB.
func GoSource(tb testing.TB) []File {
	tb.Helper()
	root := filepath.Join(runtime.GOROOT(), "src")
	var files []File
	k := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !strings.HasSuffix(path, ".go") || !d.Type().IsRegular() {
			return err
		}
		if k++; k%40 != 0 {
			return nil
		}
		text, err := os.ReadFile(path)
		files = append(files, File{path, text})
		return err
	})
	if err != nil || len(files) == 0 {
		tb.Fatalf("Go source under %s: %d files, %v", root, len(files), err)
	}
	return files
}

// Sample is a few files of each kind: the first 64 KiB of one or two files
// of each corpus domain (where present) and a handful of Go files.
func Sample(tb testing.TB) []File {
	tb.Helper()
	var files []File
	for _, f := range []string{"english/moby-dick.txt", "legal/spdx/MIT.txt", "legal/spdx/GPL-3.0-only.txt", "bio/go-terms.txt", "jargon/jargon.txt"} {
		if text, err := os.ReadFile(filepath.Join(Dir(), f)); err == nil {
			files = append(files, File{f, text[:min(len(text), 64<<10)]})
		}
	}
	src := GoSource(tb)
	for i := 0; i < len(src); i += len(src) / 8 {
		files = append(files, src[i])
	}
	return files
}

// English is a fixed 1 MiB of English (Moby-Dick), or of Go source where
// the corpora are absent: the text benchmarks encode.
func English(tb testing.TB) []byte {
	tb.Helper()
	const size = 1 << 20
	text, err := os.ReadFile(filepath.Join(Dir(), "english", "moby-dick.txt"))
	if err != nil {
		for _, f := range []string{"fmt/print.go", "fmt/format.go", "fmt/scan.go", "go/parser/parser.go", "net/http/server.go"} {
			src, err := os.ReadFile(filepath.Join(runtime.GOROOT(), "src", f))
			if err != nil {
				tb.Skipf("no corpus and no Go source: %v", err)
			}
			text = append(text, src...)
		}
	}
	return text[:min(len(text), size)]
}
