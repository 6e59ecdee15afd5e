package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
	"github.com/braidml/braid/provenance"
)

// exportProvenance writes the provenance record of job id's last
// checkpoint, built and signed by the node from the replicated state, into
// dir beside the files just written there, after checking that they are
// the files it names: a checkpoint recorded between the download and the
// record would otherwise pair a record with other weights. downloaded are
// the hashes of the files as they came; when the export rewrote them (in
// the base's dtype: the node rounds them alike to hash them) they differ
// from the record's, and the files in dir are hashed again.
func exportProvenance(c *cli.Context, cl *client.Client, id, dir string, downloaded map[string]string) error {
	pe, err := cl.JobProvenance(c.Context, id, false)
	if err != nil {
		return fmt.Errorf("the provenance of job %s: %w", id, err)
	}
	rec, err := provenance.Decode(pe.Record)
	if err != nil {
		return fmt.Errorf("the provenance the node sent: %w", err)
	}
	same := len(rec.Files) == len(downloaded)
	for _, f := range rec.Files {
		same = same && downloaded[f.Name] == f.SHA256
	}
	if !same {
		if _, problems := provenance.CheckFiles(dir, rec); len(problems) > 0 {
			return fmt.Errorf("the files written to %s are not those the node's record names (the job recorded a newer checkpoint meanwhile? export it again): %s",
				dir, strings.Join(problems, "; "))
		}
	}
	return writeProvenance(c, dir, pe, rec)
}

// exportMerged writes job id's base with its adapter merged in, merged by
// the node, into dir, and its record: a merge here could round
// differently (its kernels), and the record would name bytes the node
// never saw. Each file must hash to what the record names.
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
		err := cl.DownloadRecordedFile(c.Context, id, "merged-"+f.Name, filepath.Join(dir, f.Name), f.SHA256)
		if errors.Is(err, client.ErrHashMismatch) {
			return fmt.Errorf("%s of job %s's merged model is not the file its record names: the job recorded a newer checkpoint during the export; export it again", f.Name, id)
		}
		if err != nil {
			return err
		}
		names = append(names, f.Name)
	}
	fmt.Fprintf(c.App.Writer, "wrote %s (the base with the adapter merged in: %s)\n", dir, strings.Join(names, ", "))
	return writeProvenance(c, dir, pe, rec)
}

// writeProvenance writes the record, its signature and the model card.
func writeProvenance(c *cli.Context, dir string, pe node.ProvenanceExport, rec *provenance.Record) error {
	if err := provenance.WriteDir(dir, pe.Record, pe.Signature); err != nil {
		return err
	}
	if pe.Signature == nil {
		fmt.Fprintf(c.App.Writer, "wrote %s (unsigned: the node has no certificate of its own) and the model card %s\n", provenance.RecordFile, provenance.CardFile)
	} else {
		fmt.Fprintf(c.App.Writer, "wrote %s, %s (signed by node %s) and the model card %s\n", provenance.RecordFile, provenance.SignatureFile, rec.Signer, provenance.CardFile)
	}
	return nil
}
