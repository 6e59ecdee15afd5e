package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
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
// use the other scheme. The node's answer reads as apiErrorText has it.
func explainNodeError(c *cli.Context, err error) error {
	return readableAPIError(nodeErrorHint(c, err))
}

func nodeErrorHint(c *cli.Context, err error) error {
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

// userError is an error whose text was rewritten for the user; it wraps
// the original.
type userError struct {
	msg string
	err error
}

func (e *userError) Error() string { return e.msg }
func (e *userError) Unwrap() error { return e.err }

// readableAPIError rewrites, in err's text, the node's answer (a
// *client.APIError: "POST URL: 409 Conflict: braid: node: ...") as
// apiErrorText has it. Other errors it returns as they are.
func readableAPIError(err error) error {
	e, ok := errors.AsType[*client.APIError](err)
	if !ok {
		return err
	}
	return &userError{msg: strings.Replace(err.Error(), e.Error(), apiErrorText(e), 1), err: err}
}

// internalLayer matches the parts of a node's error message that name the
// code it passed through rather than what went wrong: package prefixes
// ("braid", "node", "coordinator"), a request forwarded to the leader
// ("n2 failed apply", then "node n2") and a coordinator command's type
// ("job.state j1").
var internalLayer = regexp.MustCompile(`^(braid|node|coordinator|client|blobstore|push|shard)$|^(member|epoch|setting|dataset|job|cert)\.[a-z]+( \S+)?$`)

// apiErrorText is the node's answer e as the user reads it: its message
// without the HTTP method, URL and status, and without the internal layers
// in it (internalLayer), ending in the root cause; for a 5xx answer it
// says the node failed.
func apiErrorText(e *client.APIError) string {
	var kept []string
	forwarded := ""
	for _, part := range strings.Split(e.Message, ": ") {
		if peer, ok := strings.CutSuffix(part, " failed apply"); ok && !strings.Contains(peer, " ") {
			forwarded = "node " + peer // the leader's answer follows, under its name
			continue
		}
		if internalLayer.MatchString(part) || part == forwarded {
			continue
		}
		kept = append(kept, part)
	}
	msg := strings.Join(kept, ": ")
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.StatusCode))
	}
	if e.StatusCode >= 500 {
		u, _ := url.Parse(e.URL)
		host := e.URL
		if u != nil && u.Host != "" {
			host = u.Host
		}
		return fmt.Sprintf("the node at %s failed: %s", host, msg)
	}
	return msg
}

// notFound returns the error of what when err is the node's 404 answer,
// and err otherwise.
func notFound(err error, format string, args ...any) error {
	if e, ok := errors.AsType[*client.APIError](err); ok && e.StatusCode == http.StatusNotFound {
		return &userError{msg: fmt.Sprintf(format, args...), err: err}
	}
	return err
}
