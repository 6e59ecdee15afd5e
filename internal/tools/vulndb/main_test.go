package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Two entries in x/vulndb's data/osv form: one in the standard library, one
// that lists a module twice (two ranges) and another module once.
var testEntries = map[string]string{
	"GO-2026-0002.json": `{
  "schema_version": "1.3.1",
  "id": "GO-2026-0002",
  "modified": "2026-03-01T00:00:00Z",
  "aliases": ["CVE-2026-2"],
  "affected": [
    {"package": {"name": "example.com/a", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.2.0"}]}]},
    {"package": {"name": "example.com/a", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "2.0.0"}, {"fixed": "2.1.0"}]}]},
    {"package": {"name": "stdlib", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}]}]}
  ]
}
`,
	"GO-2026-0001.json": `{
  "schema_version": "1.3.1",
  "id": "GO-2026-0001",
  "modified": "2026-05-01T00:00:00Z",
  "affected": [
    {"package": {"name": "stdlib", "ecosystem": "Go"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.26.10"}]}]}
  ]
}
`,
}

func writeEntries(t *testing.T, entries map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range entries {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestBuildLaysOutTheV1Database(t *testing.T) {
	osv := writeEntries(t, testEntries)
	out := filepath.Join(t.TempDir(), "db")
	// A stale database is replaced whole.
	if err := os.MkdirAll(filepath.Join(out, "ID"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "ID", "GO-2000-0001.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}

	n, err := build(osv, out)
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("build reported %d entries, want 2", n)
	}

	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// The index is what govulncheck's client decodes (x/vuln
	// internal/client/schema.go); sorted by path and by id, each module
	// naming an entry once.
	for _, c := range []struct{ file, want string }{
		{"index/db.json", `{"modified":"2026-05-01T00:00:00Z"}`},
		{"index/modules.json", `[{"path":"example.com/a","vulns":[{"id":"GO-2026-0002","modified":"2026-03-01T00:00:00Z"}]},` +
			`{"path":"stdlib","vulns":[{"id":"GO-2026-0001","modified":"2026-05-01T00:00:00Z"},{"id":"GO-2026-0002","modified":"2026-03-01T00:00:00Z"}]}]`},
		{"index/vulns.json", `[{"id":"GO-2026-0001","modified":"2026-05-01T00:00:00Z"},{"id":"GO-2026-0002","modified":"2026-03-01T00:00:00Z","aliases":["CVE-2026-2"]}]`},
	} {
		if got := read(c.file); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.file, got, c.want)
		}
		if !json.Valid([]byte(read(c.file))) {
			t.Errorf("%s is not JSON", c.file)
		}
	}
	for name, body := range testEntries {
		if got := read(filepath.Join("ID", name)); got != body {
			t.Errorf("ID/%s is not the entry as read:\n%s", name, got)
		}
	}
	if _, err := os.Stat(filepath.Join(out, "ID", "GO-2000-0001.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale entry survived the rebuild: %v", err)
	}
}

func TestBuildRefusesBadEntriesAndKeepsTheOldDatabase(t *testing.T) {
	for _, c := range []struct {
		name    string
		entries map[string]string
		want    error
	}{
		{"empty directory", map[string]string{}, errNoEntries},
		{"not JSON", map[string]string{"GO-2026-0001.json": `{"id":`}, errBadEntry},
		{"id differs from the file name", map[string]string{"GO-2026-0001.json": `{"id":"GO-2026-0009"}`}, errBadEntry},
		{"id with a path", map[string]string{"x.json": `{"id":"../x"}`}, errBadEntry},
		{"module without a path", map[string]string{"GO-2026-0001.json": `{"id":"GO-2026-0001","affected":[{"package":{}}]}`}, errBadEntry},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "db")
			if err := os.MkdirAll(out, 0o755); err != nil {
				t.Fatal(err)
			}
			keep := filepath.Join(out, "keep")
			if err := os.WriteFile(keep, []byte("old"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := build(writeEntries(t, c.entries), out); !errors.Is(err, c.want) {
				t.Fatalf("build: %v, want %v", err, c.want)
			}
			if b, err := os.ReadFile(keep); err != nil || !bytes.Equal(b, []byte("old")) {
				t.Errorf("the old database changed: %q, %v", b, err)
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".vulndb-*"))
			if len(left) != 0 {
				t.Errorf("temporary directories left behind: %v", left)
			}
		})
	}
}
