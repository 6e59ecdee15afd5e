package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node/blobstore"
)

// Collection: what the store holds that nothing names (SECURITY.md).
//
// Objects enter a node's store from uploads (blob_api.go), from peers
// (placed shards, replicated checkpoints, the base model of a job), and
// from this node's own work (checkpoints, and the gradients and snapshots
// a lagging ring member asks for). The replicated state names what must
// stay: every dataset's manifest and shards, every job's base model and
// the objects of the checkpoints it still records (the newest
// JobSpec.KeepCheckpoints per job, coordinator.MaxCheckpoints by default, of
// every job, finished or not; a removed job's or dataset's none). The
// rest — uploads never registered, the objects of deleted datasets,
// checkpoints the state no longer records, catch-up gradients and
// snapshots — is collected once it is older than Config.GCGrace:
// CollectGarbage deletes it, every Config.GCInterval, and only when the
// coordinator vouches that this node's state is current
// (coordinator.CurrentState), so that a node cut off or catching up does
// not delete what the cluster named meanwhile.
//
// The grace period covers what is named a moment after it is stored: an
// upload is registered after the rest of its dataset is uploaded, a
// checkpoint recorded after it is written and copied. Whoever is about to
// name an object already held makes it young again (blobstore.Store.Touch):
// an upload answered without its body, AddDataset and SubmitJob for the
// objects they name, a fetch that finds the object present.
//
// Uploads wait for registration as unnamed bytes; Config.MaxPendingUploadBytes
// caps them (with the uploads under way), so the grace period cannot be
// used to fill the disk.

// Defaults of the collector and of the upload backlog.
const (
	// DefaultGCGrace is Config.GCGrace when it is zero.
	DefaultGCGrace = time.Hour
	// MinGCGrace is the shortest Config.GCGrace accepted.
	MinGCGrace = time.Minute
	// DefaultGCInterval is Config.GCInterval when it is zero.
	DefaultGCInterval = 10 * time.Minute
	// DefaultPendingUploads is Config.MaxPendingUploadBytes, when it is
	// zero, in units of the upload limit (Config.MaxUploadBytes).
	DefaultPendingUploads = 4
)

// ErrUploadBacklog: an upload refused because the bytes that nothing names
// yet would pass Config.MaxPendingUploadBytes.
var ErrUploadBacklog = errors.New("node: too many uploaded bytes await registration")

// gcState is the collector's and the upload backlog's.
type gcState struct {
	// mu guards uploading.
	mu        sync.Mutex
	uploading int64 // bytes reserved by uploads under way

	deletedObjects atomic.Uint64 // braid_gc_deleted_objects_total
	deletedBytes   atomic.Uint64 // braid_gc_deleted_bytes_total
	unreferenced   atomic.Int64  // braid_store_unreferenced_bytes, as last measured
}

func (n *Node) now() time.Time {
	if n.deps.Now != nil {
		return n.deps.Now()
	}
	return time.Now()
}

func (n *Node) gcGrace() time.Duration {
	if n.cfg.GCGrace > 0 {
		return n.cfg.GCGrace
	}
	return DefaultGCGrace
}

func (n *Node) maxPendingUpload() int64 {
	if n.cfg.MaxPendingUploadBytes > 0 {
		return n.cfg.MaxPendingUploadBytes
	}
	return DefaultPendingUploads * n.maxUpload()
}

// referencedObjects is every object st names.
func referencedObjects(st coordinator.State) map[string]bool {
	refs := map[string]bool{}
	for _, d := range st.Datasets {
		refs[d.Manifest] = true
		for _, s := range d.Shards {
			refs[s.Hash] = true
		}
	}
	for _, j := range st.Jobs {
		refs[j.Spec.Base.Config] = true
		refs[j.Spec.Base.Weights] = true
		for _, h := range j.Spec.Base.Tokenizer {
			refs[h] = true
		}
		for _, c := range j.Checkpoints {
			refs[c.Config], refs[c.Weights], refs[c.State] = true, true, true
			for _, h := range c.Tokenizer {
				refs[h] = true
			}
		}
	}
	return refs
}

// CollectGarbage deletes the objects of this node's store that the
// replicated state does not name and that were stored (or last touched)
// more than Config.GCGrace ago, and abandoned partial downloads of such
// objects (see Collection above and blobstore.Store.Collect). It deletes
// nothing, and returns an error wrapping coordinator.ErrStateNotCurrent,
// when this node cannot vouch that its state is current. It logs and
// counts what it deleted. Safe for concurrent use; the node also runs it
// every Config.GCInterval.
func (n *Node) CollectGarbage(ctx context.Context) (blobstore.Collected, error) {
	st, err := n.coord.CurrentState(ctx)
	if err != nil {
		return blobstore.Collected{}, fmt.Errorf("node: collect: nothing deleted: %w", err)
	}
	refs := referencedObjects(st)
	grace := n.gcGrace()
	c, err := n.store.Collect(func(h string) bool { return refs[h] }, n.now().Add(-grace))
	n.gc.deletedObjects.Add(uint64(c.Objects + c.Partials))
	n.gc.deletedBytes.Add(uint64(c.Bytes + c.PartialBytes))
	if err == nil {
		n.gc.unreferenced.Store(c.Kept)
	}
	if c.Objects+c.Partials > 0 {
		n.log.Info("deleted objects that nothing names", "objects", c.Objects, "bytes", c.Bytes,
			"partial_downloads", c.Partials, "partial_bytes", c.PartialBytes, "older_than", grace, "unnamed_bytes_left", c.Kept)
	}
	if err != nil {
		return c, fmt.Errorf("node: collect: %w", err)
	}
	return c, nil
}

// gcLoop runs CollectGarbage (and ReapMembers) every Config.GCInterval
// until the node stops.
func (n *Node) gcLoop() {
	defer n.wg.Done()
	ctx, cancel := n.stopContext()
	defer cancel()
	every := n.cfg.GCInterval
	if every == 0 {
		every = DefaultGCInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n.ReapMembers(ctx)
		if _, err := n.CollectGarbage(ctx); errors.Is(err, coordinator.ErrStateNotCurrent) {
			n.log.Info("collection skipped until the state is current", "err", err)
		} else if err != nil && ctx.Err() == nil {
			n.log.Warn("collection failed", "err", err)
		}
	}
}

// unreferencedBytes sums the objects of the store that st does not name.
func (n *Node) unreferencedBytes(refs map[string]bool) (int64, error) {
	objs, err := n.store.List()
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, o := range objs {
		if !refs[o.Hash] {
			sum += o.Size
		}
	}
	return sum, nil
}

// reserveUpload admits an upload of size bytes as object h, or refuses it
// with ErrUploadBacklog when the bytes nothing names (held, and reserved by
// uploads under way) would pass Config.MaxPendingUploadBytes. An object the
// state names (a replica restored by hand) is not counted. The caller calls
// release when the upload has ended, stored or not.
func (n *Node) reserveUpload(h string, size int64) (release func(), err error) {
	refs := referencedObjects(n.coord.State())
	if refs[h] {
		return func() {}, nil
	}
	held, err := n.unreferencedBytes(refs)
	if err != nil {
		return nil, err
	}
	n.gc.unreferenced.Store(held)
	limit := n.maxPendingUpload()
	n.gc.mu.Lock()
	defer n.gc.mu.Unlock()
	if held+n.gc.uploading+size > limit {
		return nil, fmt.Errorf("%w: this node holds %d bytes of objects that no dataset or job names (uploads not yet registered, and what awaits collection --gc-grace %v after it was stored) and uploads under way reserve %d more; %d more bytes would pass the cap of %d (braid node --max-pending-upload): register what was uploaded first (POST /v1/datasets, POST /v1/jobs), or raise the cap",
			ErrUploadBacklog, held, n.gcGrace(), n.gc.uploading, size, limit)
	}
	n.gc.uploading += size
	return func() {
		n.gc.mu.Lock()
		n.gc.uploading -= size
		n.gc.mu.Unlock()
	}, nil
}

// touch makes the objects hs young again, as about to be named (see
// Collection above); ones not held are skipped.
func (n *Node) touch(hs ...string) {
	now := n.now()
	for _, h := range hs {
		if err := n.store.Touch(h, now); err != nil && !errors.Is(err, blobstore.ErrNotFound) {
			n.log.Warn("cannot touch object", "object", h, "err", err)
		}
	}
}

func (n *Node) registerGCMetrics() {
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "braid", Name: "gc_deleted_objects_total",
		Help: "Objects (and abandoned partial downloads) the collector deleted because nothing named them for longer than --gc-grace."},
		func() float64 { return float64(n.gc.deletedObjects.Load()) }))
	n.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "braid", Name: "gc_deleted_bytes_total",
		Help: "Bytes of what the collector deleted."},
		func() float64 { return float64(n.gc.deletedBytes.Load()) }))
	n.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "braid", Name: "store_unreferenced_bytes",
		Help: "Bytes of objects in the store that nothing in the replicated state names, as last measured (by the collector or an upload)."},
		func() float64 { return float64(n.gc.unreferenced.Load()) }))
}
