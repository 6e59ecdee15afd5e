package node

import (
	"math"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The control plane's health: whether a node whose cores all train still
// hears its Raft leader and answers gossip probes on time. A tight compute
// loop that starves the runtime shows here first, as gaps between the
// leader's heartbeats and slow probe round trips, long before it shows as
// a leader change or a member suspected.
//
// The monitor samples the time of the last contact from the leader every
// healthSample and records each gap between contacts; gossip reports every
// probe's round trip and every suspicion (membership.go). Served as
// Status.Health and as Prometheus metrics.

// healthSample is how often the monitor reads the last contact time: well
// below the leader's heartbeat interval (a tenth of HeartbeatTimeout).
const healthSample = 10 * time.Millisecond

// HealthStatus summarises the control plane's timing since the node
// started.
type HealthStatus struct {
	// ContactGap are the gaps between two contacts from the leader, as a
	// follower heard them (heartbeats or log entries), in milliseconds.
	ContactGap LatencySummary `json:"raft_contact_gap_ms"`
	// ProbeRTT are gossip probes' round trips, in milliseconds.
	ProbeRTT LatencySummary `json:"gossip_probe_rtt_ms"`
	// LeaderChanges counts the times the leader this node knows changed
	// (to none or to another).
	LeaderChanges int `json:"raft_leader_changes"`
	// Suspicions counts this node suspecting a peer (a probe without an
	// ack); Refuted, peers suspecting this node (it refuted them).
	Suspicions int `json:"gossip_suspicions"`
	Refuted    int `json:"gossip_refuted"`
}

// LatencySummary is a latency distribution's size and quantiles.
type LatencySummary struct {
	Count int     `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// latencyHist is a histogram of durations on exponential buckets (the
// bucket bounds double from 100 µs), safe for concurrent use; its
// quantiles are the upper bounds of their buckets.
type latencyHist struct {
	mu     sync.Mutex
	counts [latencyBuckets + 1]uint64 // the last: above every bound
	sum    float64                    // seconds
	n      uint64
	max    time.Duration
}

const latencyBuckets = 18 // 100 µs · 2^17 ≈ 13 s

func latencyBound(i int) time.Duration { return 100 * time.Microsecond << i }

func (h *latencyHist) observe(d time.Duration) {
	i := 0
	for i < latencyBuckets && d > latencyBound(i) {
		i++
	}
	h.mu.Lock()
	h.counts[i]++
	h.sum += d.Seconds()
	h.n++
	h.max = max(h.max, d)
	h.mu.Unlock()
}

// summary is the histogram in milliseconds.
func (h *latencyHist) summary() LatencySummary {
	h.mu.Lock()
	defer h.mu.Unlock()
	q := func(p float64) float64 {
		if h.n == 0 {
			return 0
		}
		want, seen := uint64(math.Ceil(p*float64(h.n))), uint64(0)
		for i, c := range h.counts {
			if seen += c; seen >= want {
				if i == latencyBuckets {
					break
				}
				return float64(min(latencyBound(i), h.max).Microseconds()) / 1e3
			}
		}
		return float64(h.max.Microseconds()) / 1e3
	}
	return LatencySummary{Count: int(h.n), P50: q(0.5), P99: q(0.99), Max: float64(h.max.Microseconds()) / 1e3}
}

// metric is the histogram as a Prometheus histogram in seconds.
func (h *latencyHist) metric(desc *prometheus.Desc) prometheus.Metric {
	h.mu.Lock()
	defer h.mu.Unlock()
	buckets, cum := map[float64]uint64{}, uint64(0)
	for i := range latencyBuckets {
		cum += h.counts[i]
		buckets[latencyBound(i).Seconds()] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.n, h.sum, buckets)
}

// controlHealth is the monitor's state.
type controlHealth struct {
	contactGap latencyHist
	probeRTT   latencyHist

	mu            sync.Mutex
	leaderChanges int
	suspicions    int
	refuted       int
}

func (h *controlHealth) status() HealthStatus {
	h.mu.Lock()
	s := HealthStatus{LeaderChanges: h.leaderChanges, Suspicions: h.suspicions, Refuted: h.refuted}
	h.mu.Unlock()
	s.ContactGap, s.ProbeRTT = h.contactGap.summary(), h.probeRTT.summary()
	return s
}

// gossipEvent takes what gossip reports: "suspect" (of member name) or
// "refute".
func (n *Node) gossipEvent(kind, name string) {
	n.health.gossipEvent(kind)
	if kind == "suspect" {
		n.failures.note("suspect", name, time.Now())
	}
}

// gossipEvent counts what gossip reports: "suspect" or "refute".
func (h *controlHealth) gossipEvent(kind string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch kind {
	case "suspect":
		h.suspicions++
	case "refute":
		h.refuted++
	}
}

// Health reports the control plane's timing since the node started.
func (n *Node) Health() HealthStatus { return n.health.status() }

// healthLoop samples the last contact from the leader, and who leads,
// every healthSample until the node stops.
func (n *Node) healthLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(healthSample)
	defer tick.Stop()
	var last time.Time
	leader := n.coord.LeaderID()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		if l := n.coord.LeaderID(); l != leader {
			n.health.mu.Lock()
			n.health.leaderChanges++
			n.health.mu.Unlock()
			leader, last = l, time.Time{}
		}
		lc := n.coord.LastContact()
		if lc.IsZero() || lc.Equal(last) {
			continue
		}
		if !last.IsZero() && leader != n.cfg.Name {
			n.health.contactGap.observe(lc.Sub(last))
		}
		last = lc
	}
}

// healthCollector exports the monitor as Prometheus metrics.
type healthCollector struct {
	h                                *controlHealth
	gap, rtt, leaders, suspect, refs *prometheus.Desc
}

func newHealthCollector(h *controlHealth) *healthCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc("braid_"+name, help, nil, nil) }
	return &healthCollector{h: h,
		gap:     d("raft_contact_gap_seconds", "Gaps between two contacts from the Raft leader (heartbeats or entries), as this follower heard them."),
		rtt:     d("gossip_probe_rtt_seconds", "Round trips of this node's gossip probes."),
		leaders: d("raft_leader_changes_total", "Times the leader this node knows changed (to none or to another)."),
		suspect: d("gossip_suspicions_total", "Peers this node suspected (a probe without an ack)."),
		refs:    d("gossip_refuted_total", "Suspicions of this node by peers that it refuted."),
	}
}

func (c *healthCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.gap
	ch <- c.rtt
	ch <- c.leaders
	ch <- c.suspect
	ch <- c.refs
}

func (c *healthCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- c.h.contactGap.metric(c.gap)
	ch <- c.h.probeRTT.metric(c.rtt)
	s := c.h.status()
	ch <- prometheus.MustNewConstMetric(c.leaders, prometheus.CounterValue, float64(s.LeaderChanges))
	ch <- prometheus.MustNewConstMetric(c.suspect, prometheus.CounterValue, float64(s.Suspicions))
	ch <- prometheus.MustNewConstMetric(c.refs, prometheus.CounterValue, float64(s.Refuted))
}
