package node

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// A full history thins its older half, keeps every evaluated step and the
// recent ones, and stays bounded however long the job runs; a step run
// again (after a checkpoint was restored) replaces the ones after it.
func TestJobHistoryStaysBounded(t *testing.T) {
	var h JobHistory
	const steps = 10 * MaxHistoryPoints
	for s := 1; s <= steps; s++ {
		h.add(HistoryPoint{Step: s, Loss: 1 / float64(s), LR: 1e-3})
		if s%100 == 0 {
			h.heldout(s, 2/float64(s))
		}
		if len(h.Points) >= MaxHistoryPoints {
			t.Fatalf("step %d: %d points, want fewer than %d", s, len(h.Points), MaxHistoryPoints)
		}
	}
	if err := h.validate(); err != nil {
		t.Fatal(err)
	}
	if h.Points[0].Step != 1 || h.last() != steps || h.Thinned != steps-len(h.Points) {
		t.Errorf("first step %d, last %d, %d thinned of %d", h.Points[0].Step, h.last(), h.Thinned, steps)
	}
	if got := h.evaluated(); got != steps/100 {
		t.Errorf("%d evaluated steps kept, want all %d", got, steps/100)
	}
	for i := len(h.Points) - MaxHistoryPoints/4; i < len(h.Points); i++ {
		if h.Points[i].Step != steps-len(h.Points)+i+1 {
			t.Fatalf("recent point %d is step %d: the recent steps are thinned", i, h.Points[i].Step)
		}
	}
	h.add(HistoryPoint{Step: steps - 5, Loss: 9})
	if h.last() != steps-5 || h.Points[len(h.Points)-1].Loss != 9 {
		t.Errorf("after step %d again: last step %d", steps-5, h.last())
	}
	h.heldout(0, 3.5)
	if h.BaseHeldoutLoss == nil || *h.BaseHeldoutLoss != 3.5 {
		t.Errorf("base held-out loss %v", h.BaseHeldoutLoss)
	}
	// A job that evaluates every step is bounded too.
	var every JobHistory
	for s := 1; s <= 3*MaxHistoryPoints; s++ {
		every.add(HistoryPoint{Step: s, Loss: 1})
		every.heldout(s, 1)
	}
	if len(every.Points) >= MaxHistoryPoints || every.last() != 3*MaxHistoryPoints {
		t.Errorf("evaluating every step: %d points, last step %d", len(every.Points), every.last())
	}
}

// A history round-trips through its file; the decoder refuses what a
// worker never writes.
func TestDecodeHistory(t *testing.T) {
	var h JobHistory
	for s := 1; s <= 5; s++ {
		h.add(HistoryPoint{Step: s, Loss: 2, LR: 1e-3, TokensPerSec: 10, WireBytes: int64(s)})
	}
	h.heldout(5, 1.5)
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeHistory(bytes.NewReader(b))
	if err != nil || len(got.Points) != 5 || got.Points[4].HeldoutLoss == nil || *got.Points[4].HeldoutLoss != 1.5 || got.Points[3].HeldoutLoss != nil {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for name, bad := range map[string]string{
		"steps out of order": `{"job":"j","points":[{"step":2,"loss":1,"lr":0,"tokens_per_sec":0,"wire_bytes":0,"time":"2026-01-01T00:00:00Z"},{"step":1,"loss":1,"lr":0,"tokens_per_sec":0,"wire_bytes":0,"time":"2026-01-01T00:00:00Z"}]}`,
		"step 0":             `{"job":"j","points":[{"step":0,"loss":1}]}`,
		"negative bytes":     `{"job":"j","points":[{"step":1,"loss":1,"wire_bytes":-1}]}`,
		"unknown field":      `{"job":"j","points":[],"extra":1}`,
		"trailing data":      `{"job":"j","points":[]} {}`,
		"too many points":    `{"job":"j","points":[` + strings.Repeat(`{"step":1},`, MaxHistoryPoints) + `{"step":1}]}`,
		"too large":          `{"job":"` + strings.Repeat("j", maxHistoryFileBytes) + `"}`,
	} {
		if _, err := decodeHistory(strings.NewReader(bad)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

func FuzzDecodeHistory(f *testing.F) {
	f.Add([]byte(`{"job":"j","base_heldout_loss":3,"points":[{"step":1,"loss":2.5,"heldout_loss":2,"lr":0.001,"tokens_per_sec":100,"wire_bytes":10,"time":"2026-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"job":"j","points":[{"step":2},{"step":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHistory(bytes.NewReader(b))
		if err != nil {
			return
		}
		// What decodes is a history a worker could have written: it
		// encodes, and decodes again to the same points.
		out, err := json.Marshal(h)
		if err != nil {
			t.Fatalf("a decoded history does not encode: %v", err)
		}
		again, err := decodeHistory(bytes.NewReader(out))
		if err != nil || len(again.Points) != len(h.Points) {
			t.Fatalf("re-decoding: %d points, %v; first %d", len(again.Points), err, len(h.Points))
		}
	})
}
