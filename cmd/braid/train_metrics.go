package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/train"
)

// braid train --metrics FILE: a machine-readable log of the run, one JSON
// object a line, one line a step, written as the run goes: each line is
// one write to an unbuffered file, so a reader (tail -f, a plotting
// script) sees whole lines, and a crash leaves whole lines only (but, at
// worst, a last one the kernel had not written, never half of one).

// metricsLine is one line of --metrics. A held-out loss that was not
// evaluated at a step is absent, never 0.
type metricsLine struct {
	Step         int      `json:"step"`
	Loss         *float64 `json:"loss,omitempty"` // absent on the evaluation before the first step (step 0)
	LR           *float64 `json:"lr,omitempty"`
	GradNorm     *float64 `json:"grad_norm,omitempty"`
	Tokens       int      `json:"tokens,omitempty"` // tokens of this step
	TokensPerSec float64  `json:"tokens_per_sec,omitempty"`
	ElapsedS     float64  `json:"elapsed_s"` // wall time since the training loop started
	HeldoutLoss  *float64 `json:"heldout_loss,omitempty"`
	Perplexity   *float64 `json:"heldout_perplexity,omitempty"`
	BitsPerByte  *float64 `json:"heldout_bits_per_byte,omitempty"`
}

// metricsLog writes --metrics lines; a nil *metricsLog writes nothing.
type metricsLog struct {
	w     io.Writer
	close func() error
	start time.Time
}

// openMetrics opens the --metrics destination: "-" is stdout (the human
// progress lines then go to stderr, so that stdout is JSON lines only), a
// path is created, or appended to when the run resumes. An existing
// non-empty file of a new run is refused without --overwrite. It returns
// the writer for the progress lines.
func openMetrics(c *cli.Context, resuming bool) (*metricsLog, io.Writer, error) {
	path, out := c.String("metrics"), c.App.Writer
	switch path {
	case "":
		return nil, out, nil
	case "-":
		return &metricsLog{w: c.App.Writer, close: func() error { return nil }, start: time.Now()}, c.App.ErrWriter, nil
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if !resuming {
		if st, err := os.Stat(path); err == nil && st.Size() > 0 && !c.Bool("overwrite") {
			return nil, nil, fmt.Errorf("--metrics %s exists (%d bytes): give --overwrite to replace it, or another path", path, st.Size())
		}
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics: %w", err)
	}
	return &metricsLog{w: f, close: f.Close, start: time.Now()}, out, nil
}

// step builds the line of a step.
func (m *metricsLog) step(st train.StepStats) metricsLine {
	l := metricsLine{Step: st.Step, Loss: finite(float64(st.Loss)), LR: finite(st.LR), GradNorm: finite(float64(st.GradNorm)), Tokens: st.Tokens}
	if st.Duration > 0 {
		l.TokensPerSec = float64(st.Tokens) / st.Duration.Seconds()
	}
	return l
}

// withEval adds a held-out evaluation to a line.
func withEval(l metricsLine, r train.EvalResult) metricsLine {
	l.HeldoutLoss, l.Perplexity, l.BitsPerByte = finite(r.Loss), finite(r.Perplexity), finite(r.BitsPerByte)
	return l
}

// write writes one line, in one write.
func (m *metricsLog) write(l metricsLine) error {
	if m == nil {
		return nil
	}
	l.ElapsedS = math.Round(time.Since(m.start).Seconds()*1e3) / 1e3
	b, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	if _, err := m.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("--metrics: %w", err)
	}
	return nil
}

func (m *metricsLog) Close() error {
	if m == nil {
		return nil
	}
	return m.close()
}

// finite is &x, or nil for NaN and ±Inf, which JSON cannot hold (a loss
// that diverged is then absent from its line).
func finite(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}
