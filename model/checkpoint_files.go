package model

import (
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/braidml/braid/model/hftok"
)

// A model's files as bytes, without a directory — config.json, the weights
// and the tokenizer files beside them, as a node holds them in its store by
// hash: DecodeConfigFiles and DecodeCheckpointFiles decode them as
// ReadConfig and LoadCheckpoint decode a directory holding the same files.

// TokenizerFiles lists, sorted, the names of the files a model directory's
// FileTokenizer may be read from (LoadTokenizer): tokenizer.json,
// tokenizer_config.json and chat_template.jinja. A model's tokenizer
// travels as the files its Files method returns, a subset of these.
func TokenizerFiles() []string { return hftok.FileNames() }

// MaxTokenizerFileBytes is the most bytes tokenizer file name may have, and
// 0 for a name not among TokenizerFiles.
func MaxTokenizerFileBytes(name string) int64 { return hftok.MaxFileBytes(name) }

// DecodeConfigFiles decodes config.json's bytes as DecodeConfig does, with
// the tokenizer that LoadTokenizer chooses for a directory holding
// config.json and the tokenizer files (file name → bytes; nil for none):
// a built-in one that braid_tokenizer names, else the one tokenizer.json
// describes, else the one vocab_size implies. configName labels the errors.
// A file name not among TokenizerFiles, or a file over its
// MaxTokenizerFileBytes, is an error. It never panics.
func DecodeConfigFiles(configJSON []byte, configName string, tokenizer map[string][]byte) (Config, Tokenizer, error) {
	for _, name := range slices.Sorted(maps.Keys(tokenizer)) {
		if max := MaxTokenizerFileBytes(name); max == 0 || int64(len(tokenizer[name])) > max {
			return Config{}, nil, fmt.Errorf("%w: tokenizer file %.64q of %d bytes: want one of %v, each within its limit", ErrCheckpoint, name, len(tokenizer[name]), TokenizerFiles())
		}
	}
	c, name, err := decodeConfig(configJSON, configName)
	if err != nil {
		return Config{}, nil, err
	}
	tok, err := chooseTokenizer(name, c.Vocab, tokenizerSource{
		config: configName, tokenizer: hftok.TokenizerFile, holder: "the model's files",
		load: func() (*hftok.Tokenizer, error) {
			if _, ok := tokenizer[hftok.TokenizerFile]; !ok {
				return nil, fmt.Errorf("no %s: %w", hftok.TokenizerFile, fs.ErrNotExist)
			}
			return hftok.ParseFiles(tokenizer)
		},
	})
	if err != nil {
		return Config{}, nil, err
	}
	if err := checkTokenizer(c, tok, configName); err != nil {
		return Config{}, nil, err
	}
	return c, tok, nil
}

// DecodeCheckpointFiles is DecodeCheckpoint with the tokenizer files beside
// config.json (see DecodeConfigFiles): the checkpoint LoadCheckpoint reads
// from a directory holding config.json, model.safetensors and those files.
// It never panics.
func DecodeCheckpointFiles(configJSON []byte, configName string, weights []byte, weightsName string, tokenizer map[string][]byte) (*Checkpoint, error) {
	c, tok, err := DecodeConfigFiles(configJSON, configName, tokenizer)
	if err != nil {
		return nil, err
	}
	return decodeWeights(c, tok, weights, weightsName)
}
