// Command braid fine-tunes language models on an organisation's own data.
//
// This file wires the command-line interface (urfave/cli/v2), and cli.go
// says how braid reads a command line (flags anywhere, one-line usage
// errors, exit codes); each command lives in its own file and does no more
// than turn flags into the Config structs of the packages that do the
// work, and format their output.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first Ctrl-C asks the running command to stop cleanly (train saves
	// its checkpoint); after it, signals get their default effect again, so a
	// second Ctrl-C ends the process at once.
	go func() { <-ctx.Done(); stop() }()
	if err := runApp(ctx, newApp(), os.Args); err != nil {
		if _, ok := errors.AsType[*usageError](err); ok {
			fmt.Fprintln(os.Stderr, err) // it names the command: "braid train: unknown flag ..."
		} else if _, ok := errors.AsType[loggedError](err); !ok { // braid node logs its own
			fmt.Fprintln(os.Stderr, "braid:", err)
		}
		code := exitFailed
		if ec, ok := errors.AsType[cli.ExitCoder](err); ok {
			code = ec.ExitCode()
		}
		os.Exit(code)
	}
}

// newApp builds the command tree; tests run it in-process, with runApp.
func newApp() *cli.App {
	return &cli.App{
		Name:    "braid",
		Usage:   "fine-tune language models on your own data, across a cluster of identical nodes",
		Version: version,
		Commands: prepareCommands(explainNodeErrors([]*cli.Command{
			trainCommand(),
			generateCommand(),
			serveCommand(),
			evalCommand(),
			exportCommand(),
			statusCommand(),
			nodeCommand(),
			devCommand(),
			benchCommand(),
			caCommand(),
			dataCommand(),
			jobCommand(),
			membersCommand(), leaveCommand(), forceLeaveCommand(), // lifecycle.go
			verifyCommand(),
			doctorCommand(),
			versionCommand(),
			completionCommand(),
		})),
		OnUsageError:   onUsageError,
		ExitErrHandler: func(*cli.Context, error) {}, // main prints errors once
	}
}
