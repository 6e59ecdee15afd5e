package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
)

// How every command talks to a node's HTTP API: through node/client, built
// by nodeClient from --api, --ca and the token (apitoken.go); the errors of
// its calls get, in explainNodeError, what the user can do about them in
// the flags' terms.

// nodeClient is the client of the node behind --api, with the token of
// apiToken. For an https URL it trusts the CA of --ca, else the one the
// record of a node of this user at that address names, and accepts the
// certificate of the node that record names (apitoken.go); it refuses an
// http:// URL for a node whose record says it serves HTTPS.
func nodeClient(c *cli.Context) (*client.Client, error) {
	api := c.String("api")
	cfg := client.Config{URL: api, CAFile: c.String("ca")}
	recs := discoverRecords(api)
	u, err := url.Parse(api)
	if err != nil {
		u = &url.URL{} // client.New says what is wrong with it
	}
	switch u.Scheme {
	case "http":
		if slices.ContainsFunc(recs, func(r apiRecord) bool { return strings.HasPrefix(r.API, "https://") }) {
			return nil, fmt.Errorf("%w: the node at %s serves HTTPS (braid node --http-tls)", client.ErrScheme, u.Host)
		}
	case "https":
		if i := slices.IndexFunc(recs, func(r apiRecord) bool { return r.CAFile != "" }); i >= 0 {
			if cfg.CAFile == "" {
				cfg.CAFile = recs[i].CAFile
			}
			cfg.Node = recs[i].Node
		}
		if cfg.CAFile == "" {
			return nil, fmt.Errorf("--api %s is HTTPS: give --ca FILE (BRAID_CA), the cluster's ca.pem, to verify the node with", api)
		}
	}
	tok, err := apiToken(c)
	if err != nil {
		return nil, err
	}
	cfg.Token = tok
	cl, err := client.New(cfg)
	if errors.Is(err, client.ErrURL) {
		return nil, fmt.Errorf("--api (BRAID_API): %w", err)
	}
	return cl, err
}

// explainNodeErrors makes every command in cmds, and their subcommands,
// that has an --api flag return its errors through explainNodeError.
func explainNodeErrors(cmds []*cli.Command) []*cli.Command {
	for _, cmd := range cmds {
		explainNodeErrors(cmd.Subcommands)
		if cmd.Action == nil || !hasFlag(cmd.Flags, "api") {
			continue
		}
		action := cmd.Action
		cmd.Action = func(c *cli.Context) error { return explainNodeError(c, action(c)) }
	}
	return cmds
}

func hasFlag(flags []cli.Flag, name string) bool {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return true
			}
		}
	}
	return false
}

// explainNodeError adds to err, when it comes from a call to the node,
// what to do: give a token, or another; start the node, or name another;
// use the other scheme.
func explainNodeError(c *cli.Context, err error) error {
	api := c.String("api")
	if e, ok := errors.AsType[*client.APIError](err); ok && e.StatusCode == http.StatusUnauthorized {
		how := "give --token or --token-file (BRAID_TOKEN, BRAID_TOKEN_FILE)"
		if tok, _ := apiToken(c); tok == "" {
			return fmt.Errorf("the node at %s needs its API token, and this command found none: %s; on the node's machine, its user finds it in DATA_DIR/%s: %w",
				api, how, node.APITokenFile, err)
		}
		return fmt.Errorf("the node at %s refused the token: %s: %w", api, how, err)
	}
	switch {
	case errors.Is(err, client.ErrUnreachable):
		return fmt.Errorf("%w (is `braid node` running there? set --api or BRAID_API)", err)
	case errors.Is(err, client.ErrScheme):
		u, _ := url.Parse(api) // a client was built from it
		if u.Scheme == "https" {
			return fmt.Errorf("%w: use --api http://%s", err, u.Host)
		}
		return fmt.Errorf("%w: use --api https://%s (with --ca, the cluster's ca.pem, unless the node runs on this machine as this user)", err, u.Host)
	}
	return err
}
