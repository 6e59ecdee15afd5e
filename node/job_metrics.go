package node

import (
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
)

// The job metrics: one series per job this node's worker runs or ran,
// labelled job="ID". A job's series keep their last values after it ends,
// as long as this node keeps the job's final figures (Node.finished: the
// jobs this worker ran, at most 64 (job.go), a job's removed with it),
// so a dashboard shows where a job stopped, not a drop to 0, and the
// number of series stays bounded. Nothing is reported for a job before
// its first step; the held-out loss only once it has been evaluated.
//
// Prometheus attaches its own "job" label to every scraped series (the
// scrape job); with the default honor_labels: false it keeps that one and
// renames this label exported_job.

// jobGauge is one metric of a job's progress.
type jobGauge struct {
	desc *prometheus.Desc
	// value reads the metric from p; ok false leaves the job's series out.
	value func(p JobProgress) (v float64, ok bool)
}

// jobCollector serves the job gauges from the node's runner and finished
// jobs at each scrape.
type jobCollector struct {
	n      *Node
	gauges []jobGauge
}

func newJobCollector(n *Node) *jobCollector {
	g := func(name, help string, value func(JobProgress) (float64, bool)) jobGauge {
		return jobGauge{prometheus.NewDesc(prometheus.BuildFQName("braid", "", name), help, []string{"job"}, nil), value}
	}
	always := func(f func(JobProgress) float64) func(JobProgress) (float64, bool) {
		return func(p JobProgress) (float64, bool) { return f(p), true }
	}
	return &jobCollector{n: n, gauges: []jobGauge{
		g("job_step", "Steps the job's worker here has applied (its last value once the job ended).", always(func(p JobProgress) float64 { return float64(p.Step) })),
		g("job_loss", "Global training loss of the job's last step.", always(func(p JobProgress) float64 { return p.Loss })),
		g("job_heldout_loss", "Last held-out loss (rank 0); absent until evaluated.", func(p JobProgress) (float64, bool) {
			return p.HeldoutLoss, p.HeldoutLoss != 0
		}),
		g("job_tokens_per_second", "Tokens this worker processed per second in the job's last step.", always(func(p JobProgress) float64 { return p.TokensPerSec })),
		g("job_step_seconds", "Duration of the job's last step.", always(func(p JobProgress) float64 { return p.StepMS / 1e3 })),
		g("job_allreduce_wait_seconds", "Time the job's last step was blocked on the all-reduce after backward.", always(func(p JobProgress) float64 { return p.WaitMS / 1e3 })),
		g("job_wire_bytes_per_step", "Bytes this node sent to its ring neighbour in the job's last step.", always(func(p JobProgress) float64 { return float64(p.WireBytesPerStep) })),
		g("job_wire_bytes", "Bytes this node sent to its ring neighbour in the job so far.", always(func(p JobProgress) float64 { return float64(p.WireBytes) })),
	}}
}

func (c *jobCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, g := range c.gauges {
		ch <- g.desc
	}
}

func (c *jobCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.n.jobFigures() {
		if p.Step == 0 {
			continue // not started here: nothing to report yet
		}
		for _, g := range c.gauges {
			if v, ok := g.value(p); ok {
				ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, p.Job)
			}
		}
	}
}

// jobFigures returns the progress of the running job (if any) and the
// final progress of the finished jobs this node keeps, by job id, each job
// once.
func (n *Node) jobFigures() []JobProgress {
	n.jobMu.Lock()
	r := n.runner
	figures := make(map[string]JobProgress, len(n.finished)+1)
	maps.Copy(figures, n.finished)
	n.jobMu.Unlock()
	if r != nil {
		p := r.progress()
		p.Job = r.id
		figures[r.id] = p
	}
	out := make([]JobProgress, 0, len(figures))
	for _, id := range slices.Sorted(maps.Keys(figures)) {
		p := figures[id]
		p.Job = id
		out = append(out, p)
	}
	return out
}
