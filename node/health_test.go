package node

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	if s := h.summary(); s != (LatencySummary{}) {
		t.Fatalf("empty: %+v", s)
	}
	for i := range 99 {
		h.observe(time.Duration(i%10+1) * time.Millisecond) // 1..10 ms
	}
	h.observe(3 * time.Second)
	s := h.summary()
	// 1..10 ms land in the buckets up to 12.8 ms; p50 ≤ 6.4 ms; the one
	// slow sample is the max and the p99 is still in the fast buckets.
	if s.Count != 100 || s.P50 <= 1 || s.P50 > 6.4 || s.P99 > 12.8 || s.Max != 3000 {
		t.Errorf("summary %+v", s)
	}
	var m dto.Metric
	if err := h.metric(prometheus.NewDesc("x", "x", nil, nil)).Write(&m); err != nil {
		t.Fatal(err)
	}
	if hm := m.GetHistogram(); hm.GetSampleCount() != 100 || hm.GetSampleSum() < 3 {
		t.Errorf("prometheus histogram: count %d sum %v", hm.GetSampleCount(), hm.GetSampleSum())
	}
}

// Suspicions reach the monitor through memberlist's log lines.
func TestGossipEventsFromLogLines(t *testing.T) {
	var (
		h       controlHealth
		suspect []string
	)
	w := slogWriter{l: slog.New(slog.NewTextHandler(io.Discard, nil)), event: func(kind, name string) {
		h.gossipEvent(kind)
		if kind == "suspect" {
			suspect = append(suspect, name)
		}
	}}
	for _, line := range []string{
		"2026/12/05 [INFO] memberlist: Suspect n2 has failed, no acks received",
		"2026/12/05 [WARN] memberlist: Refuting a suspect message (from: n3)",
		"2026/12/05 [DEBUG] memberlist: Stream connection from=127.0.0.1:1",
	} {
		w.Write([]byte(line))
	}
	if s := h.status(); s.Suspicions != 1 || s.Refuted != 1 || len(suspect) != 1 || suspect[0] != "n2" {
		t.Errorf("status %+v, suspected %q; want one suspicion (of n2) and one refutation", s, suspect)
	}
	if !strings.Contains(newHealthCollector(&h).gap.String(), "raft_contact_gap_seconds") {
		t.Error("collector names")
	}
}

// The start of a failure is the first suspicion before it was declared
// here: a suspicion after the declaration (this node probing a member that
// gossip from others already declared) or a refuted one long before does
// not count.
func TestMemberFailuresEarliest(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var f memberFailures
	f.note("suspect", "a", t0)
	f.note("failed", "a", t0.Add(800*time.Millisecond))
	if s, d := f.earliest([]string{"a"}, t0.Add(time.Second)); !s.Equal(t0) || !d.Equal(t0.Add(800*time.Millisecond)) {
		t.Errorf("suspected %v, declared %v", s, d)
	}
	f.note("failed", "b", t0)
	f.note("suspect", "b", t0.Add(100*time.Millisecond)) // after the declaration
	if s, _ := f.earliest([]string{"b"}, t0.Add(time.Second)); !s.IsZero() {
		t.Errorf("a suspicion after the declaration counted: %v", s)
	}
	f.note("suspect", "c", t0)
	f.note("failed", "c", t0.Add(time.Minute)) // the suspicion was refuted long before
	if s, _ := f.earliest([]string{"c"}, t0.Add(time.Minute)); !s.IsZero() {
		t.Errorf("a refuted suspicion counted: %v", s)
	}
	f.note("alive", "a", t0.Add(2*time.Second))
	if s, d := f.earliest([]string{"a"}, t0.Add(3*time.Second)); !s.IsZero() || !d.IsZero() {
		t.Errorf("a member that joined again still has %v, %v", s, d)
	}
}
