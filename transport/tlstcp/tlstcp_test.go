package tlstcp

import (
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is a CA directory that issues node credentials.
type cluster struct {
	t   *testing.T
	dir string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	return &cluster{t, dir}
}

// creds issues credentials for name.
func (c *cluster) creds(name string) *pki.NodeCreds {
	c.t.Helper()
	if err := pki.Issue(c.dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
		c.t.Fatal(err)
	}
	cr, err := pki.LoadNode(c.dir, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return cr
}

// start runs a Transport with creds on a free loopback port, closed when
// the test ends.
func start(t *testing.T, creds pki.Credentials) *Transport {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ListenAddr, cfg.Creds = "127.0.0.1:0", creds
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// TestConformance runs the transport conformance suite on TLS-over-TCP
// endpoints on loopback, each case with its own CA.
func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) transporttest.Factory {
		c := newCluster(t)
		return transporttest.FactoryFunc(func(t *testing.T, id transport.PeerID) transport.Transport {
			return start(t, c.creds(string(id)))
		})
	})
}
