package node

import (
	"fmt"
	"net"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
	"github.com/braidml/braid/transport/tlstcp"
)

// The node's transports: QUIC for Raft and control messages, and TLS over
// TCP on the same port number for the bulk streams (Config.BulkTransport).

// The values of Config.BulkTransport.
const (
	BulkTLSTCP = "tls-tcp"
	BulkQUIC   = "quic"
)

// BulkProtocols are the protocols Config.BulkTransport carries.
var BulkProtocols = []transport.Protocol{transport.ProtoRing, transport.ProtoShard, transport.ProtoBlob}

// startTransport starts the node's transports with its certificate: QUIC,
// and TLS over TCP on the same port for the bulk protocols unless
// Config.BulkTransport says "quic".
func (n *Node) startTransport() (transport.Transport, error) {
	creds, err := pki.NewReloader(n.cfg.TLSDir, n.cfg.Name)
	if err != nil {
		return nil, err
	}
	n.certs.creds = creds
	var advertise string
	if n.cfg.Advertise != "" {
		_, port, _ := net.SplitHostPort(n.cfg.QUICAddr)
		advertise = net.JoinHostPort(n.cfg.Advertise, port)
	}
	qc := quic.DefaultConfig()
	qc.ListenAddr, qc.AdvertiseAddr, qc.Creds, qc.Logger = n.cfg.QUICAddr, advertise, creds, n.log
	main, err := quic.New(qc)
	if gso, why := quic.SegmentationOffload(); err == nil && !gso {
		n.log.Info("quic: sending without UDP segmentation offload (GSO), at a higher CPU cost per byte", "why", why)
	}
	if err != nil || n.cfg.BulkTransport == BulkQUIC {
		return main, err
	}
	// The TCP port is the UDP port QUIC bound (it may have picked it).
	host, _, _ := net.SplitHostPort(n.cfg.QUICAddr)
	_, port, _ := net.SplitHostPort(main.Addr())
	tc := tlstcp.DefaultConfig()
	tc.ListenAddr, tc.AdvertiseAddr, tc.Creds, tc.Logger = net.JoinHostPort(host, port), main.Addr(), creds, n.log
	bulk, err := tlstcp.New(tc)
	if err != nil {
		main.Close()
		return nil, fmt.Errorf("node: the bulk transport (TLS over TCP on the QUIC port %s; --bulk-transport quic to do without): %w", port, err)
	}
	return transport.Route(main, bulk, BulkProtocols...)
}
