package model

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/model/hftok"
)

// A Tokenizer turns text into token ids and back.
type Tokenizer interface {
	// Name identifies the tokenizer in checkpoints ("byte", "gpt2").
	Name() string
	// Vocab is the number of distinct ids, EOT included.
	Vocab() int
	// EOT is the end-of-text id that separates documents.
	EOT() int32
	// Encode appends the ids of text to dst and returns it.
	Encode(dst []int32, text []byte) []int32
	// Decode appends the bytes of ids to dst and returns it; EOT decodes to
	// nothing.
	Decode(dst []byte, ids []int32) []byte
}

// ByteTokenizer is the byte-level tokenizer: ids 0..255 are bytes, 256 is
// end-of-text. It needs no vocabulary file and handles any input.
type ByteTokenizer struct{}

// ByteEOT is ByteTokenizer's end-of-text id.
const ByteEOT = 256

// Name returns "byte".
func (ByteTokenizer) Name() string { return "byte" }

// Vocab returns 257.
func (ByteTokenizer) Vocab() int { return 257 }

// EOT returns 256.
func (ByteTokenizer) EOT() int32 { return ByteEOT }

// Encode appends one id per byte.
func (ByteTokenizer) Encode(dst []int32, text []byte) []int32 {
	for _, b := range text {
		dst = append(dst, int32(b))
	}
	return dst
}

// Decode appends one byte per id below 256 and skips the rest.
func (ByteTokenizer) Decode(dst []byte, ids []int32) []byte {
	for _, id := range ids {
		if id >= 0 && id < 256 {
			dst = append(dst, byte(id))
		}
	}
	return dst
}

// TokenizerByName returns the tokenizer a checkpoint names: "byte" (also
// ""), or "gpt2" (also "r50k_base", the name of its encoding in tiktoken).
// It reads the GPT-2 vocabulary on first use, so a broken one is reported
// here rather than as a panic later.
func TokenizerByName(name string) (Tokenizer, error) {
	switch name {
	case "byte", "":
		return ByteTokenizer{}, nil
	case "gpt2", "r50k_base":
		if _, err := gpt2LoadErr(); err != nil {
			return nil, err
		}
		return GPT2Tokenizer{}, nil
	}
	if isFileTokenizer(name) {
		return nil, fmt.Errorf("model: tokenizer %q is a model directory's tokenizer.json (LoadTokenizer), not a built-in one", name)
	}
	return nil, fmt.Errorf("model: unknown tokenizer %q (this build knows: byte, gpt2)", name)
}

// TokenizerFor returns a built-in tokenizer by name (TokenizerByName) or,
// where nameOrDir is no such name but a directory, that directory's
// tokenizer (LoadTokenizer): a command's --tokenizer may be either.
func TokenizerFor(nameOrDir string) (Tokenizer, error) {
	tok, err := TokenizerByName(nameOrDir)
	if err == nil {
		return tok, nil
	}
	if fi, statErr := os.Stat(nameOrDir); statErr == nil && fi.IsDir() {
		return LoadTokenizer(nameOrDir)
	}
	return nil, err
}

// A FileTokenizer is read from files of a model directory (package hftok's
// from tokenizer.json): SaveCheckpoint writes its files beside config.json,
// so that the checkpoint loads with the same tokenizer.
type FileTokenizer interface {
	Tokenizer
	// Files returns the files by name; the slices must not be modified.
	Files() map[string][]byte
}

// isFileTokenizer reports whether a tokenizer name is a FileTokenizer's
// (hftok's names start "hf-").
func isFileTokenizer(name string) bool { return strings.HasPrefix(name, "hf-") }

// LoadTokenizer returns the tokenizer of a model directory:
//
//   - where config.json's braid_tokenizer names a built-in tokenizer
//     ("byte", "gpt2": braid's own checkpoints), that one;
//   - else, where dir has a tokenizer.json (a Hugging Face model, or a
//     braid checkpoint that SaveCheckpoint gave one), the tokenizer it and
//     tokenizer_config.json describe (package hftok); a braid_tokenizer
//     that names another tokenizer.json's is an error;
//   - else the one config.json's vocab_size implies: "gpt2" for GPT-2's
//     vocabulary (or one padded from it), "byte" otherwise.
//
// config.json may describe any architecture: only braid_tokenizer and
// vocab_size are read of it here (ReadConfig checks the rest).
func LoadTokenizer(dir string) (Tokenizer, error) {
	path := filepath.Join(dir, ConfigFile)
	var hc struct {
		Tokenizer string `json:"braid_tokenizer"`
		VocabSize int    `json:"vocab_size"`
	}
	b, err := safefile.ReadFile(path, MaxConfigBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("model: %w", err)
	default:
		if err := json.Unmarshal(b, &hc); err != nil {
			return nil, fmt.Errorf("%w: %s: not a JSON config: %s", ErrCheckpoint, path, jsonerr.Problem(err))
		}
	}
	return dirTokenizer(dir, hc.Tokenizer, hc.VocabSize)
}

// dirTokenizer chooses the tokenizer of dir, whose config.json has
// braid_tokenizer name ("" for none) and vocab_size vocab (0 for none), as
// LoadTokenizer says.
func dirTokenizer(dir, name string, vocab int) (Tokenizer, error) {
	return chooseTokenizer(name, vocab, tokenizerSource{
		config: filepath.Join(dir, ConfigFile), tokenizer: filepath.Join(dir, hftok.TokenizerFile), holder: dir,
		load: func() (*hftok.Tokenizer, error) { return hftok.Load(dir) },
	})
}

// tokenizerSource is where a model's tokenizer files are: a directory, or
// files given by name.
type tokenizerSource struct {
	config, tokenizer, holder string // config.json, tokenizer.json and what holds them, for errors
	// load reads the tokenizer.json tokenizer; an error wrapping
	// fs.ErrNotExist when there is no tokenizer.json.
	load func() (*hftok.Tokenizer, error)
}

// chooseTokenizer chooses the tokenizer of a model whose config.json has
// braid_tokenizer name ("" for none) and vocab_size vocab (0 for none), as
// LoadTokenizer says, with the tokenizer.json of src.
func chooseTokenizer(name string, vocab int, src tokenizerSource) (Tokenizer, error) {
	if name != "" && !isFileTokenizer(name) {
		tok, err := TokenizerByName(name)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.config, err)
		}
		return tok, nil
	}
	hf, err := src.load()
	switch {
	case err == nil && name != "" && hf.Name() != name:
		return nil, fmt.Errorf("%w: %s names tokenizer %s, but %s describes %s", ErrCheckpoint, src.config, name, src.tokenizer, hf.Name())
	case err == nil:
		return hf, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("model: %w", err)
	case name != "":
		return nil, fmt.Errorf("%w: %s names tokenizer %s, but %s has no %s", ErrCheckpoint, src.config, name, src.holder, hftok.TokenizerFile)
	case vocab == 0:
		return nil, fmt.Errorf("%w: %s has neither %s nor a %s with a vocab_size", ErrCheckpoint, src.holder, hftok.TokenizerFile, ConfigFile)
	}
	return TokenizerByName(defaultTokenizer(vocab))
}

// TokenizerThroughput encodes text with tok repeatedly for at least minDur
// (and at least once) and returns the encoding speed in MB/s (10^6 bytes of
// text per second). It reuses one id buffer, so it measures encoding, not
// allocation of the result, and it measures the steady state: GPT-2's BPE
// cache is warm after the first pass, which a corpus read once does not
// enjoy (about 1.6 times slower on the shared English corpus). It takes
// wall-clock time and uses one goroutine; an empty text gives 0.
func TokenizerThroughput(tok Tokenizer, text []byte, minDur time.Duration) (mbPerSec float64) {
	if len(text) == 0 {
		return 0
	}
	ids := tok.Encode(nil, text) // warm-up: loads a vocabulary, sizes ids
	var n int64
	start := time.Now()
	for {
		ids = tok.Encode(ids[:0], text)
		n++
		if d := time.Since(start); d >= minDur {
			return float64(n) * float64(len(text)) / 1e6 / d.Seconds()
		}
	}
}
