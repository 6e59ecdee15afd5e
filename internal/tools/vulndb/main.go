// Command vulndb lays out a directory of OSV entries, as the module
// golang.org/x/vulndb ships them in data/osv, as a Go vulnerability database
// in the v1 layout that `govulncheck -db file:///DIR` reads:
//
//	index/db.json       {"modified": the latest entry's modified time}
//	index/modules.json  [{"path": module, "vulns": [{"id", "modified"}]}], sorted by path and id
//	index/vulns.json    [{"id", "modified", "aliases"}], sorted by id
//	ID/GO-YYYY-NNNN.json  each OSV entry, byte for byte as read
//
// `make vuln` runs it, so that govulncheck needs no network: the entries come
// from the module proxy like any module.
//
// It does not interpret version ranges. The index leaves out the optional
// "fixed" hint, with which govulncheck skips entries fixed before a module's
// version without reading them; without it govulncheck reads every entry of a
// module it uses and matches the entry's own ranges, which is the same answer,
// a few hundred file reads later.
//
// The database is built in a temporary directory beside -out and renamed to
// -out when complete, replacing what was there, so a reader never sees half
// of one.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

func main() {
	osvDir := flag.String("osv", "", "directory of OSV entries `GO-*.json` (x/vulndb's data/osv)")
	out := flag.String("out", "", "`directory` to write the database to (replaced)")
	flag.Parse()
	if *osvDir == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: vulndb -osv DIR -out DIR")
		os.Exit(2)
	}
	n, err := build(*osvDir, *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
	fmt.Printf("vulndb: %d entries from %s in %s\n", n, *osvDir, *out)
}

// entry is the part of an OSV entry that the index needs.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases"`
	Affected []struct {
		Module struct {
			Path string `json:"name"` // OSV names the Go module "package.name"
		} `json:"package"`
	} `json:"affected"`
}

type dbMeta struct {
	Modified time.Time `json:"modified"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

var (
	errNoEntries = errors.New("vulndb: no OSV entries")
	errBadEntry  = errors.New("vulndb: bad OSV entry")
)

// build writes the database for the entries in osvDir to out and returns
// how many entries it holds. An error before the final replacement leaves
// out as it was.
func build(osvDir, out string) (int, error) {
	names, err := filepath.Glob(filepath.Join(osvDir, "*.json"))
	if err != nil {
		return 0, err
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("%w in %s", errNoEntries, osvDir)
	}
	sort.Strings(names)

	tmp, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), ".vulndb-*")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	for _, d := range []string{"index", "ID"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			return 0, err
		}
	}

	var db dbMeta
	modules := map[string]*moduleMeta{}
	vulns := make([]vulnMeta, 0, len(names))
	for _, name := range names {
		raw, err := os.ReadFile(name)
		if err != nil {
			return 0, err
		}
		var e entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return 0, fmt.Errorf("%w: %s: %v", errBadEntry, name, err)
		}
		// The ID names the file govulncheck opens: it must be the file's
		// name and a plain one.
		if e.ID == "" || filepath.Base(name) != e.ID+".json" || strings.ContainsAny(e.ID, `/\`) {
			return 0, fmt.Errorf("%w: %s: id %q does not match the file name", errBadEntry, name, e.ID)
		}
		if e.Modified.After(db.Modified) {
			db.Modified = e.Modified
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		for _, a := range e.Affected {
			p := a.Module.Path
			if p == "" {
				return 0, fmt.Errorf("%w: %s: an affected module without a path", errBadEntry, name)
			}
			m := modules[p]
			if m == nil {
				m = &moduleMeta{Path: p}
				modules[p] = m
			}
			// An entry may list one module several times (one range each);
			// the index names it once. An entry's modules are added
			// together, so a repeat is the last one added.
			if n := len(m.Vulns); n == 0 || m.Vulns[n-1].ID != e.ID {
				m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified})
			}
		}
		if err := os.WriteFile(filepath.Join(tmp, "ID", e.ID+".json"), raw, 0o644); err != nil {
			return 0, err
		}
	}

	mods := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })
	for name, v := range map[string]any{"db.json": db, "modules.json": mods, "vulns.json": vulns} {
		b, err := json.Marshal(v)
		if err != nil {
			return 0, err
		}
		if err := os.WriteFile(filepath.Join(tmp, "index", name), b, 0o644); err != nil {
			return 0, err
		}
	}

	if err := os.RemoveAll(out); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp, out); err != nil {
		return 0, err
	}
	return len(names), nil
}
