package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The completion scripts parse in their shells and complete commands,
// subcommands, flags and file names where each belongs.
func TestCompletionScripts(t *testing.T) {
	dir := t.TempDir()
	script := func(shell string) string {
		t.Helper()
		s, err := run(t, "completion", shell)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "braid."+shell)
		os.WriteFile(path, []byte(s), 0o644)
		return path
	}
	if _, err := run(t, "completion", "tcsh"); err == nil || !strings.Contains(err.Error(), `want one shell: bash, zsh or fish; got ["tcsh"]`) {
		t.Errorf("completion tcsh: %v", err)
	}
	bash := script("bash")
	if out, err := exec.Command("bash", "-n", bash).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "file.txt"), nil, 0o644)
	for _, c := range []struct {
		line string // the words before the cursor, then the word being completed
		want []string
	}{
		{"braid tr", []string{"train"}},
		{"braid job st", []string{"status"}},
		{"braid status --j", []string{"--json"}},
		{"braid train --st", []string{"--steps"}},
		{"braid job status --api http://x --js", []string{"--json"}},
		{"braid job --api http://x st", []string{"status"}},
		{"braid train --out fi", []string{"file.txt"}},
		{"braid data verify fi", []string{"file.txt"}},
		{"braid ", []string{"bench", "ca", "completion", "data", "dev", "doctor", "eval", "export", "force-leave", "generate", "help", "job", "leave", "members", "node", "serve", "status", "train", "verify", "version"}},
	} {
		words := strings.Split(c.line, " ")
		sh := fmt.Sprintf(`cd %q && source %q && COMP_WORDS=(%s) && COMP_CWORD=%d && _braid braid %q %q && printf '%%s\n' "${COMPREPLY[@]}"`,
			dir, bash, quoteAll(words), len(words)-1, words[len(words)-1], words[len(words)-2])
		out, err := exec.Command("bash", "-c", sh).CombinedOutput()
		if got := strings.Fields(string(out)); err != nil || !slices.Equal(slices.Sorted(slices.Values(got)), c.want) {
			t.Errorf("bash completion of %q: %q, %v; want %q", c.line, got, err, c.want)
		}
	}
	if _, err := exec.LookPath("zsh"); err == nil {
		zsh := script("zsh")
		if out, err := exec.Command("zsh", "-n", zsh).CombinedOutput(); err != nil {
			t.Errorf("zsh -n: %v\n%s", err, out)
		}
		// zsh's compgen offers every word and leaves the matching to zsh:
		// what is checked here is that the script finds the command path.
		sh := fmt.Sprintf(`source %q && COMP_WORDS=(braid job --api x st) && COMP_CWORD=4 && _braid braid st x && print -l -- $COMPREPLY`, zsh)
		out, err := exec.Command("zsh", "-c", sh).CombinedOutput()
		if got := strings.Fields(string(out)); err != nil || !slices.Contains(got, "status") || slices.Contains(got, "train") {
			t.Errorf("zsh completion of \"braid job --api x st\": %q, %v; want job's subcommands", got, err)
		}
	} else {
		t.Log("no zsh here: its script is not checked")
	}
	if _, err := exec.LookPath("fish"); err == nil {
		fish := script("fish")
		if out, err := exec.Command("fish", "--no-execute", fish).CombinedOutput(); err != nil {
			t.Fatalf("fish --no-execute: %v\n%s", err, out)
		}
		for _, c := range []struct{ line, want string }{
			{"braid tr", "train"}, {"braid job st", "status"}, {"braid train --st", "--steps"}, {"braid job status --api x --js", "--json"},
		} {
			out, err := exec.Command("fish", "--no-config", "-c", fmt.Sprintf("source %q; complete -C %q", fish, c.line)).CombinedOutput()
			if first, _, _ := strings.Cut(string(out), "\t"); err != nil || first != c.want {
				t.Errorf("fish completion of %q: %v\n%s", c.line, err, out)
			}
		}
	} else {
		t.Log("no fish here: its script is not checked")
	}
}
