package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/train"
)

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "loss, perplexity and bits per byte of a checkpoint on text files or directories",
		Description: "Reads the inputs as braid train does (each file one document, binary files in\n" +
			"directories skipped) with the checkpoint's tokenizer, and scores every token once, in\n" +
			"consecutive windows of the model's context. --split heldout scores only the documents\n" +
			"that training with the same --holdout-every held out.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "checkpoint `DIR`", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "LoRA adapter `DIR` (PEFT layout, as braid train --lora-rank writes) to apply to --model"},
			&cli.StringSliceFlag{Name: "input", Aliases: []string{"i"}, Usage: "text `PATH` (file or directory, repeatable)", Required: true},
			&cli.StringFlag{Name: "split", Value: "all", Usage: "documents to score: all, heldout or train"},
			&cli.IntFlag{Name: "holdout-every", Value: 20, Usage: "with --split: the held-out fraction used in training (1 in N)"},
			&cli.IntFlag{Name: "seq-len", Usage: "tokens per window (default: the model's context)"},
			&cli.IntFlag{Name: "batch", Value: 8, Usage: "windows per forward pass"},
			&cli.IntFlag{Name: "max-tokens", Usage: "score at most this many tokens (0: all)"},
			&cli.Int64Flag{Name: "max-bytes", Usage: "read at most about this many bytes of text (0: all)"},
			cutAboveFlag(), documentKiBFlag(),
			&cli.IntFlag{Name: "threads", Usage: "compute threads (default: all cores)"},
			&cli.BoolFlag{Name: "json", Usage: `print {"loss":F,"perplexity":F,"bits_per_byte":F,"tokens":N}, or {"tokens":0,"not_evaluated":REASON} without a loss when the split is empty`},
		}, deviceFlags()...),
		Action: runEval,
	}
}

func runEval(c *cli.Context) error {
	if err := setCompute(c.Int("threads"), "auto"); err != nil {
		return err
	}
	split := c.String("split")
	if split != "all" && split != "heldout" && split != "train" {
		return fmt.Errorf("--split %q: want all, heldout or train", split)
	}
	ck, err := model.LoadCheckpoint(c.String("model"))
	if err != nil {
		return err
	}
	T := c.Int("seq-len")
	if T <= 0 || T > ck.Config.Context {
		T = ck.Config.Context
	}
	B := max(1, c.Int("batch"))
	holdout := 0
	if split != "all" {
		holdout = c.Int("holdout-every")
		if holdout < 1 {
			return fmt.Errorf("--holdout-every must be ≥ 1 with --split %s", split)
		}
	}
	opt, err := corpusOptions(c, holdout)
	if err != nil {
		return err
	}
	corpus, err := train.LoadCorpus(c.StringSlice("input"), ck.Tokenizer, opt)
	if err != nil {
		return err
	}
	tokens := corpus.Train
	switch split {
	case "all":
		// HoldoutEvery 0 put every document in Train.
	case "heldout":
		tokens = corpus.Heldout
	}
	m, done, err := inferenceModel(c, ck, B, T)
	if err != nil {
		return err
	}
	defer done()
	name := c.String("model")
	if dir := c.String("adapter"); dir != "" {
		name += " + " + dir
	}
	if len(tokens) < 2 {
		// Nothing to score (an empty held-out split): say so, rather than
		// a loss of 0 that reads as a perfect score.
		why := fmt.Sprintf("the %s split of %s is empty", split, plural(corpus.Documents, "document"))
		if c.Bool("json") {
			b, _ := json.Marshal(struct {
				Tokens       int    `json:"tokens"`
				NotEvaluated string `json:"not_evaluated"`
			}{0, why})
			fmt.Fprintln(c.App.Writer, string(b))
			return nil
		}
		fmt.Fprintf(c.App.Writer, "%s on %d files (%s split): not evaluated: %s (lower --holdout-every, or cut large files into more documents with --cut-above-mib and --document-kib, as in training)\n",
			name, corpus.Files, split, why)
		return nil
	}
	r, err := train.Evaluate(m, ck.Tokenizer, tokens, B, T, c.Int("max-tokens"))
	if err != nil {
		return err
	}
	if c.Bool("json") {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, string(b))
		return nil
	}
	fmt.Fprintf(c.App.Writer, "%s on %d files (%s split, %d tokens, %.2f MB): loss %.4f | perplexity %.3f | %.4f bits/byte\n",
		name, corpus.Files, split, r.Tokens, float64(r.Bytes)/1e6, r.Loss, r.Perplexity, r.BitsPerByte)
	return nil
}

// attachAdapter loads the LoRA adapter in dir for m's config and attaches
// it to m (--adapter of eval and generate).
func attachAdapter(m *model.Model, dir string) error {
	a, err := model.LoadAdapter(dir, m.Config)
	if err != nil {
		return err
	}
	return m.AttachLoRA(a)
}
