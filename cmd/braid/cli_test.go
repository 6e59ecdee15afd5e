package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// reorderArgs puts every flag before the positional arguments of its
// command, with its value, and leaves a line without such a flag as it
// is (issue 18: "a flag after a positional argument is silently
// ignored").
func TestReorderArgs(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// The examples.
		{"job status ID --json", "job status --json ID"},
		{"job export ID --out D", "job export --out D ID"},
		{"job watch ID --every 1s --api http://x", "job watch --every 1s --api http://x ID"},
		{"data push DIR --api http://x --replicas 1", "data push --api http://x --replicas 1 DIR"},
		{"ca revoke n2 --dir D --api http://x", "ca revoke --dir D --api http://x n2"},
		// Values: --flag=value, a value that starts with a dash, a
		// boolean flag takes none, aliases, one-dash long names.
		{"job status ID --json=false", "job status --json=false ID"},
		{"train --lora-rank -1 --input D --out O", "train --lora-rank -1 --input D --out O"},
		{"data status NAME --json --api http://x", "data status --json --api http://x NAME"},
		{"generate -m M -n 5", "generate -m M -n 5"},
		{"job status ID -api http://x", "job status -api http://x ID"},
		// "--" ends the flags: what follows is an argument, and stays
		// one after the reordering.
		{"job status --api http://x -- -ID", "job status --api http://x -- -ID"},
		{"job status -- ID --json", "job status -- ID --json"},
		{"data verify DIR", "data verify DIR"},
		// Help: the flag skips the checks; the help command takes what
		// follows as it is.
		{"train --help", "train --help"},
		{"help job status", "help job status"},
		{"job status help", "job status help"},
		{"", ""},
	} {
		got, err := reorderArgs(newApp(), append([]string{"braid"}, strings.Fields(c.in)...))
		if err != nil || strings.Join(got[1:], " ") != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got[1:], err, c.want)
		}
	}
}

// A command line braid cannot run is refused in one line that says what
// to change, with exit code 2, before anything runs and without a page of
// help.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"train", "--input", dir, "--out", out, "--step", "5"}, "braid train: unknown flag --step; did you mean --steps?"},
		{[]string{"train", "--input", dir, "--out", out, "--stpes=5"}, "unknown flag --stpes; did you mean --steps?"},
		{[]string{"job", "submit", "--bsae", "M"}, "unknown flag --bsae; did you mean --base?"},
		{[]string{"job", "status", "ID", "--jsn"}, "braid job status: unknown flag --jsn; did you mean --json?"},
		{[]string{"train", "--input", dir, "--frobnicate"}, "braid train: unknown flag --frobnicate (`braid train --help` lists the flags)"},
		{[]string{"trian"}, `braid: unknown command "trian"; did you mean train?`},
		{[]string{"job", "stats", "ID"}, `braid job: unknown command "stats"; did you mean status?`},
		{[]string{"job", "--api", "http://x", "list"}, `braid job: unknown flag --api: it is a flag of braid job list, so give it after "list"`},
		{[]string{"train", "--input", dir}, "braid train: missing required flag --out DIR"},
		{[]string{"job", "submit", "--steps", "1"}, "braid job submit: missing required flags --model DIR, --dataset NAME, --global-batch"},
		{[]string{"train", "--input", dir, "--out"}, "braid train: --out needs a value: DIR"},
		{[]string{"train", "--input", dir, "--out", out, "--steps", "ten"}, `braid train: invalid value "ten" for flag --steps`},
		{[]string{"train", "--input", dir, "--out", out, "stray", "--steps", "2"}, `braid train: takes no arguments, got "stray"`},
		{[]string{"generate", "--model", dir, "stray", "--tokens", "5"}, `braid generate: takes no arguments, got "stray"`},
		{[]string{"data", "verify", dir, "--json"}, "braid data verify: unknown flag --json"},
	} {
		log, err := run(t, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: %v; want one line with %q", c.args, err, c.want)
			continue
		}
		if ec, ok := errors.AsType[cli.ExitCoder](err); !ok || ec.ExitCode() != exitUsage {
			t.Errorf("%q: %v, want exit code %d", c.args, err, exitUsage)
		}
		if log != "" {
			t.Errorf("%q printed %q besides the error", c.args, log)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused command wrote %s", out)
	}
}

// Every flag of every command, given after a positional argument, is
// honoured (the command sees it set to what was typed, and the argument as
// its argument) or, for a command that takes no arguments, refused, naming
// the argument: never dropped.
func TestEveryFlagAfterAnArgument(t *testing.T) {
	type seen struct {
		args  []string
		value string
	}
	var leaves []string
	var walk func(path string, cmds []*cli.Command)
	walk = func(path string, cmds []*cli.Command) {
		for _, c := range cmds {
			if p := strings.TrimSpace(path + " " + c.Name); len(c.Subcommands) > 0 {
				walk(p, c.Subcommands)
			} else {
				leaves = append(leaves, p)
			}
		}
	}
	walk("", newApp().Commands)
	checked := 0
	for _, path := range leaves {
		// A fresh tree for each command; its action records what it got.
		app := newApp()
		cmd := findCommand(app.Commands, strings.Fields(path))
		l := commandLine("braid", cmd)
		var required []string
		for _, f := range cmd.Flags {
			if isRequired(f) {
				required = append(required, "--"+f.Names()[0])
				if takesValue(f) {
					required = append(required, flagValue(f))
				}
			}
		}
		for _, f := range cmd.Flags {
			name := f.Names()[0]
			for _, env := range f.(cli.DocGenerationFlag).GetEnvVars() {
				t.Setenv(env, "")
				os.Unsetenv(env)
			}
			var got *seen
			cmd.Before = nil
			cmd.Action = func(c *cli.Context) error {
				got = &seen{args: c.Args().Slice(), value: fmt.Sprint(c.Value(name))}
				return nil
			}
			line := append(append(strings.Fields(path), required...), "POS", "--"+name)
			want := "true"
			if takesValue(f) {
				want = flagValue(f)
				line = append(line, want)
			}
			_, err := runWith(t, app, line...)
			switch {
			case !l.args:
				if err == nil || !strings.Contains(err.Error(), `takes no arguments, got "POS"`) || got != nil {
					t.Errorf("%q: %v (ran: %v); want the argument refused", line, err, got != nil)
				}
			case err != nil || got == nil:
				t.Errorf("%q: %v; want it run", line, err)
			case !slices.Equal(got.args, []string{"POS"}) || !strings.Contains(got.value, want):
				t.Errorf("%q: arguments %q, --%s %q; want [POS] and %q", line, got.args, name, got.value, want)
			}
			checked++
		}
	}
	if checked < 100 {
		t.Errorf("checked %d flags of %d commands; the tree has more", checked, len(leaves))
	}
	t.Logf("%d flags of %d commands", checked, len(leaves))
}

// flagValue is a value f parses, distinct from its default.
func flagValue(f cli.Flag) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return "3s"
	case *cli.Float64Flag:
		return "0.25"
	case *cli.IntFlag, *cli.Int64Flag, *cli.Uint64Flag, *cli.UintFlag:
		return "7"
	}
	return "v7"
}

// The examples of flags after arguments that are not cluster
// commands: each is refused (train and generate take no arguments),
// before anything is trained or written.
func TestTrainAndGenerateRefuseStrayArguments(t *testing.T) {
	corpus, dir := corpusDir(t), t.TempDir()
	ck, out := filepath.Join(dir, "ck"), filepath.Join(dir, "out")
	if log, err := run(t, "train", "--input", corpus, "--out", ck, "--steps", "1", "--batch", "1", "--seq-len", "16", "--eval-every", "0"); err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	for _, args := range [][]string{
		{"train", "--init", ck, "--input", corpus, "--out", out, "stray", "--steps", "2"},
		{"generate", "--model", ck, "stray", "--tokens", "5"},
	} {
		log, err := run(t, args...)
		if err == nil || !strings.Contains(err.Error(), `takes no arguments, got "stray"`) || log != "" {
			t.Errorf("%q: %v\n%s", args, err, log)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("train wrote %s", out)
	}
	// The flags themselves, after the others, are honoured.
	log, err := run(t, "train", "--init", ck, "--input", corpus, "--out", out, "--batch", "1", "--seq-len", "16", "--eval-every", "0", "--steps", "2")
	if err != nil || !strings.Contains(log, "step     2/2") {
		t.Errorf("train --steps 2: %v\n%s", err, log)
	}
	log, err = run(t, "generate", "-m", ck, "--temperature", "0", "-n", "5", "--prompt", "ab")
	if got := strings.TrimSuffix(log, "\n"); err != nil || len(got) > len("ab")+5*4 || !strings.HasPrefix(got, "ab") {
		t.Errorf("generate -n 5: %v: %q", err, log)
	}
}

// Help lists one default per flag, marks the required ones, and names a
// flag's value once.
func TestHelpText(t *testing.T) {
	for _, args := range [][]string{{"job", "submit", "--help"}, {"train", "--help"}, {"data", "prepare", "-h"}, {"help", "eval"}} {
		log, err := run(t, args...)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		for _, line := range strings.Split(log, "\n") {
			if strings.Count(line, "(default") > 1 || strings.Contains(line, "(default: 0)") || strings.Contains(line, "(default: false)") {
				t.Errorf("%v: %q", args, line)
			}
		}
		if !strings.Contains(log, "(required)") {
			t.Errorf("%v marks no flag required:\n%s", args, log)
		}
	}
	log, _ := run(t, "job", "submit", "--help")
	words := strings.Join(strings.Fields(log), " ") // the columns' padding aside
	for _, want := range []string{
		"--model, -m, --base DIR the model DIR to start from (old name: --base) (required)",
		"nodes holding each checkpoint (default 2) --wire", // --replicas: the usage's default, not also "(default: 0)"
		`--wire value all-reduce element type on the wire: fp32 (exact), bf16, fp16 or int8 (default: "fp32")`,
		"--dataset NAME dataset NAME or id (with --federated: each unit's local dataset) (repeatable) (required)",
		"[$BRAID_API]",
	} {
		if !strings.Contains(words, want) {
			t.Errorf("job submit --help lacks %q:\n%s", want, log)
		}
	}
}
