package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/node"
)

// Requests to a node's HTTP API: how every command that talks to a node
// builds, sends and decodes them (TLS and the token are in apitls.go and
// apitoken.go).

// getJSON fetches path from the API into v, with errors that say which
// node and what went wrong.
func getJSON(ctx context.Context, c *cli.Context, path string, v any) error {
	return callAPI(ctx, c, http.MethodGet, path, nil, v, 10*time.Second)
}

// callAPI sends body (JSON, nil for none) to the API and decodes the answer
// into v.
func callAPI(ctx context.Context, c *cli.Context, method, path string, body, v any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := newAPIRequest(ctx, c, method, path, rd)
	if err != nil {
		return err
	}
	url := req.URL.String()
	resp, err := apiDo(c, req)
	if err != nil {
		return fmt.Errorf("cannot reach the node API at %s (is `braid node` running there? set --api or BRAID_API): %w", c.String("api"), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return apiError(c, req, resp, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: unexpected response: %w", url, err)
	}
	return nil
}

// newAPIRequest builds a request to path of the API behind --api with the
// token, and a JSON body when body is not nil; send it with apiDo.
func newAPIRequest(ctx context.Context, c *cli.Context, method, path string, body io.Reader) (*http.Request, error) {
	// The URL's scheme and the CA, checked here so that their errors are
	// not taken for an unreachable node (apiDo builds the client again).
	if _, err := apiClient(c.String("api"), c.String("ca")); err != nil {
		return nil, err
	}
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

// downloadJobFile streams one file of a job's last checkpoint into path,
// checking its SHA-256, through a temporary file renamed into place.
func downloadJobFile(ctx context.Context, c *cli.Context, id, name, path string) error {
	req, err := newAPIRequest(ctx, c, http.MethodGet, "/v1/jobs/"+id+"/files/"+name, nil)
	if err != nil {
		return err
	}
	url := req.URL.String()
	resp, err := apiDo(c, req)
	if err != nil {
		return fmt.Errorf("cannot reach the node API at %s: %w", c.String("api"), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return apiError(c, req, resp, b)
	}
	// Written whole or not at all (internal/atomicfile), and only if the
	// bytes hash to what the checkpoint recorded.
	err = atomicfile.Write(path, 0o644, func(w io.Writer) error {
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), resp.Body); err != nil {
			return fmt.Errorf("%s: %w", url, err)
		}
		if want := resp.Header.Get("X-Braid-Sha256"); want != "" && hex.EncodeToString(h.Sum(nil)) != want {
			return fmt.Errorf("%s: the bytes received do not match the checkpoint's hash", url)
		}
		return nil
	})
	if errors.Is(err, atomicfile.ErrSyncDir) {
		return nil // the file is whole; a file system that cannot sync a directory is not an error here
	}
	return err
}
