package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node/client"
	"github.com/braidml/braid/provenance"
)

// exportProvenance writes the provenance record of job id's last
// checkpoint, as the node built and signed it, into dir, beside the files
// just downloaded there, after checking that they are the files it names:
// a checkpoint recorded between the download and the record would
// otherwise give a record of other weights.
func exportProvenance(c *cli.Context, cl *client.Client, id, dir string, merged bool) error {
	pe, err := cl.JobProvenance(c.Context, id, merged)
	if err != nil {
		return fmt.Errorf("the provenance of job %s: %w", id, err)
	}
	rec, err := provenance.Decode(pe.Record)
	if err != nil {
		return fmt.Errorf("the provenance the node sent: %w", err)
	}
	if _, problems := provenance.CheckFiles(dir, rec); len(problems) > 0 {
		return fmt.Errorf("the files written to %s are not those of the record the node sent (the job recorded a newer checkpoint meanwhile? export it again): %s",
			dir, strings.Join(problems, "; "))
	}
	if err := provenance.WriteDir(dir, pe.Record, pe.Signature); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s\n", provenanceFiles(pe.Signature != nil, rec.Signer))
	return nil
}

// exportMerged writes job id's base with its adapter merged in, merged by
// the node (so that the signed record names these very bytes), into dir,
// and its provenance.
func exportMerged(c *cli.Context, cl *client.Client, id, dir string) error {
	pe, err := cl.JobProvenance(c.Context, id, true)
	if err != nil {
		return fmt.Errorf("merging job %s's adapter on the node: %w", id, err)
	}
	rec, err := provenance.Decode(pe.Record)
	if err != nil {
		return fmt.Errorf("the provenance the node sent: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var names []string
	for _, f := range rec.Files {
		if err := cl.DownloadJobFile(c.Context, id, "merged-"+f.Name, filepath.Join(dir, f.Name)); err != nil {
			return noJob(err, id)
		}
		names = append(names, f.Name)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s (the base with the adapter merged in: %s)\n", dir, strings.Join(names, ", "))
	if _, problems := provenance.CheckFiles(dir, rec); len(problems) > 0 {
		return fmt.Errorf("the merged files in %s are not those the node's record names (export again): %s", dir, strings.Join(problems, "; "))
	}
	if err := provenance.WriteDir(dir, pe.Record, pe.Signature); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s\n", provenanceFiles(pe.Signature != nil, rec.Signer))
	return nil
}

// provenanceFiles says which provenance files an export wrote.
func provenanceFiles(signed bool, signer string) string {
	if !signed {
		return fmt.Sprintf("%s (unsigned: the node has no certificate of its own) and the model card %s", provenance.RecordFile, provenance.CardFile)
	}
	return fmt.Sprintf("%s, %s (signed by node %s) and the model card %s", provenance.RecordFile, provenance.SignatureFile, signer, provenance.CardFile)
}
