package nodetest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// waitRing waits until name's own status shows an epoch of n alive members.
func waitRing(c *Cluster, name string, n int) {
	c.waitFor(name+" sees a ring of "+string(rune('0'+n)), func() bool {
		st := c.Node(name).Status()
		alive := 0
		for _, m := range st.Members {
			if m.State == "alive" {
				alive++
			}
		}
		return len(st.Ring) == n && alive >= n
	})
}

// The all-reduce benchmark runs across the committed epoch's members, asked
// over the control protocol, with every value right on every rank.
func TestBenchAllreduceAcrossTheCluster(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	waitRing(c, "n2", 3)
	var rows []allreduce.BenchRow
	plan := node.BenchPlan{Sizes: []int{4096, 100004}, Dtype: "bf16", Iters: 2, ChunkBytes: 16 << 10}
	if err := c.Node("n2").BenchAllreduce(context.Background(), plan, func(r allreduce.BenchRow) { rows = append(rows, r) }); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2: %+v", len(rows), rows)
	}
	for i, r := range rows {
		if r.Nodes != 3 || r.Bytes != plan.Sizes[i] || r.Wrong != 0 || r.Dtype != "bf16" || r.TimeMS <= 0 {
			t.Errorf("row %d: %+v", i, r)
		}
	}
	// A plan out of bounds is refused before anything runs.
	if err := c.Node("n1").BenchAllreduce(context.Background(), node.BenchPlan{Sizes: []int{2}, Dtype: "fp32", Iters: 1}, nil); err == nil {
		t.Error("a 2-byte size was accepted")
	}
}

// A member killed in the middle of a benchmark makes it fail within the hop
// timeout, with an error that names the dead member.
func TestBenchAllreduceMemberKilled(t *testing.T) {
	c := NewCluster(t, 3)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 3 })
	waitRing(c, "n1", 3)
	plan := node.BenchPlan{Sizes: []int{4096, 4 << 20}, Dtype: "fp32", Iters: 1000, ChunkBytes: 16 << 10, HopTimeout: time.Second}
	killed := make(chan struct{})
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		done <- c.Node("n1").BenchAllreduce(context.Background(), plan, func(allreduce.BenchRow) {
			c.Kill("n3") // after the first size: the second is running
			close(killed)
		})
	}()
	select {
	case err := <-done:
		<-killed
		if err == nil {
			t.Fatal("the benchmark succeeded although n3 died")
		}
		if !strings.Contains(err.Error(), "n3") {
			t.Errorf("the error does not name n3: %v", err)
		}
		t.Logf("failed after %v: %v", time.Since(start), err)
	case <-time.After(30 * time.Second):
		t.Fatal("the benchmark did not end within 30 s of a member's death")
	}
}
