package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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
// need no flag on the node's own machine; anyone else gets 401. For an
// HTTPS API the record also names the cluster CA to verify the node with,
// and the node's name (nodeClient, api.go).

// apiFlags are the flags of every command that talks to a node's HTTP API.
func apiFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "api", Value: "http://127.0.0.1:7950", EnvVars: []string{"BRAID_API"}, Usage: "a node's HTTP API `URL`"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"BRAID_TOKEN"}, Usage: "the API's bearer token (default: the token of the node behind --api, if it runs on this machine as this user)"},
		&cli.StringFlag{Name: "token-file", EnvVars: []string{"BRAID_TOKEN_FILE"}, Usage: "read the bearer token from `FILE` (a node writes its own to DATA_DIR/api-token)"},
		&cli.StringFlag{Name: "ca", EnvVars: []string{"BRAID_CA"}, Usage: "for an https --api: the cluster CA certificate `FILE` (ca.pem) to verify the node with (default: the CA of the node behind --api, if it runs on this machine as this user)"},
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

// apiRecord is what `braid node` leaves in the user's runtime directory while
// it runs, for the CLI to find the token of the API at API and, for an
// HTTPS API, the CA to verify it with.
type apiRecord struct {
	API       string `json:"api"`                  // http://HOST:PORT or https://HOST:PORT
	TokenFile string `json:"token_file,omitempty"` // absolute; "" when the node was given its token
	CAFile    string `json:"ca_file,omitempty"`    // absolute; the cluster CA (https only)
	Node      string `json:"node,omitempty"`       // the node's name, its certificate's (https only)
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

// writeAPIRecord records rec, the API at rec.API (its URL as it listens),
// with its file names made absolute and this process's PID; remove deletes
// the record unless a later node has replaced it.
func writeAPIRecord(rec apiRecord) (remove func(), err error) {
	u, err := url.Parse(rec.API)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("API record: URL %q", rec.API)
	}
	dir, err := runtimeDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []*string{&rec.TokenFile, &rec.CAFile} {
		if *f != "" {
			if *f, err = filepath.Abs(*f); err != nil {
				return nil, err
			}
		}
	}
	rec.PID = os.Getpid()
	b, _ := json.Marshal(rec)
	path := recordPath(dir, u.Host)
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
// file its record names. It returns "" when there is no record or the file
// cannot be read (another user's node).
func discoverToken(apiURL string) string {
	for _, r := range discoverRecords(apiURL) {
		if tok, err := node.ReadTokenFile(r.TokenFile); err == nil {
			return tok
		}
	}
	return ""
}

// discoverRecords returns the records of this user's nodes whose API may be
// the one at apiURL: the URL's host:port's and, for a loopback host, those
// of the other loopback and wildcard spellings of the port, in that order.
func discoverRecords(apiURL string) []apiRecord {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" {
		return nil
	}
	dir, err := runtimeDir()
	if err != nil {
		return nil
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	hosts := []string{host}
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		hosts = append(hosts, "127.0.0.1", "::1", "localhost", "0.0.0.0", "::")
	} else if ip != nil {
		hosts = append(hosts, "0.0.0.0", "::")
	}
	var recs []apiRecord
	for _, h := range hosts {
		if r, err := readAPIRecord(recordPath(dir, net.JoinHostPort(h, port))); err == nil {
			recs = append(recs, r)
		}
	}
	return recs
}

// recordAPI leaves the record by which this user's CLI finds n's API token
// and, for HTTPS, its CA (apitoken.go), when there is either; the returned
// function removes it.
func recordAPI(n *node.Node, name string, logger *slog.Logger) (remove func()) {
	rec := apiRecord{API: n.APIURL(), TokenFile: n.APITokenFile(), CAFile: n.APICAFile()}
	if rec.CAFile != "" {
		rec.Node = name
	}
	if rec.API == "" || rec.TokenFile == "" && rec.CAFile == "" {
		return func() {}
	}
	remove, err := writeAPIRecord(rec)
	if err != nil {
		logger.Warn("the CLI will not find the API's token and CA by itself (give it --token-file and --ca)",
			"token_file", rec.TokenFile, "ca", rec.CAFile, "err", err)
		return func() {}
	}
	return remove
}
