package shard

import (
	"math/rand/v2"
	"testing"
)

func TestApportion(t *testing.T) {
	for _, c := range []struct {
		g      int
		counts []int64
		want   []int
	}{
		{12, []int64{100, 100, 100}, []int{4, 4, 4}},
		{10, []int64{1, 1, 1}, []int{4, 3, 3}},
		{12, []int64{300, 100, 0}, []int{9, 3, 0}},
		{7, []int64{0, 0}, []int{4, 3}},
		{5, []int64{2, 1}, []int{3, 2}},
	} {
		got := Apportion(c.g, c.counts)
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("Apportion(%d, %v) = %v, want %v", c.g, c.counts, got, c.want)
				break
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		g := 1 + rng.IntN(100)
		counts := make([]int64, 1+rng.IntN(6))
		var total int64
		for i := range counts {
			counts[i] = rng.Int64N(1000)
			total += counts[i]
		}
		shares := Apportion(g, counts)
		sum := 0
		for i, s := range shares {
			sum += s
			if total > 0 {
				ideal := float64(g) * float64(counts[i]) / float64(total)
				if float64(s) < ideal-1 || float64(s) > ideal+1 {
					t.Fatalf("Apportion(%d, %v) = %v: share %d is more than one from %.2f", g, counts, shares, i, ideal)
				}
			}
		}
		if sum != g {
			t.Fatalf("Apportion(%d, %v) = %v sums to %d", g, counts, shares, sum)
		}
	}
}

// Every sequence of a unit is used exactly once per pass over the unit's
// data, whatever the share size, and the draw is deterministic.
func TestUnitBatchCoversEachPass(t *testing.T) {
	for _, c := range []struct {
		g int
		n int64
	}{{3, 10}, {4, 8}, {7, 5}, {1, 1}} {
		var stream []int64
		for step := int64(0); int64(len(stream)) < 3*c.n; step++ {
			ids, err := UnitBatch(9, step, c.g, c.n)
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) != c.g {
				t.Fatalf("g=%d: %d ids", c.g, len(ids))
			}
			again, _ := UnitBatch(9, step, c.g, c.n)
			for i := range ids {
				if ids[i] != again[i] {
					t.Fatal("UnitBatch is not deterministic")
				}
			}
			stream = append(stream, ids...)
		}
		for pass := int64(0); pass < 3; pass++ {
			seen := map[int64]bool{}
			for _, id := range stream[pass*c.n : (pass+1)*c.n] {
				if id < 0 || id >= c.n || seen[id] {
					t.Fatalf("g=%d n=%d pass %d: id %d out of range or repeated", c.g, c.n, pass, id)
				}
				seen[id] = true
			}
		}
	}
	if _, err := UnitBatch(1, 0, 2, 0); err == nil {
		t.Error("a batch from an empty unit")
	}
}
