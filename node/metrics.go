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
	n.reg.MustRegister(newJobCollector(n)) // job_metrics.go
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
