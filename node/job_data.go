package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/braidml/braid/shard"
)

// A member's share of each global batch (plain, or apportioned over the
// units of a federated job) and fetching the shards that share needs.

// part is this member's share of global batch step.
func (r *jobRunner) part(step int, members []string, rank int) ([]int64, error) {
	nseq := r.data.NumSequences(shard.Train)
	if nseq == 0 {
		return nil, fmt.Errorf("dataset has no training sequences")
	}
	if r.spec.Federated {
		return r.unitPart(step, members, rank, nseq)
	}
	dataEpoch, k := shard.EpochStep(int64(step), nseq, r.spec.GlobalBatch)
	parts, err := shard.Assign(shard.AssignParams{Seed: r.spec.Seed, DataEpoch: dataEpoch, Step: k,
		GlobalBatch: r.spec.GlobalBatch, Members: members, Placement: r.placement,
		Shards: r.manifest.SplitShards(shard.Train)})
	if err != nil {
		return nil, err
	}
	return parts[rank], nil
}

// unitPart is this member's share of global batch step in a federated
// job: the batch is apportioned over the epoch's members by the training
// sequences each one's local dataset holds, and each member draws its
// share from its own data (shard.Apportion, shard.UnitBatch).
func (r *jobRunner) unitPart(step int, members []string, rank int, mine int64) ([]int64, error) {
	// The shares depend only on the members and their (immutable)
	// datasets: computed once per ring, not every step.
	if key := strings.Join(members, ","); key != r.sharesKey {
		r.shares, r.sharesKey = r.unitShares(members), key
	}
	return shard.UnitBatch(r.spec.Seed, int64(step), r.shares[rank], mine)
}

// unitShares apportions the global batch over members by the training
// sequences of each one's local dataset.
func (r *jobRunner) unitShares(members []string) []int {
	st := r.n.coord.State()
	counts := make([]int64, len(members))
	for i, m := range members {
		for _, id := range r.spec.Datasets {
			d, ok := st.Dataset(id)
			if !ok || !d.Local || d.Source != m {
				continue
			}
			for _, s := range d.Shards {
				if s.Split == string(shard.Train) {
					counts[i] += int64(s.Sequences)
				}
			}
			break
		}
	}
	return shard.Apportion(r.spec.GlobalBatch, counts)
}

// ensureShards makes the shards of part's sequences local (fetched from
// their holders when this node does not hold them) and visible to the
// dataset.
func (r *jobRunner) ensureShards(ctx context.Context, part []int64) error {
	seen := map[string]bool{}
	for _, id := range part {
		entry, _, err := r.data.Locate(shard.Train, id)
		if err != nil {
			return err
		}
		if seen[entry.Hash] {
			continue
		}
		seen[entry.Hash] = true
		if err := r.ensureShard(ctx, entry); err != nil {
			return err
		}
	}
	return nil
}

// ensureHeldout makes the held-out shards local.
func (r *jobRunner) ensureHeldout(ctx context.Context) error {
	for _, entry := range r.manifest.SplitShards(shard.Heldout) {
		if err := r.ensureShard(ctx, entry); err != nil {
			return err
		}
	}
	return nil
}

// ensureShard makes one shard local and visible to the dataset. The
// replicated state is read (a copy of all of it) only when the shard must
// be fetched, not on every step.
func (r *jobRunner) ensureShard(ctx context.Context, entry shard.ShardEntry) error {
	link := filepath.Join(r.data.Dir, entry.Hash+shard.ShardExt)
	if !r.n.store.Has(entry.Hash) {
		// Gone from the store (Scrub deleted a corrupt copy): the old
		// link would keep the bad bytes alive; fetch afresh.
		os.Remove(link)
		d, _ := r.n.coord.State().Dataset(r.datasetID)
		if err := r.n.ensureObject(ctx, entry.Hash, entry.Bytes, append(slices.Clone(d.Placement[entry.Hash]), d.Source)...); err != nil {
			return fmt.Errorf("fetching shard %s: %w", entry.Hash[:12], err)
		}
	}
	return r.n.linkObject(entry.Hash, r.data.Dir, entry.Hash+shard.ShardExt)
}

// fetchPart returns the part of step's global batch that the member of
// rank among members trains, with the shards it reads fetched.
func (r *jobRunner) fetchPart(ctx context.Context, step int, members []string, rank int) ([]int64, error) {
	part, err := r.part(step, members, rank)
	if err != nil {
		return nil, err
	}
	if err := r.ensureShards(ctx, part); err != nil {
		return nil, err
	}
	return part, nil
}
