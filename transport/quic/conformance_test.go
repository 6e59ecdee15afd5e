package quic

import (
	"testing"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/transporttest"
)

// TestConformance runs the transport conformance suite on QUIC endpoints
// on loopback, each case with its own CA.
func TestConformance(t *testing.T) {
	transporttest.Run(t, func(t *testing.T) transporttest.Factory {
		c := newCluster(t)
		return transporttest.FactoryFunc(func(t *testing.T, id transport.PeerID) transport.Transport {
			tr, _ := start(t, c.Creds(string(id)))
			return tr
		})
	})
}
