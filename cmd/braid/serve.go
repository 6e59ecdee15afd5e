package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/serve"
)

func serveCommand() *cli.Command {
	def := serve.DefaultEngineConfig()
	return &cli.Command{
		Name:  "serve",
		Usage: "serve a checkpoint over OpenAI's API (/v1/models, /v1/completions, /v1/chat/completions)",
		Description: "Any OpenAI client works against it: give it --addr's URL with /v1 as the base URL and the token as the\n" +
			"API key. Requests are batched (--max-batch sequences are decoded together, --max-queue more wait);\n" +
			"chat completions use the model's chat template (its tokenizer_config.json, or --chat-template).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "checkpoint `DIR`", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "LoRA adapter `DIR` (PEFT layout) to apply to --model"},
			&cli.StringFlag{Name: "name", Usage: "the model's id in the API (default: --model's directory name)"},
			&cli.StringFlag{Name: "addr", Value: "127.0.0.1:8080", Usage: "`HOST:PORT` to listen on (plain HTTP: keep it on loopback or behind a TLS proxy)"},
			&cli.StringSliceFlag{Name: "host", Usage: "a host `NAME` requests may carry besides the listen address and localhost (repeatable)"},
			&cli.StringFlag{Name: "token-file", EnvVars: []string{"BRAID_SERVE_TOKEN_FILE"}, Usage: "read the bearer token clients must send from `FILE`"},
			&cli.StringFlag{Name: "token", EnvVars: []string{"BRAID_SERVE_TOKEN"}, Usage: "the bearer token clients must send (default: --token-file, else a new random one, printed)"},
			&cli.IntFlag{Name: "max-batch", Value: def.MaxBatch, Usage: "sequences decoded together (each holds a KV cache of --max-context tokens)"},
			&cli.IntFlag{Name: "max-queue", Value: def.MaxQueue, Usage: "requests that may wait for a sequence; more are refused with 429"},
			&cli.IntFlag{Name: "max-context", Usage: "tokens of a sequence, prompt and completion (default: the model's context)"},
			&cli.StringFlag{Name: "chat-template", Usage: "llama3 or chatml (default: the one --model's tokenizer_config.json implements, if any)"},
			&cli.StringFlag{Name: "device", Value: "cpu", Usage: "where to compute: cpu (the only one braid serve supports)"},
			&cli.IntFlag{Name: "threads", Usage: "compute threads (default: all cores)"},
			&cli.Uint64Flag{Name: "seed", Usage: "seeds the sampling of requests that give no seed (default: from the clock)"},
		},
		Action: func(c *cli.Context) error {
			if d := c.String("device"); d != "cpu" {
				return fmt.Errorf("--device %s: braid serve computes on the CPU only (its KV cache and batching are not on the GPU); use --device cpu", d)
			}
			if err := setCompute(c.Int("threads"), "auto"); err != nil {
				return err
			}
			dir := c.String("model")
			ck, err := model.LoadCheckpoint(dir)
			if err != nil {
				return err
			}
			// The KV cache needs the model's parameters only: the
			// activations of Forward are allocated for one token.
			m, err := model.NewInference(ck.Config, 1, 1)
			if err != nil {
				return err
			}
			params := ck.Params
			if dir := c.String("adapter"); dir != "" {
				// Merged once: no adapter arithmetic on every token.
				a, err := model.LoadAdapter(dir, ck.Config)
				if err != nil {
					return err
				}
				if params, err = model.MergeLoRA(ck.Config, ck.Params, a); err != nil {
					return err
				}
			}
			copy(m.Params, params)
			enc, err := serveChat(c, dir, ck.Tokenizer)
			if err != nil {
				return err
			}
			token, err := serveToken(c)
			if err != nil {
				return err
			}
			name := c.String("name")
			if name == "" {
				abs, _ := filepath.Abs(dir)
				name = filepath.Base(abs)
			}
			seed := c.Uint64("seed")
			if !c.IsSet("seed") {
				seed = uint64(time.Now().UnixNano())
			}
			log := slog.New(slog.NewTextHandler(c.App.ErrWriter, nil))
			cfg := serve.EngineConfig{MaxBatch: c.Int("max-batch"), MaxQueue: c.Int("max-queue"), MaxContext: c.Int("max-context"), StepRows: 256}
			cfg.StepRows = max(cfg.StepRows, cfg.MaxBatch)
			e, err := serve.NewEngine(m, ck.Tokenizer, cfg)
			if err != nil {
				return err
			}
			defer e.Close()
			s, err := serve.Start(serve.Config{Addr: c.String("addr"), Token: token, Hosts: c.StringSlice("host"),
				ModelName: name, Chat: enc, Seed: seed, Log: log}, e)
			if err != nil {
				return err
			}
			chatNote := "no chat template: /v1/chat/completions refuses requests"
			if enc != nil {
				chatNote = "chat template " + enc.Template().Name
			}
			fmt.Fprintf(c.App.Writer, "serving %s on http://%s/v1 (%s; %d sequences at once, %d tokens each)\n",
				name, s.Addr(), chatNote, cfg.MaxBatch, e.MaxContext())
			<-c.Context.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return s.Close(ctx)
		},
	}
}

// serveToken is the bearer token: --token, --token-file, or a new random
// one, printed on stderr so that whoever started the server can use it.
func serveToken(c *cli.Context) (string, error) {
	if t := c.String("token"); t != "" {
		return t, nil
	}
	if path := c.String("token-file"); path != "" {
		t, err := node.ReadTokenFile(path)
		if err != nil {
			return "", fmt.Errorf("--token-file: %w", err)
		}
		return t, nil
	}
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	t := hex.EncodeToString(b)
	fmt.Fprintf(c.App.ErrWriter, "no --token or --token-file: clients must send this API key: %s\n", t)
	return t, nil
}

// serveChat is the chat encoder of --chat-template, else of dir's
// tokenizer_config.json; nil when the model has no template (a base
// model), which only /v1/chat/completions minds.
func serveChat(c *cli.Context, dir string, tok model.Tokenizer) (*chat.Encoder, error) {
	var tmpl chat.Template
	var err error
	switch {
	case c.IsSet("chat-template"):
		if tmpl, err = chat.ByName(c.String("chat-template")); err != nil {
			return nil, fmt.Errorf("--chat-template: %w", err)
		}
	default:
		tmpl, err = chat.FromTokenizerConfig(dir)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "no chat template (%v); give --chat-template for /v1/chat/completions\n", err)
			return nil, nil
		}
	}
	enc, err := chat.NewEncoder(tok, tmpl)
	if err != nil {
		return nil, fmt.Errorf("chat template %s: %w", tmpl.Name, err)
	}
	return enc, nil
}
