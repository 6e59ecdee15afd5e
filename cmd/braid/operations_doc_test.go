package main

import (
	"os"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// docs/OPERATIONS.md's table of `braid node` settings names every key the
// config file takes, with its environment variables: a flag added to
// nodeCommand without a row fails here, naming it.
func TestOperationsDocListsEveryNodeKey(t *testing.T) {
	b, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	rows := map[string]string{} // key → its table row
	for _, line := range strings.Split(doc, "\n") {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if key, _, ok := strings.Cut(rest, "`"); ok {
				rows[key] = line
			}
		}
	}
	n := 0
	for _, f := range nodeCommand().Flags {
		name := f.Names()[0]
		if name == "config-file" { // the file itself, not a key of it
			continue
		}
		var envs []string
		var hidden bool
		switch f := f.(type) {
		case *cli.StringFlag:
			envs, hidden = f.EnvVars, f.Hidden
		case *cli.StringSliceFlag:
			envs, hidden = f.EnvVars, f.Hidden
		case *cli.IntFlag:
			envs, hidden = f.EnvVars, f.Hidden
		case *cli.Int64Flag:
			envs, hidden = f.EnvVars, f.Hidden
		case *cli.BoolFlag:
			envs, hidden = f.EnvVars, f.Hidden
		case *cli.DurationFlag:
			envs, hidden = f.EnvVars, f.Hidden
		default:
			t.Errorf("--%s: a %T, which this test does not know: add it here", name, f)
			continue
		}
		n++
		if hidden { // an old name: mentioned, not tabled
			if !strings.Contains(doc, "`"+name+"`") {
				t.Errorf("docs/OPERATIONS.md does not mention the old key `%s`", name)
			}
			continue
		}
		row, ok := rows[name]
		if !ok {
			t.Errorf("docs/OPERATIONS.md has no row for the config key `%s` (--%s): add one to the table under Configuration", name, name)
			continue
		}
		if len(envs) > 0 && !strings.Contains(row, "`"+envs[0]+"`") {
			t.Errorf("docs/OPERATIONS.md's row for `%s` does not name its environment variable %s: %s", name, envs[0], row)
		}
	}
	if n < 15 {
		t.Fatalf("only %d flags of braid node checked: is nodeCommand still the command the doc describes?", n)
	}
	// No row for a key that no longer exists.
	known := map[string]bool{}
	for _, f := range nodeCommand().Flags {
		known[f.Names()[0]] = true
	}
	start, end := strings.Index(doc, "## Configuration"), strings.Index(doc, "## Certificates")
	if start < 0 || end < start {
		t.Fatal("docs/OPERATIONS.md has no Configuration section before Certificates")
	}
	for key, row := range rows {
		if strings.Contains(doc[start:end], row) && !known[key] {
			t.Errorf("docs/OPERATIONS.md lists `%s`, which braid node does not take", key)
		}
	}
}
