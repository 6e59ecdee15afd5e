package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/internal/safefile"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/transport"
)

// The dataset plane of a node (ARCHITECTURE.md, "Place"):
//
//   - AddDataset registers a prepared dataset whose manifest and shards a
//     client uploaded into this node's content-addressed store (blob_api.go;
//     the node never reads a client's path), after verifying them there
//     shard by shard; a local (federated) dataset's objects are marked
//     private first, so the store's server refuses them to every peer.
//   - The leader's placeLoop computes every dataset's placement with
//     shard.Place (rendezvous hashing over the alive members, capacity-aware,
//     r replicas) and commits it whenever it changes: a holder's death moves
//     its shards to other members, which is re-replication.
//   - Every node's fetchLoop pulls the shards placed on it (and the
//     manifest) over transport.ProtoShard from the members that should hold
//     them and from the dataset's source, resuming partial transfers and
//     verifying every hash (blobstore.Store.Fetch).

// DatasetOptions are AddDataset's choices.
type DatasetOptions struct {
	// Name overrides the manifest's name.
	Name string
	// Replicas is the replication factor r (default 2).
	Replicas int
	// Local keeps every shard on this node only (federated data).
	Local bool
}

// DefaultReplicas is the replication factor when none is given.
const DefaultReplicas = 2

// AddDataset registers the dataset whose manifest is object manifest of
// this node's store, with every shard it lists also in the store (a client
// uploads them first: node/push, PUT /v1/blobs). It reads the manifest and
// each shard once from the store and verifies them (the manifest decodes
// and its id matches its content; each shard is present, as long as the
// manifest says, hashes to its name, has a good header and payload that
// agree with the manifest), then registers the dataset with the
// coordinator (through the leader). Errors name the object and what is
// wrong. It returns the registered dataset.
func (n *Node) AddDataset(ctx context.Context, manifest string, opt DatasetOptions) (coordinator.Dataset, error) {
	if opt.Replicas == 0 {
		opt.Replicas = DefaultReplicas
	}
	if opt.Replicas < 1 || opt.Replicas > coordinator.MaxReplicas {
		return coordinator.Dataset{}, fmt.Errorf("node: replicas %d, want 1..%d", opt.Replicas, coordinator.MaxReplicas)
	}
	if !blobstore.ValidHash(manifest) {
		return coordinator.Dataset{}, fmt.Errorf("node: dataset manifest %.80q: %w", manifest, blobstore.ErrBadHash)
	}
	b, err := n.readObject(manifest, shard.MaxManifestBytes)
	if err != nil {
		return coordinator.Dataset{}, fmt.Errorf("node: dataset manifest %s: %w", manifest[:12], err)
	}
	m, err := shard.DecodeManifest(b)
	if err != nil {
		return coordinator.Dataset{}, fmt.Errorf("node: dataset manifest %s: %w", manifest[:12], err)
	}
	name := m.Name
	if opt.Name != "" {
		name = opt.Name
	}
	d := coordinator.Dataset{ID: m.ID, Name: name, Source: n.cfg.Name, Local: opt.Local, Replicas: opt.Replicas, Manifest: manifest}
	if opt.Local {
		d.Replicas = 1
	}
	var hashes []string
	seen := map[string]bool{}
	for _, e := range m.Shards {
		if seen[e.Hash] {
			continue
		}
		seen[e.Hash] = true
		d.Shards = append(d.Shards, coordinator.DatasetShard{Hash: e.Hash, Bytes: e.Bytes, Split: string(e.Split), Sequences: int(e.Sequences)})
		hashes = append(hashes, e.Hash)
	}
	// About to be named: not collected while they are verified and the
	// registration commits (gc.go).
	n.touch(append(hashes, manifest)...)
	// Private before anything else: a local dataset's bytes are never
	// servable, not even for a moment (an upload with private=1 marked
	// them before they were stored; this covers one without).
	if opt.Local {
		for _, h := range append(hashes, manifest) {
			if err := n.store.MarkPrivate(h); err != nil {
				return d, err
			}
		}
	}
	var problems []error
	seen = map[string]bool{}
	for i, e := range m.Shards {
		if seen[e.Hash] {
			continue
		}
		seen[e.Hash] = true
		if err := n.verifyShardObject(m, e); err != nil {
			problems = append(problems, fmt.Errorf("shard %d (%s): %w", i, e.Hash[:12], err))
		}
		if ctx.Err() != nil {
			return d, ctx.Err()
		}
	}
	if len(problems) > 0 {
		return d, fmt.Errorf("node: dataset %s (manifest %s) has %d bad or missing shards: %w", name, manifest[:12], len(problems), errors.Join(problems...))
	}
	if err := n.applyAnywhere(ctx, coordinator.RegisterDataset{Dataset: d}); err != nil {
		return d, err
	}
	n.kickData()
	// Return once this node's own state has it (a follower applies the
	// leader's commit a moment later), so that what the caller does next
	// here — submit a job on it — sees it.
	if err := n.awaitState(ctx, func(st coordinator.State) bool { _, ok := st.Dataset(d.ID); return ok }); err != nil {
		return d, fmt.Errorf("node: dataset %s registered, but not yet applied here: %w", d.Name, err)
	}
	return d, nil
}

// verifyShardObject reads the shard of entry e from the store, once, and
// checks it against the manifest.
func (n *Node) verifyShardObject(m *shard.Manifest, e shard.ShardEntry) error {
	if !n.store.Has(e.Hash) {
		return fmt.Errorf("not on this node: upload it first (`braid data push` does; PUT /v1/blobs/%s)", e.Hash)
	}
	b, err := n.readObject(e.Hash, e.Bytes)
	if err != nil {
		return err
	}
	return shard.VerifyEntry(m, e, b, "object "+e.Hash[:12])
}

// readObject reads object h of the store, once, refusing one of more than
// max bytes, and checks that its bytes still hash to h (a disk that
// flipped bits since it was stored).
func (n *Node) readObject(h string, max int64) ([]byte, error) {
	f, size, err := n.store.Open(h)
	if err != nil {
		if errors.Is(err, blobstore.ErrNotFound) {
			return nil, fmt.Errorf("not on this node: upload it first (PUT /v1/blobs/%s)", h)
		}
		return nil, err
	}
	defer f.Close()
	if size > max {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", size, max)
	}
	b, err := safefile.ReadAll(f, size, max)
	if err != nil {
		return nil, err
	}
	if got := blobstore.Sum(b); got != h {
		return nil, fmt.Errorf("%w: the stored bytes hash to %s", blobstore.ErrHashMismatch, got[:12])
	}
	return b, nil
}

// objectHash is the hex SHA-256 of object h's bytes as stored now, read
// in a stream.
func (n *Node) objectHash(h string) (string, error) {
	f, _, err := n.store.Open(h)
	if err != nil {
		return "", err
	}
	defer f.Close()
	hh := sha256.New()
	if _, err := io.Copy(hh, f); err != nil {
		return "", fmt.Errorf("node: hashing object %s: %w", h[:12], err)
	}
	return hex.EncodeToString(hh.Sum(nil)), nil
}

// Store is this node's content-addressed store (dataset shards, manifests).
func (n *Node) Store() *blobstore.Store { return n.store }

// ShardServer is the server of this node's store (its counters say what
// was sent to peers).
func (n *Node) ShardServer() *blobstore.Server { return n.shardSrv }

// kickData wakes the placement and fetch loops at once.
func (n *Node) kickData() { kick(n.dataKick) }

// dataLoop runs placement (on the leader) and fetching (everywhere) after
// every change of the replicated state or of membership, and at least every
// dataPoll.
func (n *Node) dataLoop() {
	defer n.wg.Done()
	ctx, cancel := n.stopContext()
	defer cancel()
	nextScrub := time.Now().Add(time.Minute) // not while the node starts
	for {
		if time.Now().After(nextScrub) {
			n.Scrub(ctx)
			nextScrub = time.Now().Add(scrubEvery)
		}
		_, changed := n.coord.Watch()
		if n.coord.IsLeader() {
			n.place(ctx)
		}
		n.fetchPlaced(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-n.dataKick:
		case <-time.After(dataPoll):
		}
	}
}

// dataPoll bounds how long a membership change goes unnoticed by the data
// loop (membership changes reach it through the coordinator state, which
// the leader updates from gossip, but a fetch that failed is retried on
// this clock).
const dataPoll = time.Second

// placementNodes are the members shards may be placed on: the alive
// members of the replicated state, with their capacity.
func placementNodes(st coordinator.State) []shard.NodeCap {
	var nodes []shard.NodeCap
	for _, m := range st.Members {
		if m.State != coordinator.MemberAlive {
			continue
		}
		c, _ := strconv.ParseInt(m.Meta["disk"], 10, 64)
		if c <= 0 {
			c = 1 << 40 // unknown: as if 1 TiB
		}
		nodes = append(nodes, shard.NodeCap{ID: m.Name, CapacityBytes: c})
	}
	return nodes
}

// place commits a new placement for every dataset whose placement differs
// from what shard.Place gives for the alive members now.
func (n *Node) place(ctx context.Context) {
	st := n.coord.State()
	nodes := placementNodes(st)
	for _, d := range st.Datasets {
		refs := make([]shard.ShardRef, len(d.Shards))
		for i, s := range d.Shards {
			refs[i] = shard.ShardRef{Hash: s.Hash, Bytes: s.Bytes}
		}
		var p shard.Placement
		var err error
		if d.Local {
			p, err = shard.PlaceLocal(refs, d.Source)
		} else {
			p, err = shard.Place(refs, nodes, min(d.Replicas, len(nodes)))
		}
		if err != nil {
			n.log.Warn("cannot place dataset", "dataset", d.Name, "err", err)
			continue
		}
		if samePlacement(d.Placement, p) {
			continue
		}
		cmd := coordinator.PlaceDataset{ID: d.ID, Version: d.PlacementVersion + 1, Placement: p}
		if err := n.coord.Apply(ctx, cmd); err != nil {
			n.log.Warn("placement not committed", "dataset", d.Name, "err", err)
			continue
		}
		n.log.Info("dataset placed", "dataset", d.Name, "version", cmd.Version, "members", len(nodes))
	}
}

func samePlacement(a map[string][]string, b shard.Placement) bool {
	if len(a) != len(b) {
		return false
	}
	for h, holders := range b {
		if !slices.Equal(a[h], holders) {
			return false
		}
	}
	return true
}

// fetchPlaced pulls every object placed on this node that it lacks.
func (n *Node) fetchPlaced(ctx context.Context) {
	st := n.coord.State()
	addrs := map[string]string{}
	for _, m := range n.ml.Members() {
		if m.State == "alive" && m.Name != n.cfg.Name {
			addrs[m.Name] = m.Meta.QUICAddr
		}
	}
	for _, d := range st.Datasets {
		var mine []coordinator.DatasetShard
		for _, s := range d.Shards {
			if slices.Contains(d.Placement[s.Hash], n.cfg.Name) && !n.store.Has(s.Hash) {
				mine = append(mine, s)
			}
		}
		if len(mine) == 0 && (len(d.Placement) == 0 || n.store.Has(d.Manifest) || !holdsAny(d, n.cfg.Name)) {
			continue
		}
		// sources lists who may have h: its holders and the dataset's source.
		sources := func(h string) []blobstore.Source {
			var out []blobstore.Source
			for _, name := range append(slices.Clone(d.Placement[h]), d.Source) {
				if a, ok := addrs[name]; ok && !slices.ContainsFunc(out, func(s blobstore.Source) bool { return string(s.Peer) == name }) {
					out = append(out, blobstore.Source{Peer: transport.PeerID(name), Addr: a})
				}
			}
			return out
		}
		if !n.store.Has(d.Manifest) {
			var srcs []blobstore.Source
			for _, s := range d.Shards {
				srcs = append(srcs, sources(s.Hash)...)
			}
			srcs = slices.CompactFunc(srcs, func(a, b blobstore.Source) bool { return a.Peer == b.Peer })
			if err := n.store.Fetch(ctx, n.tr, transport.ProtoShard, srcs, d.Manifest, blobstore.SizeUnknown, blobstore.FetchOptions{Logger: n.log}); err != nil {
				n.noteFetch(d.Name, err)
				continue
			}
		}
		for _, s := range mine {
			if ctx.Err() != nil {
				return
			}
			err := n.store.Fetch(ctx, n.tr, transport.ProtoShard, sources(s.Hash), s.Hash, s.Bytes, blobstore.FetchOptions{Logger: n.log})
			n.noteFetch(d.Name, err)
			if err == nil {
				n.log.Info("shard fetched", "dataset", d.Name, "shard", s.Hash[:12], "bytes", s.Bytes)
			}
		}
	}
}

func holdsAny(d coordinator.Dataset, name string) bool {
	for _, holders := range d.Placement {
		if slices.Contains(holders, name) {
			return true
		}
	}
	return false
}

// noteFetch records the last fetch error per dataset (nil clears it), for
// DatasetStatus.
func (n *Node) noteFetch(dataset string, err error) {
	n.dataMu.Lock()
	defer n.dataMu.Unlock()
	if err == nil {
		delete(n.fetchErr, dataset)
		return
	}
	n.fetchErr[dataset] = err.Error()
	n.log.Warn("shard fetch failed; retrying", "dataset", dataset, "err", err)
}

// DatasetStatus is one dataset as `braid data status` shows it.
type DatasetStatus struct {
	coordinator.Dataset
	// Held lists, for every shard, the live holders that have it.
	Held map[string][]string `json:"held"`
	// Healthy counts the shards with Replicas live copies (1 for a local
	// dataset); UnderReplicated the others.
	Healthy         int `json:"healthy"`
	UnderReplicated int `json:"under_replicated"`
	// Errors are members' last fetch errors for this dataset.
	Errors map[string]string `json:"errors,omitempty"`
}

// Datasets lists the registered datasets.
func (n *Node) Datasets() []coordinator.Dataset { return n.coord.State().Datasets }

// DatasetStatus asks every alive member what it holds of dataset key (name
// or ID) and reports replica health.
func (n *Node) DatasetStatus(ctx context.Context, key string) (DatasetStatus, error) {
	d, ok := n.coord.State().Dataset(key)
	if !ok {
		return DatasetStatus{}, fmt.Errorf("node: no dataset %q (see `braid data ls`)", key)
	}
	ds := DatasetStatus{Dataset: d, Held: map[string][]string{}, Errors: map[string]string{}}
	hashes := make([]string, len(d.Shards))
	for i, s := range d.Shards {
		hashes[i] = s.Hash
	}
	type answer struct {
		name string
		inv  inventoryReply
		err  error
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		all []answer
	)
	for _, m := range n.ml.Members() {
		if m.State != "alive" {
			continue
		}
		wg.Go(func() {
			var a answer
			a.name = m.Name
			if m.Name == n.cfg.Name {
				a.inv = n.inventory(inventoryRequest{Dataset: d.Name, Hashes: hashes})
			} else {
				resp, err := n.callControl(ctx, m.Name, m.Meta.QUICAddr, controlRequest{Op: opInventory, Inventory: &inventoryRequest{Dataset: d.Name, Hashes: hashes}})
				a.err = err
				if resp.Inventory != nil {
					a.inv = *resp.Inventory
				}
			}
			mu.Lock()
			all = append(all, a)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b answer) int {
		if a.name < b.name {
			return -1
		}
		return 1
	})
	for _, a := range all {
		if a.err != nil {
			ds.Errors[a.name] = a.err.Error()
			continue
		}
		if a.inv.FetchError != "" {
			ds.Errors[a.name] = a.inv.FetchError
		}
		for _, h := range a.inv.Held {
			ds.Held[h] = append(ds.Held[h], a.name)
		}
	}
	want := d.Replicas
	if d.Local {
		want = 1
	}
	want = min(want, len(all))
	for _, h := range hashes {
		if len(ds.Held[h]) >= want {
			ds.Healthy++
		} else {
			ds.UnderReplicated++
		}
	}
	if len(ds.Errors) == 0 {
		ds.Errors = nil
	}
	return ds, nil
}

// inventoryRequest asks a member which of Hashes it holds.
type inventoryRequest struct {
	Dataset string   `json:"dataset"`
	Hashes  []string `json:"hashes"`
}

// inventoryReply lists the hashes held and the member's last fetch error
// for the dataset.
type inventoryReply struct {
	Held       []string `json:"held"`
	FetchError string   `json:"fetch_error,omitempty"`
}

func (n *Node) inventory(req inventoryRequest) inventoryReply {
	var r inventoryReply
	for _, h := range req.Hashes {
		if n.store.Has(h) {
			r.Held = append(r.Held, h)
		}
	}
	n.dataMu.Lock()
	r.FetchError = n.fetchErr[req.Dataset]
	n.dataMu.Unlock()
	return r
}

// Transport is the node's transport (tests, tools).
func (n *Node) Transport() transport.Transport { return n.tr }

// AddDatasetRequest is the body of POST /v1/datasets: a prepared dataset
// whose manifest and shards the client uploaded (PUT /v1/blobs), named by
// the manifest's hash. Nothing in it names a path: the node reads only its
// own store.
type AddDatasetRequest struct {
	Manifest string `json:"manifest"`
	Name     string `json:"name,omitempty"`
	Replicas int    `json:"replicas,omitempty"`
	Local    bool   `json:"local,omitempty"`
}

// dataRoutes serves the dataset endpoints of the HTTP API:
//
//	GET  /v1/datasets          the registered datasets (JSON array)
//	POST /v1/datasets          register one uploaded (AddDatasetRequest) → the dataset
//	GET  /v1/datasets/{name}   DatasetStatus (name or ID)
func (n *Node) dataRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/datasets", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, n.Datasets())
	})
	mux.HandleFunc("POST /v1/datasets", func(w http.ResponseWriter, r *http.Request) {
		var req AddDatasetRequest
		if err := readJSON(w, r, 64<<10, &req); err != nil || req.Manifest == "" {
			http.Error(w, fmt.Sprintf("braid: dataset request: want {\"manifest\": SHA256 of an uploaded manifest.json, \"name\", \"replicas\", \"local\"}: %v", err), http.StatusBadRequest)
			return
		}
		d, err := n.AddDataset(r.Context(), req.Manifest, DatasetOptions{Name: req.Name, Replicas: req.Replicas, Local: req.Local})
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusUnprocessableEntity)
			return
		}
		writeJSON(w, http.StatusOK, d)
	})
	mux.HandleFunc("GET /v1/datasets/{name}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		st, err := n.DatasetStatus(ctx, r.PathValue("name"))
		if err != nil {
			http.Error(w, "braid: "+err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, st)
	})
}
