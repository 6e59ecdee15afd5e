package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
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
			&cli.BoolFlag{Name: "chat", Usage: "send --prompt as a user message in the model's chat template and print the reply, up to the end of the turn"},
			&cli.StringFlag{Name: "chat-template", Usage: "with --chat: llama3 or chatml (default: the one the chat_template of --model's tokenizer_config.json implements)"},
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
			var stop []int32
			if c.Bool("chat") {
				tmpl, err := chatTemplate(c, c.String("model"))
				if err != nil {
					return fmt.Errorf("--chat: %w", err)
				}
				var eot int32
				if prompt, eot, err = chatPrompt(tok, tmpl, c.String("prompt")); err != nil {
					return fmt.Errorf("--chat: %w", err)
				}
				stop = []int32{eot}
			} else if c.IsSet("chat-template") {
				return fmt.Errorf("--chat-template applies to --chat")
			}
			// Activations for the longest window generation will use.
			m, done, err := inferenceModel(c, ck, 1, min(ck.Config.Context, len(prompt)+c.Int("tokens")+1))
			if err != nil {
				return err
			}
			defer done()
			ids, err := model.Generate(m, tok, prompt, model.SampleOptions{
				MaxTokens: c.Int("tokens"), Temperature: c.Float64("temperature"), TopK: c.Int("top-k"),
				Seed: c.Uint64("seed"), StopAtEOT: true, Stop: stop,
			})
			if err != nil {
				return err
			}
			if c.Bool("chat") { // the reply alone
				fmt.Fprintf(c.App.Writer, "%s\n", tok.Decode(nil, ids))
				return nil
			}
			fmt.Fprintf(c.App.Writer, "%s%s\n", c.String("prompt"), tok.Decode(nil, ids))
			return nil
		},
	}
}

// chatPrompt returns the ids of prompt as one user message in tmpl, ready
// for the assistant's reply, and the id of the end-of-turn token that ends
// the reply. tok must encode the template's control tokens
// (chat.SpecialTokenizer).
func chatPrompt(tok model.Tokenizer, tmpl chat.Template, prompt string) (ids []int32, endOfTurn int32, err error) {
	enc, err := chat.NewEncoder(tok, tmpl)
	if err != nil {
		return nil, 0, err
	}
	segs, err := tmpl.Prompt([]chat.Message{{Role: chat.User, Content: prompt}})
	if err != nil {
		return nil, 0, err
	}
	ids, _, err = enc.Encode(nil, nil, segs)
	return ids, enc.EndOfTurn(), err
}
