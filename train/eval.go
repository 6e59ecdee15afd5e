package train

import (
	"fmt"
	"math"

	"github.com/braidml/braid/model"
)

// EvalResult is a model's loss on a token stream.
type EvalResult struct {
	Loss        float64 `json:"loss"`          // mean cross-entropy, nats per predicted token
	Perplexity  float64 `json:"perplexity"`    // e^Loss
	BitsPerByte float64 `json:"bits_per_byte"` // total bits / bytes of text predicted
	Tokens      int     `json:"tokens"`        // predicted tokens
	Bytes       int     `json:"bytes"`         // bytes of text those tokens decode to
}

// Evaluate runs m over tokens in consecutive, non-overlapping windows of up
// to T predicted tokens (B windows per forward pass; the last window may be
// shorter) and returns the loss over every predicted token, at most
// maxTokens of them (0: all). Bits per byte divide the total loss in bits by
// the bytes the predicted tokens decode to (end-of-text decodes to none), so
// it compares across tokenizers. m must have activations for B × T.
func Evaluate(m Forwarder, tok model.Tokenizer, tokens []uint16, B, T, maxTokens int) (EvalResult, error) {
	if len(tokens) < 2 {
		return EvalResult{}, fmt.Errorf("%w: %d tokens, need at least 2 to evaluate", ErrTooSmall, len(tokens))
	}
	n := len(tokens) - 1 // predictable tokens
	if maxTokens > 0 && n > maxTokens {
		n = maxTokens
	}
	inputs, targets := make([]int32, B*T), make([]int32, B*T)
	var (
		nats  float64
		count int
		bytes int
		buf   []byte
	)
	for pos := 0; pos < n; {
		// Fill up to B windows of T; only a final partial window is shorter.
		rows, t := 0, T
		if n-pos < T {
			t = n - pos
		}
		for rows < B && pos+t <= n && t > 0 {
			for i := 0; i < t; i++ {
				inputs[rows*t+i] = int32(tokens[pos+i])
				targets[rows*t+i] = int32(tokens[pos+i+1])
			}
			pos += t
			rows++
			if n-pos < T {
				break // a shorter window goes in its own pass
			}
		}
		loss, err := m.Forward(inputs[:rows*t], targets[:rows*t], rows, t)
		if err != nil {
			return EvalResult{}, err
		}
		nats += float64(loss) * float64(rows*t)
		count += rows * t
		buf = tok.Decode(buf[:0], targets[:rows*t])
		bytes += len(buf)
	}
	r := EvalResult{Loss: nats / float64(count), Tokens: count, Bytes: bytes}
	r.Perplexity = math.Exp(r.Loss)
	if bytes > 0 {
		r.BitsPerByte = nats / math.Ln2 / float64(bytes)
	}
	return r, nil
}
