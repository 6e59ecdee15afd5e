package shard_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/braidml/braid/shard"
)

// randomShards returns n shards with seeded hashes and sizes in [1, maxBytes].
func randomShards(rng *rand.Rand, n int, maxBytes int64) []shard.ShardRef {
	out := make([]shard.ShardRef, n)
	for i := range out {
		out[i] = shard.ShardRef{Hash: fmt.Sprintf("%016x%016x%016x%016x", rng.Uint64(), rng.Uint64(), rng.Uint64(), rng.Uint64()), Bytes: 1 + rng.Int64N(maxBytes)}
	}
	return out
}

func totalBytes(shards []shard.ShardRef) int64 {
	var n int64
	for _, s := range shards {
		n += s.Bytes
	}
	return n
}

// nodesWith returns nodes n0, n1, ... with the given capacities.
func nodesWith(caps ...int64) []shard.NodeCap {
	out := make([]shard.NodeCap, len(caps))
	for i, c := range caps {
		out[i] = shard.NodeCap{ID: fmt.Sprint("n", i), CapacityBytes: c}
	}
	return out
}

// checkPlacement asserts the invariants of any placement: every shard has
// r distinct holders, all of them known nodes, and no node holds more
// bytes than its capacity.
func checkPlacement(t *testing.T, pl shard.Placement, shards []shard.ShardRef, nodes []shard.NodeCap, r int) {
	t.Helper()
	capacity := map[string]int64{}
	for _, n := range nodes {
		capacity[n.ID] = n.CapacityBytes
	}
	used := map[string]int64{}
	if len(pl) != len(shards) {
		t.Errorf("%d shards placed, want %d", len(pl), len(shards))
	}
	for _, s := range shards {
		h := pl[s.Hash]
		if len(h) != r {
			t.Errorf("shard %s: %d holders %v, want %d", s.Hash[:8], len(h), h, r)
		}
		seen := map[string]bool{}
		for _, id := range h {
			if seen[id] {
				t.Errorf("shard %s: holder %s twice", s.Hash[:8], id)
			}
			if _, ok := capacity[id]; !ok {
				t.Errorf("shard %s: unknown holder %s", s.Hash[:8], id)
			}
			seen[id] = true
			used[id] += s.Bytes
		}
	}
	for id, u := range used {
		if u > capacity[id] {
			t.Errorf("node %s holds %d bytes, capacity %d", id, u, capacity[id])
		}
	}
}

// TestPlaceProperties: seeded random cases, tight and ample: r distinct
// holders, capacity respected, the same result for the same input in any
// order.
func TestPlaceProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 1))
	placed, refused := 0, 0
	for i := range 300 {
		shards := randomShards(rng, 1+rng.IntN(60), 1000)
		nodes := make([]shard.NodeCap, 1+rng.IntN(8))
		r := 1 + rng.IntN(3)
		total := totalBytes(shards)
		for j := range nodes {
			// Capacities from a tenth to twice a node's fair share of r copies.
			fair := total * int64(r) / int64(len(nodes))
			nodes[j] = shard.NodeCap{ID: fmt.Sprint("node-", j), CapacityBytes: fair/10 + rng.Int64N(2*fair+1)}
		}
		pl, err := shard.Place(shards, nodes, r)
		if err != nil {
			if !errors.Is(err, shard.ErrCapacity) {
				t.Fatalf("case %d: %v", i, err)
			}
			refused++
			continue
		}
		placed++
		checkPlacement(t, pl, shards, nodes, min(r, len(nodes)))

		again, _ := shard.Place(shards, nodes, r)
		rs, rn := slices.Clone(shards), slices.Clone(nodes)
		rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		rng.Shuffle(len(rn), func(i, j int) { rn[i], rn[j] = rn[j], rn[i] })
		shuffled, err := shard.Place(rs, rn, r)
		if err != nil || !maps.EqualFunc(pl, again, slices.Equal) || !maps.EqualFunc(pl, shuffled, slices.Equal) {
			t.Fatalf("case %d: not deterministic (%v)", i, err)
		}
	}
	t.Logf("%d cases placed, %d refused for capacity", placed, refused)
	if placed < 100 || refused < 10 {
		t.Errorf("%d placed, %d refused: the cases do not cover both", placed, refused)
	}
}

// TestPlaceMinimalMovement: with capacity to spare, removing a node moves
// only the shards it held (each loses that node and gains one other; its
// other holders stay), and adding a node moves only the shards it gains.
func TestPlaceMinimalMovement(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 1))
	for trial := range 20 {
		shards := randomShards(rng, 500, 1<<20)
		ample := 2 * totalBytes(shards)
		var nodes []shard.NodeCap
		for j := range 3 + rng.IntN(8) {
			nodes = append(nodes, shard.NodeCap{ID: fmt.Sprint("node-", j), CapacityBytes: ample * (1 + rng.Int64N(3))})
		}
		r := 2
		before, err := shard.Place(shards, nodes, r)
		if err != nil {
			t.Fatal(err)
		}
		// Remove one node.
		gone := nodes[rng.IntN(len(nodes))].ID
		after, err := shard.Place(shards, slices.DeleteFunc(slices.Clone(nodes), func(n shard.NodeCap) bool { return n.ID == gone }), r)
		if err != nil {
			t.Fatal(err)
		}
		moved := 0
		for h, old := range before {
			now := after[h]
			if !slices.Contains(old, gone) {
				if !slices.Equal(old, now) {
					t.Fatalf("trial %d: shard %s moved from %v to %v, though %s did not hold it", trial, h[:8], old, now, gone)
				}
				continue
			}
			moved++
			if kept := slices.DeleteFunc(slices.Clone(old), func(id string) bool { return id == gone }); !isSubset(kept, now) {
				t.Fatalf("trial %d: shard %s lost holders %v → %v, beyond %s", trial, h[:8], old, now, gone)
			}
		}
		if moved == 0 {
			t.Errorf("trial %d: the removed node held nothing", trial)
		}
		// Add one node.
		added := shard.NodeCap{ID: "new", CapacityBytes: ample}
		grown, err := shard.Place(shards, append(slices.Clone(nodes), added), r)
		if err != nil {
			t.Fatal(err)
		}
		gained := 0
		for h, old := range before {
			now := grown[h]
			if !slices.Contains(now, "new") {
				if !slices.Equal(old, now) {
					t.Fatalf("trial %d: shard %s moved from %v to %v without the new node", trial, h[:8], old, now)
				}
				continue
			}
			gained++
			if diff := len(old) - countCommon(old, now); diff != 1 {
				t.Fatalf("trial %d: shard %s: %v → %v, %d holders replaced, want 1", trial, h[:8], old, now, diff)
			}
		}
		// The new node takes about its share: r·capacity/Σcapacity.
		var sum int64
		for _, n := range nodes {
			sum += n.CapacityBytes
		}
		share := float64(r) * float64(ample) / float64(sum+ample) * float64(len(shards))
		if g := float64(gained); g < 0.6*share || g > 1.4*share {
			t.Errorf("trial %d: the new node gained %d shards, expected about %.0f", trial, gained, share)
		}
	}
}

func isSubset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func countCommon(a, b []string) int {
	n := 0
	for _, x := range a {
		if slices.Contains(b, x) {
			n++
		}
	}
	return n
}

// TestPlaceBalance: equal nodes get about equal numbers of shards; a node
// with twice the capacity gets about twice as many.
func TestPlaceBalance(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 1))
	shards := randomShards(rng, 4000, 1)
	count := func(pl shard.Placement) map[string]int {
		c := map[string]int{}
		for _, h := range pl {
			for _, id := range h {
				c[id]++
			}
		}
		return c
	}
	equal := nodesWith(1<<40, 1<<40, 1<<40, 1<<40, 1<<40, 1<<40, 1<<40, 1<<40)
	pl, err := shard.Place(shards, equal, 2)
	if err != nil {
		t.Fatal(err)
	}
	for id, n := range count(pl) {
		if mean := 2 * 4000 / 8; n < mean*85/100 || n > mean*115/100 {
			t.Errorf("equal nodes: %s holds %d shards, mean %d", id, n, mean)
		}
	}
	mixed := nodesWith(1<<40, 1<<40, 1<<40, 1<<40, 1<<40, 2<<40, 2<<40, 2<<40, 2<<40, 2<<40)
	pl, err = shard.Place(shards, mixed, 2)
	if err != nil {
		t.Fatal(err)
	}
	c := count(pl)
	light, heavy := 0, 0
	for i := range 5 {
		light += c[fmt.Sprint("n", i)]
		heavy += c[fmt.Sprint("n", i+5)]
	}
	if ratio := float64(heavy) / float64(light); ratio < 1.7 || ratio > 2.3 {
		t.Errorf("nodes of twice the capacity hold %.2f times the shards, want about 2 (%v)", ratio, c)
	}
}

// TestPlaceCapacity: capacity binds but suffices, or does not suffice, or
// no node can take a shard; r is capped at the number of nodes.
func TestPlaceCapacity(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 1))
	shards := randomShards(rng, 200, 1000)
	total := totalBytes(shards)

	// Tight: 25% spare over 2 copies, spread by capacity.
	nodes := nodesWith(total*2*125/100/6, total*2*125/100/6, total*2*125/100/3, total*2*125/100/3)
	pl, err := shard.Place(shards, nodes, 2)
	if err != nil {
		t.Fatalf("tight but sufficient capacity: %v", err)
	}
	checkPlacement(t, pl, shards, nodes, 2)

	// Not enough in total: a clear error with the figures.
	_, err = shard.Place(shards, nodesWith(total/2, total/2, total/2), 2)
	if !errors.Is(err, shard.ErrCapacity) || !strings.Contains(err.Error(), fmt.Sprint(2*total)) {
		t.Errorf("too little capacity: %v, want ErrCapacity with %d bytes needed", err, 2*total)
	}
	// Enough in total, but one node has it all: two copies cannot be on
	// distinct nodes.
	_, err = shard.Place(shards, nodesWith(3*total, 10), 2)
	if !errors.Is(err, shard.ErrCapacity) || !strings.Contains(err.Error(), "copies needed") {
		t.Errorf("lopsided capacity: %v, want ErrCapacity naming a shard", err)
	}
	// r is capped by the nodes that have capacity; zero-capacity nodes hold nothing.
	nodes = nodesWith(total, 0)
	pl, err = shard.Place(shards, nodes, 3)
	if err != nil {
		t.Fatal(err)
	}
	checkPlacement(t, pl, shards, nodes, 1)
	// Bad arguments.
	for name, args := range map[string]struct {
		shards []shard.ShardRef
		nodes  []shard.NodeCap
		r      int
	}{
		"r 0":             {shards, nodesWith(total), 0},
		"duplicate node":  {shards, []shard.NodeCap{{ID: "a", CapacityBytes: 1}, {ID: "a", CapacityBytes: 1}}, 1},
		"duplicate shard": {append(slices.Clone(shards), shards[0]), nodesWith(total), 1},
		"no nodes":        {shards, nil, 1},
	} {
		if _, err := shard.Place(args.shards, args.nodes, args.r); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestPlaceLocal: a local dataset stays on its owner.
func TestPlaceLocal(t *testing.T) {
	shards := randomShards(rand.New(rand.NewPCG(14, 1)), 10, 100)
	pl, err := shard.PlaceLocal(shards, "owner")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range shards {
		if !slices.Equal(pl[s.Hash], []string{"owner"}) {
			t.Errorf("shard %s on %v", s.Hash[:8], pl[s.Hash])
		}
	}
	if _, err := shard.PlaceLocal(shards, ""); err == nil {
		t.Error("no owner: no error")
	}
}
