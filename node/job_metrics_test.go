package node

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestJobMetricsLabelled: the job gauges carry the job's id as a label;
// a job reports nothing before its first step and no held-out loss until
// evaluated; a finished job's series keep their last values (no drop to
// 0 when the node goes idle) until its figures are removed.
func TestJobMetricsLabelled(t *testing.T) {
	n := &Node{finished: map[string]JobProgress{}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(newJobCollector(n))
	// scrape lists the series as `name{job="ID"} value`, sorted.
	scrape := func() string {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, mf := range mfs {
			for _, m := range mf.Metric {
				if len(m.Label) != 1 || m.Label[0].GetName() != "job" {
					t.Fatalf("%s has labels %v, want job only", mf.GetName(), m.Label)
				}
				fmt.Fprintf(&b, "%s{job=%q} %g\n", mf.GetName(), m.Label[0].GetValue(), m.GetGauge().GetValue())
			}
		}
		return b.String()
	}
	series := func(name string) int { return strings.Count(scrape(), name+"{") }
	loss := func() string {
		var out []string
		for _, l := range strings.Split(scrape(), "\n") {
			if strings.HasPrefix(l, "braid_job_loss{") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "; ")
	}

	if got := scrape(); got != "" {
		t.Fatalf("idle node without jobs serves:\n%s", got)
	}
	r := &jobRunner{id: "job-a", prog: JobProgress{Job: "job-a", Phase: PhasePreparing}}
	n.runner = r
	if got := scrape(); got != "" {
		t.Fatalf("a job before its first step serves:\n%s", got)
	}
	r.prog.Step, r.prog.Loss, r.prog.TokensPerSec = 7, 2.5, 1000
	if series("braid_job_step") != 1 || series("braid_job_heldout_loss") != 0 {
		t.Fatalf("running, not evaluated:\n%s", scrape())
	}
	if got, want := loss(), `braid_job_loss{job="job-a"} 2.5`; got != want {
		t.Fatalf("running: %s, want %s", got, want)
	}
	r.prog.HeldoutLoss = 2.25
	if series("braid_job_heldout_loss") != 1 {
		t.Fatalf("evaluated: no held-out series:\n%s", scrape())
	}

	// The job ends (as the job loop does it) and a second one starts.
	n.finished[r.id] = r.progress()
	n.runner = &jobRunner{id: "job-b", prog: JobProgress{Job: "job-b", Step: 1, Loss: 3}}
	want := `braid_job_loss{job="job-a"} 2.5; braid_job_loss{job="job-b"} 3`
	if got := loss(); got != want {
		t.Fatalf("one finished, one running: %s, want %s", got, want)
	}
	// Idle: the last values stay.
	n.finished["job-b"] = n.runner.progress()
	n.runner = nil
	if got := loss(); got != want {
		t.Fatalf("idle: %s, want %s", got, want)
	}
	// A job's figures removed: its series go.
	delete(n.finished, "job-a")
	if got := scrape(); strings.Contains(got, "job-a") || !strings.Contains(got, "job-b") {
		t.Fatalf("after removing job-a:\n%s", got)
	}
}
