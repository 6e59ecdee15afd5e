package tlstcp

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/pki/pkitest"
	"github.com/braidml/braid/transport/transporttest"
)

// cluster is a CA that issues node credentials (pkitest).
type cluster = pkitest.CA

func newCluster(t *testing.T) *cluster { return pkitest.NewCA(t) }

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
			return start(t, c.Creds(string(id)))
		})
	})
}
