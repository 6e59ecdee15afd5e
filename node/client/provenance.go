package client

import (
	"context"
	"net/http"
	"time"

	"github.com/braidml/braid/node"
)

// provenanceTimeout bounds JobProvenance: with merged the node merges the
// adapter into the base first (it bounds that by 5 minutes itself).
const provenanceTimeout = 6 * time.Minute

// JobProvenance is GET /v1/jobs/{id}/provenance: the record of the job's
// last checkpoint (provenance.json's exact bytes) and the node's signature
// of it (nil when the node has no certificate of its own). With merged,
// the record names the files of the base with the adapter merged in, which
// the node computed; download them as merged-NAME (DownloadJobFile).
func (c *Client) JobProvenance(ctx context.Context, id string, merged bool) (node.ProvenanceExport, error) {
	u := c.endpoint("v1", "jobs", id, "provenance")
	if merged {
		u += "?merged=1"
	}
	var out node.ProvenanceExport
	return out, c.callJSON(ctx, provenanceTimeout, http.MethodGet, u, nil, &out)
}

// DownloadRecordedFile is DownloadJobFile of a file a provenance record
// names, which must hash to the record's sha256: otherwise (the job
// recorded a newer checkpoint since the record was made) it fails with
// ErrHashMismatch and path is left as it was.
func (c *Client) DownloadRecordedFile(ctx context.Context, id, name, path, sha256 string) error {
	_, err := c.downloadJobFile(ctx, id, name, path, sha256)
	return err
}

// DownloadJobFileSHA256 is DownloadJobFile, returning the SHA-256 of the
// file written (checked against the node's as it came), so that an
// exporter compares it with a provenance record without reading the file
// again.
func (c *Client) DownloadJobFileSHA256(ctx context.Context, id, name, path string) (string, error) {
	return c.downloadJobFile(ctx, id, name, path, "")
}
