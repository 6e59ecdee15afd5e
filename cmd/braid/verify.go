package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/provenance"
)

// verifyCommand is `braid verify DIR`: check an exported model against its
// provenance record.
func verifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check a model directory against its provenance.json: the signature, the signer's chain to the cluster CA, every file's sha256",
		ArgsUsage: "DIR",
		Description: "DIR is a directory written by `braid job export` or `braid train`. The signature in provenance.sig\n" +
			"must cover provenance.json's exact bytes, and the signing node's certificate must chain to the CA of\n" +
			"--ca (the ca.pem of `braid ca init`, or its directory) as of the time the record was signed. Every file\n" +
			"the record names must hash to the recorded sha256 (and be a regular file, no larger than recorded), and\n" +
			"nothing else may lie in DIR but provenance.json, provenance.sig and README.md, which must be the model card\n" +
			"rendered from the record: a loader reads more than the weights (a tokenizer config's chat template or\n" +
			"auto_map, code, pickles). A file made from the weights after the record (`job export --format gguf`\n" +
			"writes model.gguf) is accepted unchecked, with a warning, only when named with --allow-unrecorded.\n" +
			"Exit status: 0 when everything matches; 1 when anything does not, each named on its own line.\n" +
			"A record without a signature (`braid train` without --sign-key) fails unless --allow-unsigned is given;\n" +
			"then its hashes are checked and a warning says it is unsigned.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca", Usage: "the cluster CA: `FILE` ca.pem, or the PKI directory that holds it"},
			&cli.BoolFlag{Name: "allow-unsigned", Usage: "accept a record without a signature (only its hashes are checked)"},
			&cli.StringSliceFlag{Name: "allow-unrecorded", Usage: "accept `NAME` in DIR though the record does not name it (not checked; a warning), e.g. model.gguf of `job export --format gguf`"},
			&cli.StringSliceFlag{Name: "revoked", Usage: "certificate `SERIAL`s known to be revoked (hexadecimal, as `braid ca revoke` and GET /v1/certs show them)"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		},
		Action: runVerify,
	}
}

// verifyReport is `braid verify --json`.
type verifyReport struct {
	OK       bool              `json:"ok"`
	Dir      string            `json:"dir"`
	Job      string            `json:"job,omitempty"`
	Signer   string            `json:"signer,omitempty"`
	Serial   string            `json:"serial,omitempty"`
	Matched  []provenance.File `json:"matched"`
	Problems []string          `json:"problems"`
	Warnings []string          `json:"warnings,omitempty"`
}

func runVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("braid verify", "want one model directory (written by `braid job export` or `braid train`), got %d arguments", c.NArg())
	}
	dir := c.Args().First()
	opt := provenance.Options{AllowUnsigned: c.Bool("allow-unsigned"), AllowUnrecorded: c.StringSlice("allow-unrecorded")}
	for _, s := range c.StringSlice("revoked") {
		opt.Revoked = append(opt.Revoked, strings.ToLower(strings.TrimLeft(strings.TrimPrefix(strings.ToLower(s), "0x"), "0")))
	}
	if ca := c.String("ca"); ca != "" {
		roots, err := provenance.ReadCAs(ca)
		if err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
		opt.Roots = roots
	}
	rep, err := provenance.Verify(dir, opt)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		vr := verifyReport{OK: rep.OK(), Dir: dir, Job: rep.Record.Job, Signer: rep.Signer, Serial: rep.Serial, Matched: rep.Matched,
			Problems: rep.Problems, Warnings: rep.Warnings}
		if vr.Problems == nil {
			vr.Problems = []string{}
		}
		if err := printJSON(c, vr); err != nil {
			return err
		}
	} else {
		w := c.App.Writer
		for _, f := range rep.Matched {
			fmt.Fprintf(w, "ok        %s  sha256 %s\n", f.Name, f.SHA256)
		}
		if rep.Signer != "" {
			fmt.Fprintf(w, "signed by node %s (certificate serial %s)\n", rep.Signer, rep.Serial)
		}
		for _, s := range rep.Warnings {
			fmt.Fprintf(w, "warning   %s\n", s)
		}
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "MISMATCH  %s\n", p)
		}
	}
	if !rep.OK() {
		return cli.Exit(fmt.Sprintf("%s does not verify: %d problems", dir, len(rep.Problems)), exitFailed)
	}
	if !c.Bool("json") {
		fmt.Fprintf(c.App.Writer, "%s verifies against its %s\n", dir, provenance.RecordFile)
	}
	return nil
}
