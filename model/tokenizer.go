package model

import (
	"fmt"
	"time"
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
	return nil, fmt.Errorf("model: unknown tokenizer %q (this build knows: byte, gpt2)", name)
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
