package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node/push"
)

// apiTarget is push.Target over the HTTP API behind --api: the CLI reads
// the files of `braid data push DIR` and `braid job submit --base DIR`
// itself and uploads each one (HEAD, then PUT /v1/blobs/{sha256}); the node
// never opens a path the CLI names, and the CLI may run on another machine.
type apiTarget struct{ c *cli.Context }

var _ push.Target = apiTarget{}

// Has implements push.Target.
func (a apiTarget) Has(ctx context.Context, hash string) (bool, error) {
	req, err := newAPIRequest(ctx, a.c, http.MethodHead, "/v1/blobs/"+hash, nil)
	if err != nil {
		return false, err
	}
	resp, err := apiDo(a.c, req)
	if err != nil {
		return false, fmt.Errorf("cannot reach the node API at %s (is `braid node` running there? set --api or BRAID_API): %w", a.c.String("api"), err)
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, apiError(a.c, req, resp, nil)
}

// Put implements push.Target: the body is streamed from r, size bytes.
func (a apiTarget) Put(ctx context.Context, hash string, size int64, r io.Reader, private bool) error {
	path := "/v1/blobs/" + hash
	if private {
		path += "?private=1"
	}
	req, err := newAPIRequest(ctx, a.c, http.MethodPut, path, io.NopCloser(r))
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := apiDo(a.c, req)
	if err != nil {
		return fmt.Errorf("uploading %.12s to %s: %w", hash, a.c.String("api"), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return apiError(a.c, req, resp, b)
	}
	return nil
}
