package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/gguf"
)

// Export formats of `braid export` and `braid job export`.
const (
	formatSafetensors = "safetensors" // Hugging Face's layout: config.json, model.safetensors, the tokenizer's files
	formatGGUF        = "gguf"        // one GGUF file, for llama.cpp and Ollama
)

// ggufFileName is the file `job export --format gguf` writes into --out.
const ggufFileName = "model.gguf"

// formatFlags are --format and --type, shared by export and job export.
func formatFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "format", Value: formatSafetensors, Usage: "safetensors (Hugging Face's layout) or gguf (llama.cpp, Ollama)"},
		&cli.StringFlag{Name: "type", Value: "f16", Usage: "--format gguf: the matrices' type, f32, f16, bf16 or q8_0 (vectors stay f32)"},
	}
}

// exportFormat checks --format and --type and returns the GGUF type
// (meaningful for --format gguf only).
func exportFormat(c *cli.Context) (string, gguf.Type, error) {
	format := c.String("format")
	if format != formatSafetensors && format != formatGGUF {
		return "", 0, fmt.Errorf("--format %q: want safetensors or gguf", format)
	}
	if format != formatGGUF && c.IsSet("type") {
		return "", 0, fmt.Errorf("--type applies to --format gguf (safetensors keeps the model's float32)")
	}
	typ, err := gguf.ParseType(c.String("type"))
	if err != nil {
		return "", 0, fmt.Errorf("--type: %w", err)
	}
	return format, typ, nil
}

func exportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write a checkpoint (with a LoRA adapter merged in) as a GGUF file for llama.cpp and Ollama, or as a plain Hugging Face model",
		Description: "--format gguf writes one file, --out FILE: the model's tensors as llama.cpp's convert_hf_to_gguf.py\n" +
			"names them, its tokenizer and, where it has one, its chat template; matrices of --type (q8_0: blocks of 32\n" +
			"int8 values with a float16 scale), vectors in f32. Load it with `llama-cli -m FILE` or an Ollama Modelfile\n" +
			"`FROM ./FILE`. --format safetensors writes --out DIR: config.json, model.safetensors and the tokenizer's files.\n" +
			"With --adapter, the adapter is merged into --model first.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "checkpoint `DIR`", Required: true},
			&cli.StringFlag{Name: "adapter", Usage: "LoRA adapter `DIR` (PEFT layout) to merge into --model first"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "--format gguf: the `FILE` to write; safetensors: the directory"},
			&cli.StringFlag{Name: "name", Usage: "--format gguf: general.name, the model's name in llama.cpp and Ollama (default: --model's directory name)"},
			overwriteFlag("replace an existing --out file (gguf) or write into a non-empty --out directory (safetensors)"),
		}, formatFlags()...),
		Action: func(c *cli.Context) error {
			format, typ, err := exportFormat(c)
			if err != nil {
				return err
			}
			out := c.String("out")
			if format == formatGGUF {
				if err := checkOutFile(c, "out"); err != nil {
					return err
				}
			} else if err := checkOutDir(c, "out"); err != nil {
				return err
			}
			start := time.Now()
			ck, err := loadMerged(c.String("model"), c.String("adapter"))
			if err != nil {
				return err
			}
			if format == formatSafetensors {
				if err := model.SaveCheckpoint(out, ck.Config, ck.Tokenizer, ck.Params); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "wrote %s (%s, %d parameters) in %s\n", out, formatSafetensors, len(ck.Params), time.Since(start).Round(time.Millisecond))
				return nil
			}
			name := c.String("name")
			if name == "" {
				name = filepath.Base(filepath.Clean(c.String("model")))
			}
			return writeGGUF(c, out, ck, gguf.Options{Type: typ, Name: name}, start)
		},
	}
}

// loadMerged loads the checkpoint in dir, with the LoRA adapter in
// adapterDir merged into it when adapterDir is not "".
func loadMerged(dir, adapterDir string) (*model.Checkpoint, error) {
	ck, err := model.LoadCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	if adapterDir == "" {
		return ck, nil
	}
	a, err := model.LoadAdapter(adapterDir, ck.Config)
	if err != nil {
		return nil, err
	}
	if ck.Params, err = model.MergeLoRA(ck.Config, ck.Params, a); err != nil {
		return nil, err
	}
	return ck, nil
}

// writeGGUF writes ck to path as a GGUF file and says what it wrote and
// how long the export took since start.
func writeGGUF(c *cli.Context, path string, ck *model.Checkpoint, opt gguf.Options, start time.Time) error {
	if err := gguf.WriteFile(path, ck, opt); err != nil {
		return err
	}
	if w := ck.Config.SlidingWindow; w > 0 {
		fmt.Fprintf(c.App.ErrWriter, "note: llama.cpp runs this %s as llama, without its sliding window of %d: it computes the same only on contexts of at most %d tokens\n",
			ck.Config.Arch, w, w)
	}
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %s (gguf %s, %s, %d parameters, %.1f MB) in %s\n", path, opt.Type, ck.Config.Arch,
		len(ck.Params), float64(st.Size())/1e6, time.Since(start).Round(time.Millisecond))
	return nil
}

// checkOutFile refuses to write the file given with --name when it exists
// and --overwrite is not given, or when it is a directory.
func checkOutFile(c *cli.Context, name string) error {
	path := c.String(name)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("--%s: %w", name, err)
	case st.IsDir():
		return fmt.Errorf("--%s %s is a directory: --format gguf writes one file, give its name", name, path)
	case !c.Bool("overwrite"):
		return fmt.Errorf("--%s %s exists: give --overwrite to replace it, or choose another name", name, path)
	}
	return nil
}

// exportJobGGUF writes out/model.gguf from a job's export in out: the
// model there, or for a LoRA job (base not "") the adapter there merged
// into the base in base.
func exportJobGGUF(c *cli.Context, id, out, base string, typ gguf.Type) error {
	start := time.Now()
	var ck *model.Checkpoint
	var err error
	if base == "" {
		ck, err = model.LoadCheckpoint(out)
	} else {
		ck, err = loadMerged(base, out)
	}
	if err != nil {
		return err
	}
	return writeGGUF(c, filepath.Join(out, ggufFileName), ck, gguf.Options{Type: typ, Name: "braid job " + id}, start)
}
