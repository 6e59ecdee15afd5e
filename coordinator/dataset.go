package coordinator

import (
	"fmt"
	"maps"
	"slices"
)

// Datasets in the replicated state. The coordinator records what a dataset
// is (its shards, by content hash) and where its shards live (the
// placement); it does not compute placements (the leader's node does, with a
// pure function, and commits the result) and never sees shard bytes.

// Bounds on datasets.
const (
	// MaxDatasets bounds the datasets the FSM holds (deleted ones no
	// longer count).
	MaxDatasets = 256
	// MaxDatasetShards bounds the shards of one dataset.
	MaxDatasetShards = 4096
	// MaxReplicas bounds a dataset's replication factor.
	MaxReplicas = 16
)

// Dataset is a registered dataset.
type Dataset struct {
	// ID is the dataset's content hash (64 lowercase hex digits), Name
	// what users call it; both are unique among datasets.
	ID   string `json:"id"`
	Name string `json:"name"`
	// Manifest is the content hash of its manifest.json, which is fetched
	// like a shard.
	Manifest string `json:"manifest"`
	// Source is the member that registered it and held every shard then.
	Source string `json:"source"`
	// Local, when set, is the only member that may hold the dataset (a
	// federated unit's data): its shards are never sent to a peer.
	Local bool `json:"local,omitempty"`
	// Replicas is the replication factor r.
	Replicas int            `json:"replicas"`
	Shards   []DatasetShard `json:"shards"`
	// Placement maps each shard hash to the members that should hold it.
	// Empty until the leader first places the dataset.
	Placement map[string][]string `json:"placement,omitempty"`
	// PlacementVersion counts placements; PlaceDataset must name the
	// next one, so that two leaders' placements cannot interleave.
	PlacementVersion uint64 `json:"placement_version"`
}

// DatasetShard is one shard of a dataset.
type DatasetShard struct {
	Hash      string `json:"hash"`
	Bytes     int64  `json:"bytes"`
	Split     string `json:"split"` // "train" or "heldout"
	Sequences int    `json:"sequences"`
}

// Clone returns a deep copy of d.
func (d Dataset) Clone() Dataset {
	d.Shards = slices.Clone(d.Shards)
	if d.Placement != nil {
		p := make(map[string][]string, len(d.Placement))
		for h, holders := range d.Placement {
			p[h] = slices.Clone(holders)
		}
		d.Placement = p
	}
	return d
}

// Dataset returns the dataset whose ID or Name is key.
func (s State) Dataset(key string) (Dataset, bool) {
	for _, d := range s.Datasets {
		if d.ID == key || d.Name == key {
			return d, true
		}
	}
	return Dataset{}, false
}

// RegisterDataset adds a dataset (without a placement). Registering the
// same ID again with the same content is a no-op; a different dataset
// under a name in use is refused.
type RegisterDataset struct {
	Dataset Dataset `json:"dataset"`
}

// PlaceDataset sets the placement of dataset ID; Version must be the
// dataset's PlacementVersion + 1.
type PlaceDataset struct {
	ID        string              `json:"id"`
	Version   uint64              `json:"version"`
	Placement map[string][]string `json:"placement"`
}

// DeleteDataset removes a dataset; removing an absent one is not an error,
// removing one a running job trains on is (ErrInUse).
type DeleteDataset struct {
	ID string `json:"id"`
}

func (RegisterDataset) Type() CommandType { return TypeRegisterDataset }
func (PlaceDataset) Type() CommandType    { return TypePlaceDataset }
func (DeleteDataset) Type() CommandType   { return TypeDeleteDataset }

func validHash(h string) error {
	if len(h) != 64 {
		return fmt.Errorf("hash %q: want 64 hex digits", truncate(h, 70))
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("hash %q: want lowercase hex digits", truncate(h, 70))
		}
	}
	return nil
}

func validPlacement(p map[string][]string, shards map[string]bool, replicas int) error {
	for h, holders := range p {
		if !shards[h] {
			return fmt.Errorf("placement names shard %s, which the dataset does not have", truncate(h, 70))
		}
		if len(holders) == 0 || len(holders) > MaxReplicas {
			return fmt.Errorf("shard %s: %d holders, want 1..%d", h[:12], len(holders), MaxReplicas)
		}
		seen := map[string]bool{}
		for _, m := range holders {
			if err := validName(m); err != nil {
				return fmt.Errorf("shard %s: %v", h[:12], err)
			}
			if seen[m] {
				return fmt.Errorf("shard %s: holder %q listed twice", h[:12], m)
			}
			seen[m] = true
		}
	}
	return nil
}

func (d Dataset) validate() error {
	if err := validHash(d.ID); err != nil {
		return fmt.Errorf("id: %v", err)
	}
	if err := validName(d.Name); err != nil {
		return fmt.Errorf("dataset %s: name: %v", d.ID[:12], err)
	}
	if err := validHash(d.Manifest); err != nil {
		return fmt.Errorf("dataset %s: manifest: %v", d.Name, err)
	}
	if err := validName(d.Source); err != nil {
		return fmt.Errorf("dataset %s: source: %v", d.Name, err)
	}
	if d.Replicas < 1 || d.Replicas > MaxReplicas {
		return fmt.Errorf("dataset %s: replicas %d, want 1..%d", d.Name, d.Replicas, MaxReplicas)
	}
	if len(d.Shards) == 0 || len(d.Shards) > MaxDatasetShards {
		return fmt.Errorf("dataset %s: %d shards, want 1..%d", d.Name, len(d.Shards), MaxDatasetShards)
	}
	hashes := make(map[string]bool, len(d.Shards))
	for i, s := range d.Shards {
		if err := validHash(s.Hash); err != nil {
			return fmt.Errorf("dataset %s: shard %d: %v", d.Name, i, err)
		}
		if hashes[s.Hash] {
			return fmt.Errorf("dataset %s: shard %s listed twice", d.Name, s.Hash[:12])
		}
		hashes[s.Hash] = true
		if s.Bytes < 0 || s.Sequences < 0 || (s.Split != "train" && s.Split != "heldout") {
			return fmt.Errorf("dataset %s: shard %s: bytes %d, sequences %d, split %q", d.Name, s.Hash[:12], s.Bytes, s.Sequences, truncate(s.Split, 20))
		}
	}
	if err := validPlacement(d.Placement, hashes, d.Replicas); err != nil {
		return fmt.Errorf("dataset %s: %v", d.Name, err)
	}
	if d.Local {
		for h, holders := range d.Placement {
			if len(holders) != 1 || holders[0] != d.Source {
				return fmt.Errorf("dataset %s is local to %s, but shard %s is placed on %v", d.Name, d.Source, h[:12], holders)
			}
		}
	}
	return nil
}

func (c RegisterDataset) validate() error {
	if c.Dataset.Placement != nil || c.Dataset.PlacementVersion != 0 {
		return fmt.Errorf("%w: %s: a new dataset has no placement yet", ErrInvalidCommand, c.Type())
	}
	if err := c.Dataset.validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c PlaceDataset) validate() error {
	if err := validHash(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	if c.Version == 0 {
		return fmt.Errorf("%w: %s %s: version 0", ErrInvalidCommand, c.Type(), c.ID[:12])
	}
	all := make(map[string]bool, len(c.Placement))
	for h := range c.Placement {
		if err := validHash(h); err != nil {
			return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.ID[:12], err)
		}
		all[h] = true
	}
	if err := validPlacement(c.Placement, all, MaxReplicas); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrInvalidCommand, c.Type(), c.ID[:12], err)
	}
	return nil
}

func (c DeleteDataset) validate() error {
	if err := validHash(c.ID); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	return nil
}

func (c RegisterDataset) apply(s *fsmState) error {
	d := c.Dataset
	if old, ok := s.datasets[d.ID]; ok {
		if old.Name == d.Name && old.Manifest == d.Manifest && old.Local == d.Local && old.Source == d.Source {
			return nil // registered again: nothing changes
		}
		return fmt.Errorf("%w: %s: dataset %s is registered as %q from %s", ErrConflict, c.Type(), d.ID[:12], old.Name, old.Source)
	}
	for _, o := range s.datasets {
		if o.Name == d.Name {
			return fmt.Errorf("%w: %s: the name %q is taken by dataset %s", ErrConflict, c.Type(), d.Name, o.ID[:12])
		}
	}
	if len(s.datasets) >= MaxDatasets {
		return fmt.Errorf("%w: %s: %d datasets, limit %d; delete unused ones (braid data rm)", ErrLimit, c.Type(), len(s.datasets), MaxDatasets)
	}
	s.datasets[d.ID] = d.Clone()
	return nil
}

func (c PlaceDataset) apply(s *fsmState) error {
	d, ok := s.datasets[c.ID]
	if !ok {
		return fmt.Errorf("%w: %s: dataset %s", ErrUnknownDataset, c.Type(), c.ID[:12])
	}
	if c.Version != d.PlacementVersion+1 {
		return fmt.Errorf("%w: %s %s: version %d, current %d", ErrStaleEpoch, c.Type(), d.Name, c.Version, d.PlacementVersion)
	}
	d = d.Clone()
	d.Placement = make(map[string][]string, len(c.Placement))
	for h, holders := range c.Placement {
		d.Placement[h] = slices.Clone(holders)
	}
	d.PlacementVersion = c.Version
	if err := d.validate(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalidCommand, c.Type(), err)
	}
	s.datasets[c.ID] = d
	return nil
}

func (c DeleteDataset) apply(s *fsmState) error {
	if err := checkDatasetUnused(s, c.Type(), c.ID); err != nil {
		return err
	}
	delete(s.datasets, c.ID)
	return nil
}

// exportDatasets returns the datasets sorted by name, deep-copied.
func (s *fsmState) exportDatasets() []Dataset {
	out := make([]Dataset, 0, len(s.datasets))
	for _, id := range slices.Sorted(maps.Keys(s.datasets)) {
		out = append(out, s.datasets[id].Clone())
	}
	slices.SortFunc(out, func(a, b Dataset) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}
