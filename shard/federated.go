package shard

import (
	"fmt"
	"slices"
)

// Federated sampling. In a federated job each member (a business unit)
// trains only on its own dataset, so a global batch is not one slice of one
// permutation: it is made of every unit's share, each drawn from that
// unit's own data. Apportion sizes the shares in proportion to the units'
// sequence counts (so the averaged gradient weights each unit by its
// data, as in FedAvg), and UnitBatch draws a unit's share from an endless
// stream of its data-epochs, so that a share is always exactly its size
// and every sequence of a unit is used once per pass over that unit's data.

// Apportion splits g into shares proportional to counts by the largest
// remainder method: the shares sum to g and each is within one of
// g·count/total. Ties go to the earlier unit. A unit with count 0 gets 0;
// if every count is 0, the shares are as even as possible.
func Apportion(g int, counts []int64) []int {
	shares := make([]int, len(counts))
	if len(counts) == 0 || g <= 0 {
		return shares
	}
	var total int64
	for _, c := range counts {
		total += max(c, 0)
	}
	if total == 0 {
		for i := range shares {
			shares[i] = g / len(counts)
			if i < g%len(counts) {
				shares[i]++
			}
		}
		return shares
	}
	type rem struct {
		i int
		r int64 // remainder of g·count mod total
	}
	rems := make([]rem, len(counts))
	given := 0
	for i, c := range counts {
		q := int64(g) * max(c, 0)
		shares[i] = int(q / total)
		given += shares[i]
		rems[i] = rem{i, q % total}
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for j := 0; given < g; j++ {
		shares[rems[j%len(rems)].i]++
		given++
	}
	return shares
}

// UnitBatch returns the g train sequence ids (of n) that a federated unit
// trains on at step: positions step·g .. step·g+g−1 of the unit's stream,
// where position p is element p mod n of data-epoch p / n's seeded
// permutation (the same permutation GlobalBatch uses). A pure function.
func UnitBatch(seed uint64, step int64, g int, n int64) ([]int64, error) {
	switch {
	case g < 0:
		return nil, fmt.Errorf("shard: unit batch of %d sequences", g)
	case g > 0 && n < 1:
		return nil, fmt.Errorf("shard: a unit batch of %d from %d sequences", g, n)
	case step < 0:
		return nil, fmt.Errorf("shard: step %d", step)
	}
	ids := make([]int64, g)
	var p permutation
	have, epoch := false, uint64(0)
	for j := range ids {
		pos := step*int64(g) + int64(j)
		if e := uint64(pos / n); e != epoch || !have {
			epoch, have = e, true
			p = newPermutation(seed, epoch, uint64(n))
		}
		ids[j] = int64(p.at(uint64(pos % n)))
	}
	return ids, nil
}
