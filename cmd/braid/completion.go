package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionCommand is `braid completion bash|zsh|fish`: a completion
// script for the shell, written from the command tree, so it completes
// exactly the commands and flags this binary has. The scripts are static
// (they never run braid): commands and subcommands, each command's flags,
// and file names for a flag's value and for positional arguments.
func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: "bash: source <(braid completion bash), in ~/.bashrc, or save it as\n" +
			"     /etc/bash_completion.d/braid (or ~/.local/share/bash-completion/completions/braid)\n" +
			"zsh:  source <(braid completion zsh), in ~/.zshrc\n" +
			"fish: braid completion fish > ~/.config/fish/completions/braid.fish",
		Action: func(c *cli.Context) error {
			tree := completionTree(c.App)
			switch shell := c.Args().First(); {
			case c.NArg() != 1:
			case shell == "bash":
				return writeBashCompletion(c.App.Writer, tree)
			case shell == "zsh":
				fmt.Fprintln(c.App.Writer, "# zsh completion for braid: source <(braid completion zsh)\n(( $+functions[compdef] )) || { autoload -U +X compinit && compinit }\nautoload -U +X bashcompinit && bashcompinit")
				return writeBashCompletion(c.App.Writer, tree)
			case shell == "fish":
				return writeFishCompletion(c.App.Writer, tree)
			}
			return usagef(c.Command.HelpName, "want one shell: bash, zsh or fish; got %q", c.Args().Slice())
		},
	}
}

// completionNode is one command of the tree as the scripts see it.
type completionNode struct {
	path   string // "job submit"; "" for braid itself
	usage  string
	cmds   []*completionNode
	flags  []completionFlag
	args   bool // takes positional arguments
	hidden bool
}

type completionFlag struct {
	names []string // as typed: --out, -o
	value bool     // takes a value
	usage string
}

// completionTree is the commands of app, with their flags (and --help),
// without urfave's help command; the help command is listed among braid's
// own commands.
func completionTree(app *cli.App) *completionNode {
	root := &completionNode{flags: completionFlags(appLine(app).flags)}
	for _, c := range withoutHelp(app.Commands) {
		root.cmds = append(root.cmds, completionCommandNode("", c))
	}
	root.cmds = append(root.cmds, &completionNode{path: "help", usage: "list the commands, or show a command's help", args: true})
	return root
}

func completionCommandNode(parent string, c *cli.Command) *completionNode {
	l := commandLine(parent, c)
	n := &completionNode{path: strings.TrimSpace(parent + " " + c.Name), usage: c.Usage, flags: completionFlags(l.flags), args: l.args, hidden: c.Hidden}
	for _, s := range l.subs {
		n.cmds = append(n.cmds, completionCommandNode(n.path, s))
	}
	return n
}

func completionFlags(flags []cli.Flag) []completionFlag {
	var out []completionFlag
	for _, f := range flags {
		if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
			continue
		}
		cf := completionFlag{value: takesValue(f)}
		for _, n := range f.Names() {
			cf.names = append(cf.names, flagName(n))
		}
		if df, ok := f.(cli.DocGenerationFlag); ok {
			_, cf.usage = unquoteUsage(df.GetUsage())
		}
		out = append(out, cf)
	}
	return out
}

// walk calls f on n and every command below it, depth first.
func (n *completionNode) walk(f func(*completionNode)) {
	f(n)
	for _, c := range n.cmds {
		c.walk(f)
	}
}

func (n *completionNode) words() (cmds, flags, values []string) {
	for _, c := range n.cmds {
		if !c.hidden {
			cmds = append(cmds, c.path[strings.LastIndexByte(c.path, ' ')+1:])
		}
	}
	for _, f := range n.flags {
		flags = append(flags, f.names...)
		if f.value {
			values = append(values, f.names...)
		}
	}
	return cmds, flags, values
}

// writeBashCompletion writes the bash script, which zsh runs too (through
// bashcompinit): it reads the words before the cursor (COMP_WORDS from
// index 1, in both shells) to find the command path, skipping flags and
// their values, then offers that command's subcommands or flags, or file
// names for a flag's value and for arguments.
func writeBashCompletion(w io.Writer, tree *completionNode) error {
	var b strings.Builder
	b.WriteString(`# bash completion for braid: source <(braid completion bash)

# _braid_spec sets cmds, flags and vflags (the flags that take a value) of
# the command path $1.
_braid_spec() {
	case "$1" in
`)
	tree.walk(func(n *completionNode) {
		cmds, flags, values := n.words()
		fmt.Fprintf(&b, "\t%s) cmds=%s; flags=%s; vflags=%s; args=%d ;;\n",
			shQuote(n.path), shQuote(strings.Join(cmds, " ")), shQuote(strings.Join(flags, " ")), shQuote(strings.Join(values, " ")), boolInt(n.args))
	})
	b.WriteString(`	*) cmds=""; flags=""; vflags=""; args=1 ;;
	esac
}

_braid() {
	local cur="$2" cmdpath="" cmds flags vflags args w skip=0 before=$((COMP_CWORD - 1))
	_braid_spec ""
	for w in "${COMP_WORDS[@]:1:$before}"; do
		if ((skip)); then
			skip=0
			continue
		fi
		case "$w" in
		--) break ;;
		-*=*) continue ;;
		-*)
			[[ " $vflags " == *" $w "* ]] && skip=1
			continue
			;;
		esac
		if [[ " $cmds " == *" $w "* ]]; then
			cmdpath="${cmdpath:+$cmdpath }$w"
			_braid_spec "$cmdpath"
		fi
	done
	if ((skip)); then
		COMPREPLY=($(compgen -f -- "$cur"))
	elif [[ "$cur" == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	elif [[ -n "$cmds" ]]; then
		COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
	elif ((args)); then
		COMPREPLY=($(compgen -f -- "$cur"))
	else
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	fi
}

complete -o default -F _braid braid
`)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeFishCompletion writes the fish script: __braid_path finds the
// command path as the bash script does, and each command's subcommands
// and flags are offered where the path is that command.
func writeFishCompletion(w io.Writer, tree *completionNode) error {
	var b strings.Builder
	b.WriteString(`# fish completion for braid: braid completion fish > ~/.config/fish/completions/braid.fish

function __braid_spec --description 'subcommands (cmds) or flags taking a value (vflags) of a braid command path'
	switch "$argv[2]"
`)
	tree.walk(func(n *completionNode) {
		cmds, _, values := n.words()
		fmt.Fprintf(&b, "\t\tcase %s\n\t\t\tif test $argv[1] = cmds\n\t\t\t\tstring split ' ' -- %s\n\t\t\telse\n\t\t\t\tstring split ' ' -- %s\n\t\t\tend\n",
			fishQuote(n.path), fishQuote(strings.Join(cmds, " ")), fishQuote(strings.Join(values, " ")))
	})
	b.WriteString(`	end
end

function __braid_path --description 'the braid command path before the cursor'
	set -l path ''
	set -l skip 0
	set -l tokens (commandline -opc)
	set -e tokens[1]
	for t in $tokens
		if test $skip = 1
			set skip 0
			continue
		end
		switch $t
			case '--'
				break
			case '-*=*'
				continue
			case '-*'
				if contains -- $t (__braid_spec vflags "$path")
					set skip 1
				end
				continue
		end
		if contains -- $t (__braid_spec cmds "$path")
			set path (string trim -- "$path $t")
		end
	end
	echo $path
end

function __braid_at --description 'whether the braid command path is $argv[1]'
	test (__braid_path) = "$argv[1]"
end

complete -c braid -f
`)
	tree.walk(func(n *completionNode) {
		at := fishQuote("__braid_at " + fishQuote(n.path))
		for _, c := range n.cmds {
			if !c.hidden {
				fmt.Fprintf(&b, "complete -c braid -n %s -a %s -d %s\n", at, fishQuote(c.path[strings.LastIndexByte(c.path, ' ')+1:]), fishQuote(c.usage))
			}
		}
		for _, f := range n.flags {
			fmt.Fprintf(&b, "complete -c braid -n %s", at)
			for _, name := range f.names {
				if strings.HasPrefix(name, "--") {
					fmt.Fprintf(&b, " -l %s", name[2:])
				} else {
					fmt.Fprintf(&b, " -s %s", name[1:])
				}
			}
			if f.value {
				b.WriteString(" -r -F")
			}
			fmt.Fprintf(&b, " -d %s\n", fishQuote(f.usage))
		}
		if n.args && len(n.cmds) == 0 {
			fmt.Fprintf(&b, "complete -c braid -n %s -F\n", at)
		}
	})
	_, err := io.WriteString(w, b.String())
	return err
}

// shQuote quotes s for bash and zsh: in single quotes.
func shQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// fishQuote quotes s for fish: in single quotes, with \ and ' escaped.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
