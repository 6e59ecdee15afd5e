package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
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
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "checkpoint `DIR` (or --job)"},
			&cli.StringFlag{Name: "job", Usage: "instead of --model: the latest checkpoint of job `ID` (with its base, for a LoRA job), fetched once from the node at --api"},
			&cli.StringFlag{Name: "api", Value: "http://127.0.0.1:7950", EnvVars: []string{"BRAID_API"}, Usage: "with --job: the node's HTTP API `URL`"},
			&cli.StringFlag{Name: "api-token", EnvVars: []string{"BRAID_TOKEN"}, Usage: "with --job: the node API's bearer token (default: that of the node behind --api, if it runs on this machine as this user)"},
			&cli.StringFlag{Name: "ca", EnvVars: []string{"BRAID_CA"}, Usage: "with --job and an https --api: the cluster CA certificate `FILE`"},
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
			dir, adapter := c.String("model"), c.String("adapter")
			name := c.String("name")
			switch id := c.String("job"); {
			case (dir == "") == (id == ""):
				return fmt.Errorf("give --model DIR or --job ID (one of them)")
			case id != "":
				if adapter != "" {
					return fmt.Errorf("--adapter applies to --model; a LoRA job's adapter comes with --job")
				}
				tmp, err := os.MkdirTemp("", "braid-serve-job-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(tmp)
				if dir, adapter, err = fetchJobModel(c, id, tmp); err != nil {
					return err
				}
				if name == "" {
					name = "job-" + id
				}
			}
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
			if adapter != "" {
				// Merged once: no adapter arithmetic on every token.
				a, err := model.LoadAdapter(adapter, ck.Config)
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

// fetchJobModel downloads the latest checkpoint of job id from the node
// at --api into tmp, as `braid job export` does: the model, or a LoRA
// job's adapter and its base. It returns the model's directory and the
// adapter's ("" for a full fine-tuning job).
func fetchJobModel(c *cli.Context, id, tmp string) (modelDir, adapterDir string, err error) {
	api := c.String("api")
	tok := c.String("api-token")
	if tok == "" {
		tok = discoverToken(api)
	}
	cl, err := client.New(client.Config{URL: api, CAFile: c.String("ca"), Token: tok})
	if err != nil {
		return "", "", fmt.Errorf("--api: %w", err)
	}
	js, err := cl.Job(c.Context, id)
	if err != nil {
		return "", "", noJob(err, id)
	}
	n := len(js.Checkpoints)
	if n == 0 {
		return "", "", fmt.Errorf("job %s has no checkpoint yet (see braid job status %s)", id, id)
	}
	get := func(dir, prefix string, names []string) error {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		for _, name := range names {
			if err := cl.DownloadJobFile(c.Context, id, prefix+name, filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("job %s: %w", id, err)
			}
		}
		return nil
	}
	modelDir = filepath.Join(tmp, "model")
	if js.Spec.LoRARank == 0 {
		return modelDir, "", get(modelDir, "", append([]string{"config.json", "model.safetensors"}, tokenizerFiles(js.Checkpoints[n-1].Tokenizer)...))
	}
	adapterDir = filepath.Join(tmp, "adapter")
	if err := get(adapterDir, "", []string{model.AdapterConfigFile, model.AdapterWeightsFile}); err != nil {
		return "", "", err
	}
	return modelDir, adapterDir, get(modelDir, "base-", append([]string{"config.json", "model.safetensors"}, tokenizerFiles(js.Spec.Base.Tokenizer)...))
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
