package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/node/client"
	"github.com/braidml/braid/provenance"
	"github.com/braidml/braid/transport/pki"
)

// The cost of a provenance record beside the export it goes with, on the
// bundled base (models/base-en, 11 MB): the node's building and signing of
// the record (GET /v1/jobs/{id}/provenance), and all the client adds
// (that request, comparing the downloads' hashes with the record's,
// writing three files), against a plain export's downloads. The target is at most 1%. Run with
// BRAID_PROVENANCE_COST=1; it prints the medians of 9 rounds.
func TestProvenanceCost(t *testing.T) {
	if os.Getenv("BRAID_PROVENANCE_COST") == "" {
		t.Skip("a measurement: set BRAID_PROVENANCE_COST=1")
	}
	pkiDir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(pkiDir); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(pkiDir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	n := startTLSNode(t, pkiDir, "cost-token")
	t.Setenv("BRAID_TOKEN", "cost-token")
	api := "http://" + n.APIAddr()
	ds := filepath.Join(t.TempDir(), "ds")
	mustRunOut(t, "data", "prepare", "--input", corpusDir(t), "--out", ds, "--seq-len", "64", "--name", "docs")
	mustRunOut(t, "data", "push", ds, "--api", api, "--replicas", "1")
	id := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", filepath.Join("..", "..", "models", "base-en"),
		"--dataset", "docs", "--steps", "1", "--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--eval-every", "1"))
	waitJob(t, api, id)
	cl, err := client.New(client.Config{URL: api, Token: "cost-token"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	var download, record, client, full []time.Duration
	for range 9 {
		dir := t.TempDir()
		start := time.Now()
		downloaded := map[string]string{}
		for _, f := range []string{"config.json", "model.safetensors"} {
			h, err := cl.DownloadJobFileSHA256(ctx, id, f, filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			downloaded[f] = h
		}
		download = append(download, time.Since(start))
		start = time.Now()
		if _, err := n.JobProvenance(ctx, id, false); err != nil {
			t.Fatal(err)
		}
		record = append(record, time.Since(start))
		start = time.Now()
		pe, err := cl.JobProvenance(ctx, id, false)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := provenance.Decode(pe.Record)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range rec.Files { // as exportProvenance compares them
			if f.SHA256 != downloaded[f.Name] {
				t.Fatalf("%s: the record's %s, downloaded %s", f.Name, f.SHA256, downloaded[f.Name])
			}
		}
		if err := provenance.WriteDir(dir, pe.Record, pe.Signature); err != nil {
			t.Fatal(err)
		}
		client = append(client, time.Since(start))
		start = time.Now()
		mustRunOut(t, "job", "export", id, "--out", filepath.Join(t.TempDir(), "exp"), "--api", api)
		full = append(full, time.Since(start))
	}
	d, r, c, f := median(download), median(record), median(client), median(full)
	t.Logf("bundled base export (medians of 9): downloads %v; record built and signed on the node %v (%.2f%% of the downloads); "+
		"everything the client adds for it %v (%.2f%%); braid job export end to end %v",
		d, r, 100*r.Seconds()/d.Seconds(), c, 100*c.Seconds()/d.Seconds(), f)
}
