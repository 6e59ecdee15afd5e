package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
)

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:  "generate",
		Usage: "sample text from a checkpoint (optionally with a LoRA adapter)",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "checkpoint `DIR`", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "LoRA adapter `DIR` (PEFT layout, as braid train --lora-rank writes) to apply to --model"},
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "text to continue (default: start of a document)"},
			&cli.IntFlag{Name: "tokens", Aliases: []string{"n"}, Value: 200, Usage: "tokens to generate"},
			&cli.Float64Flag{Name: "temperature", Value: 0.8, Usage: "sampling temperature (0: greedy)"},
			&cli.IntFlag{Name: "top-k", Value: 40, Usage: "sample among the K most likely tokens (0: all)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "sampling seed"},
			&cli.IntFlag{Name: "threads", Usage: "compute threads (default: all cores)"},
		}, deviceFlags()...),
		Action: func(c *cli.Context) error {
			if err := setCompute(c.Int("threads"), "auto"); err != nil {
				return err
			}
			if c.Int("tokens") < 0 {
				return fmt.Errorf("--tokens must be ≥ 0")
			}
			ck, err := model.LoadCheckpoint(c.String("model"))
			if err != nil {
				return err
			}
			tok := ck.Tokenizer
			prompt := tok.Encode(nil, []byte(c.String("prompt")))
			// Activations for the longest window generation will use.
			m, done, err := inferenceModel(c, ck, 1, min(ck.Config.Context, len(prompt)+c.Int("tokens")+1))
			if err != nil {
				return err
			}
			defer done()
			ids, err := model.Generate(m, tok, prompt, model.SampleOptions{
				MaxTokens: c.Int("tokens"), Temperature: c.Float64("temperature"), TopK: c.Int("top-k"),
				Seed: c.Uint64("seed"), StopAtEOT: true,
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "%s%s\n", c.String("prompt"), tok.Decode(nil, ids))
			return nil
		},
	}
}
