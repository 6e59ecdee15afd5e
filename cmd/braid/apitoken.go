package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/node"
)

// How the CLI authenticates to a node's API. The token comes from, in order:
// --token (BRAID_TOKEN); --token-file (BRAID_TOKEN_FILE); else, as Jupyter
// does, the record a `braid node` of the same user left in the user's runtime
// directory for the API address the command talks to, which names the
// node's token file (DATA_DIR/api-token, 0600): the node's user, and root,
// need no flag on the node's own machine; anyone else gets 401.

// apiFlags are the flags of every command that talks to a node's HTTP API.
func apiFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "api", Value: "http://127.0.0.1:7950", EnvVars: []string{"BRAID_API"}, Usage: "a node's HTTP API `URL`"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"BRAID_TOKEN"}, Usage: "the API's bearer token (default: the token of the node behind --api, if it runs on this machine as this user)"},
		&cli.StringFlag{Name: "token-file", EnvVars: []string{"BRAID_TOKEN_FILE"}, Usage: "read the bearer token from `FILE` (a node writes its own to DATA_DIR/api-token)"},
	}
}

// apiToken is the token for the API behind --api ("" if none was given or
// found); errors are those of a token file named with --token-file.
func apiToken(c *cli.Context) (string, error) {
	if tok := c.String("token"); tok != "" {
		return tok, nil
	}
	if path := c.String("token-file"); path != "" {
		tok, err := node.ReadTokenFile(path)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return tok, nil
	}
	return discoverToken(c.String("api")), nil
}

// newAPIRequest builds a request to path of the API behind --api with the
// token, and a JSON body when body is not nil.
func newAPIRequest(ctx context.Context, c *cli.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := strings.TrimRight(c.String("api"), "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("--api %q: %w", c.String("api"), err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok, err := apiToken(c)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return req, nil
}

// apiError describes a response that is not 200 OK, with a hint when the
// token was missing or wrong.
func apiError(c *cli.Context, req *http.Request, resp *http.Response, body []byte) error {
	err := fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, strings.TrimSpace(string(body)))
	if resp.StatusCode == http.StatusUnauthorized {
		how := "give --token or --token-file (BRAID_TOKEN, BRAID_TOKEN_FILE)"
		if req.Header.Get("Authorization") == "" {
			return fmt.Errorf("the node at %s needs its API token, and this command found none: %s; on the node's machine, its user finds it in DATA_DIR/%s: %w",
				c.String("api"), how, node.APITokenFile, err)
		}
		return fmt.Errorf("the node at %s refused the token: %s: %w", c.String("api"), how, err)
	}
	return err
}

// apiRecord is what `braid node` leaves in the user's runtime directory while
// it runs, for the CLI to find the token of the API at API.
type apiRecord struct {
	API       string `json:"api"`        // http://HOST:PORT
	TokenFile string `json:"token_file"` // absolute
	PID       int    `json:"pid"`
}

// runtimeDir is where the records live: $XDG_RUNTIME_DIR/braid, else the
// user's cache directory's braid/run (both the user's own).
func runtimeDir() (string, error) {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "braid"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "braid", "run"), nil
}

// recordPath is the record of the API listening on hostport.
func recordPath(dir, hostport string) string {
	return filepath.Join(dir, "api-"+strings.NewReplacer(":", "_", "[", "", "]", "", "/", "_").Replace(hostport)+".json")
}

// writeAPIRecord records that the API at addr (host:port, as it listens)
// requires the token in tokenFile; remove deletes the record unless a later
// node has replaced it.
func writeAPIRecord(addr, tokenFile string) (remove func(), err error) {
	dir, err := runtimeDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(tokenFile)
	if err != nil {
		return nil, err
	}
	rec := apiRecord{API: "http://" + addr, TokenFile: abs, PID: os.Getpid()}
	b, _ := json.Marshal(rec)
	path := recordPath(dir, addr)
	if err := atomicfile.WriteBytes(path, append(b, '\n'), 0o600); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return nil, err
	}
	return func() {
		if r, err := readAPIRecord(path); err == nil && r.PID == rec.PID {
			os.Remove(path)
		}
	}, nil
}

func readAPIRecord(path string) (apiRecord, error) {
	var r apiRecord
	f, err := os.Open(path)
	if err != nil {
		return r, err
	}
	defer f.Close()
	err = json.NewDecoder(io.LimitReader(f, 4<<10)).Decode(&r)
	return r, err
}

// discoverToken reads the token of the node whose API is at apiURL from the
// file its record names, trying the URL's host:port and, for a loopback
// host, the other loopback and wildcard spellings of the port. It returns
// "" when there is no record or the file cannot be read (another user's
// node).
func discoverToken(apiURL string) string {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return ""
	}
	dir, err := runtimeDir()
	if err != nil {
		return ""
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
	}
	hosts := []string{host}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		hosts = append(hosts, "127.0.0.1", "::1", "localhost", "0.0.0.0", "::")
	} else if ip != nil {
		hosts = append(hosts, "0.0.0.0", "::")
	}
	for _, h := range hosts {
		r, err := readAPIRecord(recordPath(dir, net.JoinHostPort(h, port)))
		if err != nil {
			continue
		}
		if tok, err := node.ReadTokenFile(r.TokenFile); err == nil {
			return tok
		}
	}
	return ""
}
