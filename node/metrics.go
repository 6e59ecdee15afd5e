package node

import (
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"golang.org/x/sys/unix"
)

// The node's Prometheus metrics (GET /metrics), and what it reports of its
// host.

func (n *Node) registerMetrics() {
	gauge := func(name, help string, f func() float64) {
		n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "braid", Name: name, Help: help}, f))
	}
	n.reg.MustRegister(newHealthCollector(&n.health))
	n.failoverPhases = newFailoverPhases()
	n.reg.MustRegister(n.failoverPhases)
	gauge("members_alive", "Members gossip sees alive, this node included.", func() float64 { return float64(n.ml.AliveCount()) })
	gauge("raft_term", "Current Raft term.", func() float64 { return float64(n.coord.Status().Term) })
	gauge("epoch_id", "Id of the committed epoch.", func() float64 { return float64(n.coord.State().Epoch.ID) })
	gauge("epoch_members", "Members of the committed epoch.", func() float64 { return float64(len(n.coord.State().Epoch.Members)) })
	gauge("is_leader", "1 on the Raft leader.", func() float64 {
		if n.coord.IsLeader() {
			return 1
		}
		return 0
	})
	// The running job, as this node's worker sees it (0 when none).
	job := func(f func(JobProgress) float64) func() float64 {
		return func() float64 {
			n.jobMu.Lock()
			r := n.runner
			n.jobMu.Unlock()
			if r == nil {
				return 0
			}
			return f(r.progress())
		}
	}
	gauge("job_step", "Steps the running job's worker here has applied.", job(func(p JobProgress) float64 { return float64(p.Step) }))
	gauge("job_loss", "Global training loss of the last step.", job(func(p JobProgress) float64 { return p.Loss }))
	gauge("job_heldout_loss", "Last held-out loss (rank 0).", job(func(p JobProgress) float64 { return p.HeldoutLoss }))
	gauge("job_tokens_per_second", "Tokens this worker processed per second in the last step.", job(func(p JobProgress) float64 { return p.TokensPerSec }))
	gauge("job_step_seconds", "Duration of the last step.", job(func(p JobProgress) float64 { return p.StepMS / 1e3 }))
	gauge("job_allreduce_wait_seconds", "Time the last step was blocked on the all-reduce after backward.", job(func(p JobProgress) float64 { return p.WaitMS / 1e3 }))
	gauge("job_wire_bytes_per_step", "Bytes this node sent to its ring neighbour in the last step.", job(func(p JobProgress) float64 { return float64(p.WireBytesPerStep) }))
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "braid", Name: "allreduce_bytes_sent_total",
		Help: "Bytes this node's job rings have sent to their right neighbours."}, func() float64 { return float64(n.wireBytes.Load()) }))
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "braid", Name: "control_refused_total",
		Help: "Control requests refused because their sender may not send them (not a member, not in the job's ring, ...)."}, func() float64 { return float64(n.controlRefused.Load()) }))
	n.registerGCMetrics()
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "braid", Name: "raft_refused_total",
		Help: "Raft streams and RPCs refused because their sender was not admitted to the cluster or its RPC header named another server."}, func() float64 {
		if n.coord == nil {
			return 0
		}
		return float64(n.coord.RefusedRaftStreams())
	}))
}

// physicalMemory reads MemTotal from /proc/meminfo (0 where unavailable).
func physicalMemory() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kb); err != nil {
		return 0
	}
	return kb * 1024
}

// freeDisk is the space available to an unprivileged user in dir's file
// system (0 where unknown): a node's capacity for dataset shards.
func freeDisk(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// nvidiaGPUs counts the GPUs the NVIDIA driver lists (0 without one).
func nvidiaGPUs() int {
	entries, err := os.ReadDir("/proc/driver/nvidia/gpus")
	if err != nil {
		return 0
	}
	return len(entries)
}
