package nodetest

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/braidml/braid/transport/pki"
)

// WithTLS runs the cluster's streams over real QUIC on loopback with
// mutual TLS, as `braid node` does: the harness makes a CA (PKIDir), and
// every node gets a directory of its own (TLSDir) with the CA bundle, the
// gossip key and its certificate, and reads its credentials and gossip
// keys from there, so that a test can change one node's files and call
// its Reload, as an operator changes them and sends SIGHUP. Gossip stays
// in memory (MemGossip) but is encrypted with the gossip keys. Partition
// cuts gossip only: the streams have no fault hooks.
func WithTLS() Option {
	return func(c *Cluster) {
		dir := filepath.Join(c.root, "pki")
		if err := pki.InitCA(dir); err != nil {
			c.t.Fatalf("nodetest: CA: %v", err)
		}
		c.tls = &tlsCluster{c: c, ca: dir, dirs: map[string]string{}}
	}
}

// CertValidity is how long the certificates WithTLS issues are valid.
var CertValidity = 24 * time.Hour

// tlsCluster is the CA of a WithTLS cluster and its nodes' directories.
type tlsCluster struct {
	c  *Cluster
	ca string

	mu   sync.Mutex
	dirs map[string]string // node name → its TLS directory
}

// nodeDir returns name's TLS directory, making it (certificate issued,
// files copied from the CA) the first time.
func (tc *tlsCluster) nodeDir(name string) string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if d, ok := tc.dirs[name]; ok {
		return d
	}
	if err := pki.Issue(tc.ca, name, []string{"127.0.0.1"}, CertValidity); err != nil {
		tc.c.t.Fatalf("nodetest: certificate for %s: %v", name, err)
	}
	d := filepath.Join(tc.c.root, "tls-"+name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		tc.c.t.Fatalf("nodetest: %v", err)
	}
	tc.dirs[name] = d
	for _, f := range []string{pki.CAFile, pki.GossipKeyFile, pki.CertFile(name), pki.KeyFile(name)} {
		tc.copy(name, f)
	}
	return d
}

// copy copies file f of the CA's directory into name's TLS directory.
func (tc *tlsCluster) copy(name, f string) {
	b, err := os.ReadFile(filepath.Join(tc.ca, f))
	if err != nil {
		tc.c.t.Fatalf("nodetest: %v", err)
	}
	if err := os.WriteFile(filepath.Join(tc.dirs[name], f), b, 0o600); err != nil {
		tc.c.t.Fatalf("nodetest: %v", err)
	}
}

func (c *Cluster) mustTLS() *tlsCluster {
	c.t.Helper()
	if c.tls == nil {
		c.t.Fatal("nodetest: the cluster runs without TLS (use WithTLS)")
	}
	return c.tls
}

// PKIDir is the directory of a WithTLS cluster's CA, as `braid ca init`
// makes it: tests rotate the CA and gossip keys there (pki.RotateCA, ...)
// and hand the files to nodes with CopyTLSFile.
func (c *Cluster) PKIDir() string { return c.mustTLS().ca }

// TLSDir is name's TLS directory in a WithTLS cluster.
func (c *Cluster) TLSDir(name string) string { return c.mustTLS().nodeDir(name) }

// CopyTLSFile copies the files named (pki.CAFile, pki.GossipKeyFile, ...)
// from the CA's directory to name's TLS directory, as an operator copies
// them to a node before SIGHUP; the node uses them after its Reload.
func (c *Cluster) CopyTLSFile(name string, files ...string) {
	c.t.Helper()
	tc := c.mustTLS()
	tc.nodeDir(name)
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, f := range files {
		tc.copy(name, f)
	}
}

// Reissue issues name a new certificate from the CA's directory (signed
// by its current CA) and copies it and its key to name's TLS directory.
func (c *Cluster) Reissue(name string) {
	c.t.Helper()
	if err := pki.Issue(c.mustTLS().ca, name, []string{"127.0.0.1"}, CertValidity); err != nil {
		c.t.Fatalf("nodetest: certificate for %s: %v", name, err)
	}
	c.CopyTLSFile(name, pki.CertFile(name), pki.KeyFile(name))
}

// Reload makes name's node reload its TLS directory (as SIGHUP does to
// `braid node`) and fails the test if that fails.
func (c *Cluster) Reload(name string) {
	c.t.Helper()
	n := c.Node(name)
	if n == nil {
		c.t.Fatalf("nodetest: %s is not running", name)
	}
	if err := n.Reload(); err != nil {
		c.t.Fatalf("nodetest: reloading %s: %v", name, err)
	}
}
