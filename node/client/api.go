package client

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/atomicfile"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/push"
)

// The API's operations, one method each, in the order of the node's
// routes (node/api.go, certs.go, job_api.go, data.go, blob_api.go).

// Status is GET /v1/status: the cluster as the node sees it. Bounded by
// Timeouts.Read.
func (c *Client) Status(ctx context.Context) (node.Status, error) {
	return call[node.Status](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "status")
}

// Certs is GET /v1/certs: the cluster's certificates and their warnings.
// Bounded by Timeouts.Read.
func (c *Client) Certs(ctx context.Context) (node.CertsStatus, error) {
	return call[node.CertsStatus](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "certs")
}

// RevokeCert is POST /v1/certs/revoke: the revocation once the cluster
// has committed it. Bounded by Timeouts.RevokeCert.
func (c *Client) RevokeCert(ctx context.Context, req node.RevokeRequest) (coordinator.Revocation, error) {
	return call[coordinator.Revocation](ctx, c, c.timeouts.RevokeCert, http.MethodPost, req, "v1", "certs", "revoke")
}

// SubmitJob is POST /v1/jobs: the job as the cluster recorded it. The
// base model's objects must be uploaded first (PushTarget, node/push).
// Bounded by Timeouts.SubmitJob.
func (c *Client) SubmitJob(ctx context.Context, req node.JobRequest) (coordinator.Job, error) {
	return call[coordinator.Job](ctx, c, c.timeouts.SubmitJob, http.MethodPost, req, "v1", "jobs")
}

// Jobs is GET /v1/jobs: every job of the cluster. Bounded by
// Timeouts.Read.
func (c *Client) Jobs(ctx context.Context) ([]coordinator.Job, error) {
	return call[[]coordinator.Job](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "jobs")
}

// Job is GET /v1/jobs/{id}: the job's state and progress. Bounded by
// Timeouts.Read.
func (c *Client) Job(ctx context.Context, id string) (node.JobStatus, error) {
	return call[node.JobStatus](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "jobs", id)
}

// JobHistory is GET /v1/jobs/{id}/history: the job's steps (loss, held-out
// loss where evaluated, learning rate, tokens/s, bytes sent) as the worker
// that ran it furthest kept them. Bounded by Timeouts.Read.
func (c *Client) JobHistory(ctx context.Context, id string) (node.JobHistory, error) {
	return call[node.JobHistory](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "jobs", id, "history")
}

// CancelJob is POST /v1/jobs/{id}/cancel: the job, cancelled. Bounded by
// Timeouts.CancelJob.
func (c *Client) CancelJob(ctx context.Context, id string) (coordinator.Job, error) {
	return call[coordinator.Job](ctx, c, c.timeouts.CancelJob, http.MethodPost, struct{}{}, "v1", "jobs", id, "cancel")
}

// DownloadJobFile is GET /v1/jobs/{id}/files/{name}: it streams the file
// name of the job's last checkpoint (config.json, model.safetensors, a
// LoRA job's adapter files, the files its Tokenizer names, or base- and
// the name of a file of its base model: base-config.json, ...) into path. The file is written
// whole or not at all (internal/atomicfile), and only when its bytes hash
// to the X-Braid-Sha256 the node sends with it (ErrHashMismatch
// otherwise); on an error path is left as it was. A file system that
// cannot sync the directory is not an error: the file is whole. Bounded
// by ctx only.
func (c *Client) DownloadJobFile(ctx context.Context, id, name, path string) error {
	_, err := c.downloadJobFile(ctx, id, name, path, "")
	return err
}

// downloadJobFile is DownloadJobFile, returning the SHA-256 of the bytes
// written; a want other than "" is the SHA-256 the file must have,
// whatever the node sends.
func (c *Client) downloadJobFile(ctx context.Context, id, name, path, want string) (string, error) {
	u := c.endpoint("v1", "jobs", id, "files", name)
	resp, err := c.send(ctx, request{method: http.MethodGet, url: u})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var got string
	err = atomicfile.Write(path, 0o644, func(w io.Writer) error {
		h := sha256.New()
		if _, err := io.Copy(io.MultiWriter(w, h), resp.Body); err != nil {
			return fmt.Errorf("client: GET %s: %w", u, err)
		}
		got = hex.EncodeToString(h.Sum(nil))
		if sent := resp.Header.Get("X-Braid-Sha256"); sent != "" && got != sent {
			return fmt.Errorf("%w: GET %s", ErrHashMismatch, u)
		}
		if want != "" && got != want {
			return fmt.Errorf("%w: GET %s: sha256 %s, want %s", ErrHashMismatch, u, got, want)
		}
		return nil
	})
	if errors.Is(err, atomicfile.ErrSyncDir) {
		return got, nil
	}
	if err != nil {
		return "", err
	}
	return got, nil
}

// Datasets is GET /v1/datasets: every registered dataset. Bounded by
// Timeouts.Read.
func (c *Client) Datasets(ctx context.Context) ([]coordinator.Dataset, error) {
	return call[[]coordinator.Dataset](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "datasets")
}

// Dataset is GET /v1/datasets/{name}: the placement and health of the
// dataset of that name or ID. Bounded by Timeouts.Read.
func (c *Client) Dataset(ctx context.Context, name string) (node.DatasetStatus, error) {
	return call[node.DatasetStatus](ctx, c, c.timeouts.Read, http.MethodGet, nil, "v1", "datasets", name)
}

// CreateDataset is POST /v1/datasets: it registers a dataset whose
// manifest and shards were uploaded (PushTarget, node/push) and returns
// it. Bounded by Timeouts.CreateDataset.
func (c *Client) CreateDataset(ctx context.Context, req node.AddDatasetRequest) (coordinator.Dataset, error) {
	return call[coordinator.Dataset](ctx, c, c.timeouts.CreateDataset, http.MethodPost, req, "v1", "datasets")
}

// HasBlob is HEAD /v1/blobs/{hash}: whether the node's store holds the
// object. Bounded by Timeouts.Read.
func (c *Client) HasBlob(ctx context.Context, hash string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeouts.Read)
	defer cancel()
	resp, err := c.send(ctx, request{method: http.MethodHead, url: c.endpoint("v1", "blobs", hash)})
	if e, ok := errors.AsType[*APIError](err); ok && e.StatusCode == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return true, nil
}

// PutBlob is PUT /v1/blobs/{hash}: it streams size bytes from r (size -1:
// unknown, sent chunked) as object hash, which the node keeps only if they
// hash to it; private asks the node to mark the object private (a local
// dataset's) before it stores a byte. An object the node holds already is
// answered without its body being read. r is read, never closed. Bounded
// by ctx only.
func (c *Client) PutBlob(ctx context.Context, hash string, size int64, r io.Reader, private bool) (node.BlobPut, error) {
	u := c.endpoint("v1", "blobs", hash)
	if private {
		u += "?private=1"
	}
	resp, err := c.send(ctx, request{method: http.MethodPut, url: u, body: r, contentType: "application/octet-stream", length: size})
	if err != nil {
		return node.BlobPut{}, err
	}
	defer resp.Body.Close()
	var put node.BlobPut
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBytes)).Decode(&put); err != nil {
		return put, fmt.Errorf("client: PUT %s: unexpected answer: %w", u, err)
	}
	return put, nil
}

// PushTarget is the node's store as node/push uploads to it, through
// HasBlob and PutBlob.
func (c *Client) PushTarget() push.Target { return pushTarget{c} }

type pushTarget struct{ c *Client }

func (t pushTarget) Has(ctx context.Context, hash string) (bool, error) {
	return t.c.HasBlob(ctx, hash)
}

func (t pushTarget) Put(ctx context.Context, hash string, size int64, r io.Reader, private bool) error {
	_, err := t.c.PutBlob(ctx, hash, size, r, private)
	return err
}

// BenchAllReduce is POST /v1/bench/allreduce: the node runs the benchmark
// across the members of the cluster's committed epoch, rank 0 itself, and
// BenchAllReduce calls emit with each size's row as it arrives, in order,
// from the calling goroutine. A run that fails on the node after some rows
// returns the node's error, after emitting those rows. Bounded by ctx
// only.
func (c *Client) BenchAllReduce(ctx context.Context, plan node.BenchPlan, emit func(allreduce.BenchRow)) error {
	u := c.endpoint("v1", "bench", "allreduce")
	r, err := jsonRequest(http.MethodPost, u, plan)
	if err != nil {
		return err
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			allreduce.BenchRow
			Error string `json:"error"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("client: POST %s: unexpected line %q: %w", u, sc.Text(), err)
		}
		if line.Error != "" {
			return fmt.Errorf("client: the benchmark across the cluster of %s failed: %s", c.host, line.Error)
		}
		emit(line.BenchRow)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("client: POST %s: reading the rows: %w", u, err)
	}
	return nil
}
