package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// How braid reads its command line. urfave/cli v2 stops reading flags at
// the first positional argument, so `braid job status ID --json` would
// take --json for a second job id, and `braid train ... stray --steps 2`
// would train the default 200 steps. runApp therefore puts the line in the
// order v2 reads, from each command's own flag definitions: at every
// level of the command path, the flags (each with its value when the flag
// takes one) first, then the subcommand or the positional arguments, `--`
// ending the flags. On the way it refuses, in one line and with exitUsage,
// what v2 would drop or answer with a page of help: an unknown flag (with
// the nearest flag name), an unknown command, a flag without its value,
// a missing required flag, and arguments to a command that takes none.
//
// braid stays on v2 rather than moving to urfave/cli v3 (which reads flags
// after arguments itself): v3 changes the signature of every action and
// how each reads its flags, in every command file, several of which other
// work changes at the same time, while this reordering is one function in
// front of v2 that every command goes through.

// Exit codes of braid.
const (
	exitFailed      = 1   // the command ran and failed
	exitUsage       = 2   // the command line is wrong; nothing was done
	exitInterrupted = 130 // interrupted (train saves its checkpoint first)
)

// runApp runs app on the command line args (args[0] is the program's
// name), in the order reorderArgs puts it.
func runApp(ctx context.Context, app *cli.App, args []string) error {
	line, err := reorderArgs(app, args)
	if err != nil {
		return err
	}
	return app.RunContext(ctx, line)
}

// usageError is a command line braid cannot run: main prints it as one
// line and exits with exitUsage.
type usageError struct {
	cmd string // the command path: "braid job status"
	msg string
}

func (e *usageError) Error() string { return e.cmd + ": " + e.msg }
func (e *usageError) ExitCode() int { return exitUsage }

func usagef(cmd, format string, args ...any) *usageError {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

// cmdLine is what the command line of one command (or of the app itself)
// may hold.
type cmdLine struct {
	path    string              // "braid job status"
	flags   []cli.Flag          // including --help (and, for the app, --version)
	byName  map[string]cli.Flag // every name and alias of flags
	subs    []*cli.Command      // its subcommands, without help
	helpCmd bool                // `help` is a subcommand (urfave adds it)
	args    bool                // takes positional arguments (a non-blank ArgsUsage)
}

func newCmdLine(path string, flags []cli.Flag, subs []*cli.Command, helpCmd, args bool) *cmdLine {
	l := &cmdLine{path: path, flags: flags, subs: subs, helpCmd: helpCmd, args: args, byName: map[string]cli.Flag{}}
	for _, f := range flags {
		for _, n := range f.Names() {
			l.byName[n] = f
		}
	}
	return l
}

func appLine(app *cli.App) *cmdLine {
	flags := slices.Clone(app.Flags)
	if !app.HideHelp && cli.HelpFlag != nil {
		flags = append(flags, cli.HelpFlag)
	}
	if !app.HideVersion && app.Version != "" {
		flags = append(flags, cli.VersionFlag)
	}
	return newCmdLine(app.Name, flags, withoutHelp(app.Commands), !app.HideHelp && !app.HideHelpCommand, strings.TrimSpace(app.ArgsUsage) != "")
}

func commandLine(parent string, c *cli.Command) *cmdLine {
	flags := slices.Clone(c.Flags)
	if !c.HideHelp && cli.HelpFlag != nil && !slices.Contains(flags, cli.HelpFlag) {
		flags = append(flags, cli.HelpFlag)
	}
	return newCmdLine(parent+" "+c.Name, flags, withoutHelp(c.Subcommands), !c.HideHelp && !c.HideHelpCommand, strings.TrimSpace(c.ArgsUsage) != "")
}

// isHelpCommand says whether name is urfave's help command ("help", "h"),
// which it adds to the app and to every command.
func isHelpCommand(name string) bool { return name == "help" || name == "h" }

func withoutHelp(cmds []*cli.Command) []*cli.Command {
	return slices.DeleteFunc(slices.Clone(cmds), func(c *cli.Command) bool { return isHelpCommand(c.Name) })
}

func (l *cmdLine) sub(name string) *cli.Command {
	for _, c := range l.subs {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// reorderArgs returns args in the order urfave/cli v2 reads (see the top
// of this file), or the usageError of a line braid cannot run.
func reorderArgs(app *cli.App, args []string) ([]string, error) {
	if len(args) == 0 {
		return args, nil
	}
	out := []string{args[0]}
	l, rest, ended := appLine(app), args[1:], false
	for {
		p, err := l.split(rest, ended)
		if err != nil {
			return nil, err
		}
		out = append(out, p.flags...)
		switch {
		case p.sub != nil && isHelpCommand(p.sub.Name) && l.sub(p.sub.Name) == nil:
			// `braid help job`, `braid job status help`: urfave shows
			// the help; the words after it are its own.
			return append(append(out, p.sub.Name), p.rest...), nil
		case p.sub != nil:
			out = append(out, p.sub.Name)
			l, rest, ended = commandLine(l.path, p.sub), p.rest, p.ended
			continue
		}
		if !p.help {
			if len(p.pos) > 0 && !l.args {
				return nil, usagef(l.path, "takes no arguments, got %s", quoteAll(p.pos))
			}
			if err := l.checkRequired(p.seen); err != nil {
				return nil, err
			}
		}
		if slices.ContainsFunc(p.pos, func(a string) bool { return strings.HasPrefix(a, "-") }) {
			out = append(out, "--")
		}
		return append(out, p.pos...), nil
	}
}

// linePart is one command's part of a command line.
type linePart struct {
	flags []string          // its flags, each with its value if it takes one, in the order given
	seen  map[cli.Flag]bool // the flags among them
	help  bool              // --help or --version is among them
	pos   []string          // its positional arguments
	sub   *cli.Command      // the subcommand named after them, if any
	rest  []string          // the tokens after sub
	ended bool              // a "--" ended the flags
}

// split reads l's part of the line from tokens: flags and positional
// arguments up to the first argument that names a subcommand. ended says
// whether a "--" before tokens ended the flags.
func (l *cmdLine) split(tokens []string, ended bool) (linePart, error) {
	p := linePart{seen: map[cli.Flag]bool{}, ended: ended}
	for i := 0; i < len(tokens); i++ {
		t := tokens[i]
		if !p.ended && t == "--" {
			p.ended = true
			continue
		}
		if p.ended || len(t) < 2 || t[0] != '-' {
			if len(p.pos) == 0 {
				if p.sub = l.sub(t); p.sub == nil && l.helpCmd && isHelpCommand(t) {
					p.sub = &cli.Command{Name: t}
				}
				if p.sub != nil {
					p.rest = tokens[i+1:]
					return p, nil
				}
				if len(l.subs) > 0 && !l.args {
					return p, l.unknownCommand(t)
				}
			}
			p.pos = append(p.pos, t)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(t, "-"), "-"), "=")
		f, ok := l.byName[name]
		if !ok {
			return p, l.unknownFlag(t, name, tokens[i+1:])
		}
		p.seen[f] = true
		p.help = p.help || slices.Contains(f.Names(), "help") || slices.Contains(f.Names(), "version")
		p.flags = append(p.flags, t)
		if takesValue(f) && !hasValue {
			if i+1 == len(tokens) {
				return p, usagef(l.path, "%s needs a value%s", flagName(name), strings.Replace(placeholderText(f), " ", ": ", 1))
			}
			i++
			p.flags = append(p.flags, tokens[i])
		}
	}
	return p, nil
}

// checkRequired refuses a line without one of l's required flags (unless
// an environment variable of the flag sets it); seen are the flags given.
func (l *cmdLine) checkRequired(seen map[cli.Flag]bool) error {
	var missing []string
	for _, f := range l.flags {
		if !isRequired(f) || seen[f] || fromEnv(f) {
			continue
		}
		missing = append(missing, flagName(f.Names()[0])+placeholderText(f))
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return usagef(l.path, "missing required flag %s", missing[0])
	}
	return usagef(l.path, "missing required flags %s", strings.Join(missing, ", "))
}

func fromEnv(f cli.Flag) bool {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return false
	}
	for _, e := range df.GetEnvVars() {
		if _, ok := os.LookupEnv(e); ok {
			return true
		}
	}
	return false
}

func (l *cmdLine) unknownFlag(token, name string, after []string) error {
	var names []string
	for _, f := range l.flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		names = append(names, f.Names()...)
	}
	flag, _, _ := strings.Cut(token, "=")
	if s := nearest(name, names); s != "" {
		return usagef(l.path, "unknown flag %s; did you mean %s?", flag, flagName(s))
	}
	// A subcommand's flag given before the subcommand's name.
	for _, t := range after {
		if s := l.sub(t); s != nil {
			if _, ok := commandLine(l.path, s).byName[name]; ok {
				return usagef(l.path, "unknown flag %s: it is a flag of %s %s, so give it after %q", flag, l.path, s.Name, s.Name)
			}
			break
		}
	}
	return usagef(l.path, "unknown flag %s (`%s --help` lists the flags)", flag, l.path)
}

func (l *cmdLine) unknownCommand(name string) error {
	var names []string
	for _, c := range l.subs {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	if s := nearest(name, names); s != "" {
		return usagef(l.path, "unknown command %q; did you mean %s?", name, s)
	}
	return usagef(l.path, "unknown command %q (`%s --help` lists the commands)", name, l.path)
}

// nearest is the name in names closest to typed, when one is close enough
// to be what was meant: at most one edit away for a short name and two
// for a longer one, or, failing that, the only name that typed begins.
func nearest(typed string, names []string) string {
	best, bestD := "", len(typed)
	for _, n := range names {
		if d := editDistance(typed, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best != "" && bestD <= min(2, max(1, len(typed)/3)) {
		return best
	}
	var prefixed []string
	for _, n := range names {
		if len(typed) >= 3 && strings.HasPrefix(n, typed) {
			prefixed = append(prefixed, n)
		}
	}
	if len(prefixed) == 1 {
		return prefixed[0]
	}
	return ""
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of neighbours
// each count one.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// flagName is name as typed on a command line: -n, --steps.
func flagName(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

func takesValue(f cli.Flag) bool {
	if df, ok := f.(cli.DocGenerationFlag); ok {
		return df.TakesValue()
	}
	return true
}

// placeholderText is " DIR" for a flag whose usage names its value `DIR`,
// "" for another.
func placeholderText(f cli.Flag) string {
	if df, ok := f.(cli.DocGenerationFlag); ok && df.TakesValue() {
		if p, _ := unquoteUsage(df.GetUsage()); p != "" {
			return " " + p
		}
	}
	return ""
}

// quoteAll writes args as `"a" "b"`.
func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = fmt.Sprintf("%q", a)
	}
	return strings.Join(q, " ")
}

// unquoteUsage returns the placeholder a usage string names between
// backquotes, and the usage without the backquotes (as urfave/cli does).
func unquoteUsage(usage string) (placeholder, text string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name := usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+2+j:]
}

// prepareCommands makes every command in cmds, and their subcommands,
// answer a flag value it cannot parse (--steps ten) with one line and
// exitUsage instead of its help page.
func prepareCommands(cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		prepareCommands(c.Subcommands)
		c.OnUsageError = onUsageError
	}
	return cmds
}

var goFlagName = regexp.MustCompile(`flag (-[^\s:]+)`)

func onUsageError(c *cli.Context, err error, _ bool) error {
	// Go's flag package names a flag with one dash: -steps.
	msg := goFlagName.ReplaceAllStringFunc(err.Error(), func(m string) string {
		return "flag " + flagName(strings.TrimLeft(strings.TrimPrefix(m, "flag "), "-"))
	})
	path := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		path = c.Command.HelpName
	}
	return &usageError{cmd: path, msg: msg}
}

// flagString is how help lists a flag: its names, its value's placeholder
// once, its usage, "(required)" or its default (one: none when the usage
// states it or the default is a zero value, which means "unset"), and its
// environment variables.
func flagString(f cli.Flag) string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return strings.Join(f.Names(), ", ")
	}
	placeholder, usage := unquoteUsage(df.GetUsage())
	var names []string
	for _, n := range df.Names() {
		names = append(names, flagName(n))
	}
	s := strings.Join(names, ", ")
	if df.TakesValue() {
		if placeholder == "" {
			placeholder = "value"
		}
		s += " " + placeholder
	}
	if sf, ok := f.(cli.DocGenerationSliceFlag); ok && sf.IsSliceFlag() && !strings.Contains(usage, "repeat") {
		usage += " (repeatable)"
	}
	switch def := df.GetDefaultText(); {
	case isRequired(f):
		usage += " (required)"
	case !df.TakesValue() || strings.Contains(usage, "(default"):
	case def != "" && def != "0" && def != "0s" && def != `""` && def != "[]" && def != "false":
		usage += " (default: " + def + ")"
	}
	if env := df.GetEnvVars(); len(env) > 0 {
		usage += " [$" + strings.Join(env, ", $") + "]"
	}
	return s + "\t" + strings.TrimSpace(usage)
}

func isRequired(f cli.Flag) bool {
	rf, ok := f.(cli.RequiredFlag)
	return ok && rf.IsRequired()
}

// braid's help lists every flag with flagString (urfave/cli v2 formats
// flags through this package variable).
func init() { cli.FlagStringer = flagString }
