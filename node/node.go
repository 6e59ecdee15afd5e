package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// Config is a node's configuration (`braid node` flags).
type Config struct {
	Name string // this node's name; must match its certificate's
	// DataDir holds Raft state (DataDir/raft), the object store
	// (DataDir/store) and jobs' working files (DataDir/jobs), all private
	// to the node's user: New narrows it to 0700 and its files to 0600.
	DataDir string
	// GossipAddr is host:port for memberlist (TCP and UDP).
	GossipAddr string
	// QUICAddr is host:port of the node's one QUIC (UDP) socket; with
	// BulkTransport "tls-tcp", the node also listens on TCP at the same
	// port.
	QUICAddr string
	// BulkTransport carries the bulk protocols (ring all-reduce, shards,
	// blobs): "tls-tcp" (the default: TLS 1.3 over TCP, a connection per
	// stream, transport/tlstcp) or "quic" (everything on QUIC). Raft and
	// control messages always travel on QUIC. Every member must use the
	// same: a stream is dialled on the transport the dialler chose.
	BulkTransport string
	// Advertise is the host peers reach this node at, when the bind
	// addresses are wildcards or behind NAT.
	Advertise string
	// Join lists gossip addresses of any members.
	Join []string
	// BootstrapExpect is how many servers must be seen before the first
	// Raft cluster forms (only when none has Raft state). 0: never
	// bootstrap; join an existing cluster.
	BootstrapExpect int
	// TLSDir holds ca.pem, NAME.pem, NAME-key.pem and gossip.key as
	// written by `braid ca`.
	TLSDir string
	// HTTPAddr is the API's host:port; empty disables it.
	HTTPAddr string
	// HTTPTLS makes the API serve HTTPS with the node's certificate from
	// TLSDir (apitls.go).
	HTTPTLS bool
	// HTTPToken is the bearer token the API requires; empty: the one in
	// DataDir/api-token (APITokenFile), generated at the first start.
	HTTPToken string
	// Profile is memberlist's timing: "lan" (default), "local" or "wan".
	Profile     string
	Coordinator coordinator.Config
	Build       string // version reported in metadata
	// Device is the device kind this node computes on: "cpu" (also when
	// empty) or "cuda" (coordinator.DeviceCPU, DeviceCUDA). Jobs run on
	// the members of their own device kind only.
	Device string
	// GPU is the GPU a cuda node computes on (`braid node --device`
	// chooses it among cuda.Devices()); nil on a CPU node.
	GPU *cuda.DeviceInfo
	// MaxUploadBytes is the largest object a client may upload through
	// the API (PUT /v1/blobs); 0: DefaultMaxUploadBytes.
	MaxUploadBytes int64
	// MaxPendingUploadBytes caps the bytes of objects in the store that
	// nothing in the replicated state names (uploads not yet registered,
	// and what awaits collection): an upload that would pass it is
	// refused (507). 0: DefaultPendingUploads × the upload limit. It must
	// be at least MaxUploadBytes, and at least the largest dataset or model
	// a client pushes here before registering it.
	MaxPendingUploadBytes int64
	// GCGrace is how old an object that nothing names must be before the
	// collector deletes it (gc.go): long enough for a client to upload all
	// of a dataset and register it. 0: DefaultGCGrace; at least MinGCGrace.
	GCGrace time.Duration
	// GCInterval is how often the collector runs; 0: DefaultGCInterval.
	GCInterval time.Duration
	// ReapAfter is how long a member that failed or left stays listed
	// before it is forgotten (lifecycle.go); 0: DefaultReapAfter.
	ReapAfter time.Duration
}

// DefaultConfig is a LAN node with the usual ports.
func DefaultConfig() Config {
	return Config{
		GossipAddr: "0.0.0.0:7946", QUICAddr: "0.0.0.0:7947", HTTPAddr: "127.0.0.1:7950",
		Profile: "lan", Coordinator: coordinator.DefaultConfig(), Build: "dev", BulkTransport: BulkTLSTCP,
	}
}

// Validate checks the fields and names the one at fault.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("node: --name is required")
	case c.DataDir == "":
		return errors.New("node: --data-dir is required")
	case c.BootstrapExpect < 0:
		return fmt.Errorf("node: --bootstrap-expect %d, want ≥ 0", c.BootstrapExpect)
	case c.MaxUploadBytes < 0:
		return fmt.Errorf("node: MaxUploadBytes %d, want ≥ 0 (0: %d)", c.MaxUploadBytes, int64(DefaultMaxUploadBytes))
	case c.HTTPTLS && c.HTTPAddr == "":
		return ErrAPITLSWithoutAPI
	case c.MaxPendingUploadBytes < 0:
		return fmt.Errorf("node: --max-pending-upload %d, want ≥ 0 (0: %d × --max-upload)", c.MaxPendingUploadBytes, DefaultPendingUploads)
	case c.MaxPendingUploadBytes > 0 && c.MaxPendingUploadBytes < c.maxUpload():
		return fmt.Errorf("node: --max-pending-upload %d is less than --max-upload %d: no object of the largest size could be uploaded", c.MaxPendingUploadBytes, c.maxUpload())
	case c.GCGrace != 0 && c.GCGrace < MinGCGrace:
		return fmt.Errorf("node: --gc-grace %v, want 0 (%v) or at least %v", c.GCGrace, DefaultGCGrace, MinGCGrace)
	case c.ReapAfter < 0:
		return fmt.Errorf("node: --reap-after %v, want ≥ 0 (0: %v)", c.ReapAfter, DefaultReapAfter)
	case c.GCInterval < 0:
		return fmt.Errorf("node: GCInterval %v, want ≥ 0 (0: %v)", c.GCInterval, DefaultGCInterval)
	case c.BulkTransport != "" && c.BulkTransport != BulkTLSTCP && c.BulkTransport != BulkQUIC:
		return fmt.Errorf("node: --bulk-transport %q, want %s or %s", c.BulkTransport, BulkTLSTCP, BulkQUIC)
	}
	if _, _, err := net.SplitHostPort(c.GossipAddr); err != nil {
		return fmt.Errorf("node: --gossip-addr %q: %w", c.GossipAddr, err)
	}
	if err := c.validDevice(); err != nil {
		return err
	}
	return c.Coordinator.Validate()
}

// Deps replace a node's production collaborators; the zero value builds
// them from Config (QUIC with the certificates in TLSDir, UDP/TCP gossip
// encrypted with TLSDir/gossip.key). node/nodetest sets them to run whole
// clusters in one process.
type Deps struct {
	Transport       transport.Transport  // nil: QUIC from Config
	GossipTransport memberlist.Transport // nil: memberlist's UDP/TCP
	GossipKey       []byte               // nil: TLSDir/gossip.key
	InsecureGossip  bool                 // tests on an in-memory network only
	GossipTune      func(*memberlist.Config)
	Logger          *slog.Logger
	Registry        *prometheus.Registry // nil: a new one
	// PerturbWeights, when set, is asked after every training step (with
	// the steps applied) and, when it returns true, nudges this node's
	// weights: a fault injected by tests to check that diverged replicas
	// stop the job.
	PerturbWeights func(step int) bool
	// DeviceLabel, when set ("cpu" or "cuda"), is the device kind this
	// node advertises and jobs place it by, in place of Config.Device; it
	// does not change where the node computes (Config.Device). Tests label
	// CPU nodes "cuda" to check placement on machines without a GPU.
	DeviceLabel string
	// DeviceFault, when set, is asked before every training step (with the
	// steps applied) and, when it returns true, makes the step fail as a
	// GPU fault does (cuda.ErrDeviceFault): a fault injected by tests.
	DeviceFault func(step int) bool
	// Now, when set, is the clock the collector (gc.go) ages objects by
	// and dates the objects it touches with; nil: time.Now. Tests move it
	// forward instead of waiting out Config.GCGrace.
	Now func() time.Time
}

// Node is one running braid server.
type Node struct {
	cfg   Config
	log   *slog.Logger
	tr    transport.Transport
	ownTr bool
	coord *coordinator.Coordinator
	ml    *Membership
	// health is the control plane's timing (health.go); its parts lock
	// themselves.
	health controlHealth
	// failures and failoverPhases time the epoch changes of running jobs
	// (failover.go).
	failures       memberFailures
	reaper         memberReaper // departed members' timers (lifecycle.go)
	failoverPhases *prometheus.HistogramVec
	api            *API
	// apiTokenFile holds the API's token ("" when configured).
	apiTokenFile string
	reg          *prometheus.Registry
	// certs is the certificate lifecycle: reload, revocation, expiry
	// (certs.go).
	certs certLifecycle

	bootMu       sync.Mutex
	bootstrapped bool
	admitted     map[string]bool // members that authenticated over the transport

	ringMu sync.Mutex // one ring at a time listens on ProtoRing: a job's or a benchmark's

	// Jobs (job.go, job_runner.go).
	jobKick chan struct{}
	jobMu   sync.Mutex
	runner  *jobRunner
	// finished keeps the last progress of jobs this node's worker ran, so
	// that their final figures are still served once they end.
	finished       map[string]JobProgress
	finishedLosses map[string][]float64
	histories      historyStore // of the jobs whose runners ended here (history.go)
	deps           Deps

	wireBytes atomic.Int64 // sent by this node's job rings (braid_allreduce_bytes_sent_total)
	// controlRefused counts control requests refused for their sender
	// (braid_control_refused_total; control_auth.go).
	controlRefused atomic.Uint64

	// The collector and the upload backlog (gc.go).
	gc gcState

	// merged are the merged models computed for exports (provenance.go).
	merged mergedExports
	// provBuilds counts the provenance records being built, at most
	// maxProvenanceBuilds (provenance.go).
	provBuilds buildSlots

	// The dataset plane (data.go).
	store    *blobstore.Store
	shardSrv *blobstore.Server
	dataKick chan struct{}
	dataMu   sync.Mutex
	fetchErr map[string]string // dataset name → last fetch error here

	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

// New starts a node: transport, coordinator (opening its Raft state), gossip
// and the HTTP API. It returns once all are listening; joining the cluster
// and electing a leader go on in the background.
func New(cfg Config, deps Deps) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := validDeviceLabel(deps.DeviceLabel); err != nil {
		return nil, err
	}
	logger := deps.Logger
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	logger = logger.With("node", cfg.Name)
	n := &Node{cfg: cfg, log: logger, tr: deps.Transport, reg: deps.Registry, stop: make(chan struct{}),
		admitted: map[string]bool{cfg.Name: true}, dataKick: make(chan struct{}, 1), fetchErr: map[string]string{},
		jobKick: make(chan struct{}, 1), deps: deps, finished: map[string]JobProgress{}, finishedLosses: map[string][]float64{}}
	if n.reg == nil {
		n.reg = prometheus.NewRegistry()
	}
	var err error
	if n.tr == nil {
		if n.tr, err = n.startTransport(); err != nil {
			return nil, err
		}
		n.ownTr = true
	}
	fail := func(err error) (*Node, error) {
		n.closeAll()
		return nil, err
	}
	if n.tr.Self() != transport.PeerID(cfg.Name) {
		return fail(fmt.Errorf("node: --name %q but the certificate names %q", cfg.Name, n.tr.Self()))
	}
	n.coord, err = coordinator.New(cfg.Coordinator, coordinator.Deps{Transport: n.tr, DataDir: filepath.Join(cfg.DataDir, "raft"), Logger: logger})
	if err != nil {
		return fail(err)
	}
	hasState, err := n.coord.HasState()
	if err != nil {
		return fail(err)
	}
	// Peers admit this node by dialing its control protocol as soon as they
	// hear of it: listen before gossip announces us.
	ctl, err := n.tr.Listen(transport.ProtoControl)
	if err != nil {
		return fail(err)
	}
	n.wg.Add(1)
	go n.serveControl(ctl)
	if n.store, err = blobstore.OpenWithClock(filepath.Join(cfg.DataDir, "store"), deps.Now); err != nil {
		return fail(err)
	}
	// Once Raft and the store have made their directories, and before
	// anything is served: see dataDirPerm.
	if err := makePrivateDir(cfg.DataDir); err != nil {
		return fail(err)
	}
	scfg := blobstore.DefaultServerConfig()
	scfg.Logger = logger
	if n.shardSrv, err = blobstore.NewServer(n.store, scfg); err != nil {
		return fail(err)
	}
	shardLn, err := n.tr.Listen(transport.ProtoShard)
	if err != nil {
		return fail(err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := n.stopContext()
		defer cancel()
		n.shardSrv.Serve(ctx, shardLn)
	}()
	key := deps.GossipKey
	var extraKeys [][]byte
	if key == nil && !deps.InsecureGossip {
		keys, err := pki.LoadGossipKeys(cfg.TLSDir)
		if err != nil {
			return fail(err)
		}
		key, extraKeys = keys[0], keys[1:]
	}
	host, port, _ := net.SplitHostPort(cfg.GossipAddr)
	p, _ := strconv.Atoi(port)
	mcfg := MembershipConfig{Name: cfg.Name, BindAddr: host, BindPort: p, AdvertiseAddr: cfg.Advertise, AdvertisePort: p,
		Seeds: cfg.Join, SecretKey: key, ExtraKeys: extraKeys, Insecure: deps.InsecureGossip, Profile: cfg.Profile,
		Transport: deps.GossipTransport, Tune: deps.GossipTune,
		OnProbe: n.health.probeRTT.observe, OnGossipEvent: n.gossipEvent}
	if cfg.Advertise == "" {
		mcfg.AdvertisePort = 0
	}
	n.ml, err = NewMembership(mcfg, n.meta(hasState), logger)
	if err != nil {
		return fail(err)
	}
	n.registerMetrics()
	n.registerCertMetrics()
	if cfg.HTTPAddr != "" {
		token, tokenFile, created, err := cfg.apiToken()
		if err != nil {
			return fail(err)
		}
		tlsConf, certHosts, err := cfg.apiTLS(n.certs.creds)
		if err != nil {
			return fail(err)
		}
		if n.api, err = StartAPI(APIConfig{Addr: cfg.HTTPAddr, Token: token, TLS: tlsConf,
			Hosts: append([]string{cfg.Name, cfg.Advertise}, certHosts...),
			Bench: n.BenchAllreduce, Routes: n.routes, Ready: n.Ready}, n.Status, n.reg); err != nil {
			return fail(err)
		}
		warnCleartextAPI(logger, n.api.Addr(), tlsConf != nil)
		n.apiTokenFile = tokenFile
		if tokenFile != "" {
			logger.Info("the HTTP API requires the token in this file", "file", tokenFile, "created", created)
		}
	}
	n.wg.Add(1)
	go n.run(hasState)
	n.wg.Add(1)
	go n.dataLoop()
	n.wg.Add(1)
	go n.jobLoop()
	n.wg.Add(1)
	go n.watchCerts()
	n.wg.Add(1)
	go n.gcLoop()
	n.wg.Add(1)
	go n.healthLoop()
	logger.Info("node started", "quic", n.tr.Addr(), "gossip", n.ml.LocalAddr(), "raft_state", hasState, "bootstrap_expect", cfg.BootstrapExpect)
	return n, nil
}

// meta is what this node gossips about itself.
func (n *Node) meta(raftState bool) Meta {
	m := Meta{Version: MetaVersion, QUICAddr: n.tr.Addr(), Cores: runtime.NumCPU(), GPUs: nvidiaGPUs(),
		MemoryBytes: physicalMemory(), DiskBytes: freeDisk(n.cfg.DataDir), Build: n.cfg.Build, RaftState: raftState,
		Device: n.placementDevice(), Cert: n.certSerial()}
	if kind, gpu := n.computeDevice(); kind == coordinator.DeviceCUDA && m.Device == coordinator.DeviceCUDA {
		m.GPU = gpuMeta(*gpu)
	}
	return m
}

// run turns membership events into coordinator reports and bootstraps the
// cluster when bootstrap-expect is met.
func (n *Node) run(hasState bool) {
	defer n.wg.Done()
	n.bootstrapped = hasState
	for {
		select {
		case <-n.stop:
			return
		case ev, ok := <-n.ml.Events():
			if !ok {
				return
			}
			switch ev.Kind {
			case MemberJoined, MemberUpdated:
				if ev.Kind == MemberJoined {
					n.failures.note("alive", ev.Name, time.Now())
					n.forgetConnections(ev.Name)
				}
				n.wg.Add(1)
				go n.admit(ev.Member)
			case MemberLeft, MemberFailed:
				n.bootMu.Lock()
				delete(n.admitted, ev.Name)
				n.bootMu.Unlock()
				n.failures.note("failed", ev.Name, time.Now())
				if ev.Kind == MemberLeft {
					n.coord.MemberLeft(ev.Name)
				} else {
					n.coord.MemberFailed(ev.Name)
				}
			}
			n.log.Info("member "+ev.Kind.String(), "member", ev.Name, "quic", ev.Meta.QUICAddr)
			n.maybeBootstrap()
		}
	}
}

// metaMap is m as the coordinator records it; the device is what jobs are
// placed by (coordinator.MetaDevice).
func metaMap(m Meta) map[string]string {
	out := map[string]string{"cores": strconv.Itoa(m.Cores), "gpus": strconv.Itoa(m.GPUs),
		"memory": strconv.FormatInt(m.MemoryBytes, 10), "disk": strconv.FormatInt(m.DiskBytes, 10), "build": m.Build,
		coordinator.MetaDevice: m.DeviceKind()}
	if m.GPU != (GPUMeta{}) {
		out["gpu"] = m.GPU.Name
	}
	return out
}

// Name is this node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Coordinator gives access to the replicated state (tests, job control).
func (n *Node) Coordinator() *coordinator.Coordinator { return n.coord }

// Membership gives access to the gossip view.
func (n *Node) Membership() *Membership { return n.ml }

// APIAddr is the HTTP API's address ("" when disabled).
func (n *Node) APIAddr() string {
	if n.api == nil {
		return ""
	}
	return n.api.Addr()
}

// APITokenFile is the file that holds the API's token: DataDir/api-token,
// or "" when the token was configured (Config.HTTPToken) or the API is off.
func (n *Node) APITokenFile() string { return n.apiTokenFile }

// Status is this node's view of the cluster, as GET /v1/status serves it.
func (n *Node) Status() Status {
	cs := n.coord.Status()
	st := n.coord.State()
	s := Status{Self: n.cfg.Name, Leader: cs.Leader, Term: cs.Term,
		Epoch: EpochStatus{ID: st.Epoch.ID, Members: append([]string{}, st.Epoch.Members...)},
		Ring:  append([]string{}, st.Epoch.Members...)}
	h := n.Health()
	s.Health = &h
	voter := map[string]bool{}
	for _, sv := range cs.Servers {
		voter[sv.Name] = sv.Voter
	}
	for _, m := range n.ml.Members() {
		ms := MemberStatus{Name: m.Name, State: m.State, Addr: m.GossipAddr, QUICAddr: m.Meta.QUICAddr,
			Cores: m.Meta.Cores, GPUs: m.Meta.GPUs, Memory: m.Meta.MemoryBytes, Version: m.Meta.Build, Voter: voter[m.Name],
			Device: m.Meta.DeviceKind()}
		if m.Meta.GPU != (GPUMeta{}) {
			g := m.Meta.GPU.Info()
			ms.GPU = &g
		}
		s.Members = append(s.Members, ms)
	}
	return s
}

// Shutdown leaves gracefully: the coordinator hands leadership over and
// leaves the Raft configuration, gossip announces the departure, then
// everything closes.
func (n *Node) Shutdown(ctx context.Context) error {
	var errs []error
	n.once.Do(func() {
		// The API stops first, while the node leaves: it takes no new
		// requests, and its clients hold the shutdown up for its grace at
		// most (APILimits.ShutdownGrace), whatever they do.
		apiClosed := make(chan struct{})
		go func() {
			defer close(apiClosed)
			n.closeAPI(ctx)
		}()
		// Leave gossip first, so that the leader hears of it and removes
		// this node; a leader's coordinator then hands leadership over.
		if err := n.ml.Leave(2 * time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := n.coord.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
		<-apiClosed
		n.closeAll()
	})
	return errors.Join(errs...)
}

// leaveAfterFault takes a node whose GPU faulted out of the cluster: its
// context is unusable, so it can compute nothing more, and the jobs go on
// without it as they would after a crash, only sooner (it says goodbye).
func (n *Node) leaveAfterFault(err error) {
	n.log.Error("GPU fault: leaving the cluster; the jobs go on without this node", "err", err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Shutdown(ctx)
}

// Kill stops the node abruptly, as a crash would (no leadership transfer,
// no leave message); for tests.
func (n *Node) Kill() {
	n.once.Do(n.closeAll)
}

func (n *Node) closeAll() {
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	if n.ml != nil {
		n.ml.Shutdown()
	}
	n.wg.Wait()
	if n.coord != nil {
		n.coord.Close() // no leave: Shutdown has done it when it should
	}
	n.closeAPI(context.Background())
	if n.ownTr && n.tr != nil {
		n.tr.Close()
	}
}

// closeAPI stops the HTTP API (if any), within its shutdown grace.
func (n *Node) closeAPI(ctx context.Context) {
	if n.api == nil {
		return
	}
	if err := n.api.Close(ctx); err != nil {
		n.log.Warn("stopping the HTTP API", "err", err)
	}
}

// routes adds the dataset and job endpoints to the HTTP API.
func (n *Node) routes(mux *http.ServeMux) {
	n.blobRoutes(mux)
	n.dataRoutes(mux)
	n.jobRoutes(mux)
	n.historyRoutes(mux)
	n.provenanceRoutes(mux)
	n.certRoutes(mux)
	n.lifecycleRoutes(mux)
}

// stopContext returns a context that ends when the node stops, or when
// cancel is called.
func (n *Node) stopContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// kick wakes the loop that waits on ch, unless a wake-up is pending.
func kick(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// forgetConnections drops the transport's connections to a member that
// joined (again): after a restart, connections to its previous life would
// hold Raft and control dials until their idle timeout.
func (n *Node) forgetConnections(name string) {
	if f, ok := n.tr.(interface{ Forget(transport.PeerID) int }); ok && name != n.cfg.Name {
		if k := f.Forget(transport.PeerID(name)); k > 0 {
			n.log.Info("dropped connections to a member that joined again", "member", name, "connections", k)
		}
	}
}
