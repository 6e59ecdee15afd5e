package pki

import (
	"crypto/tls"

	"github.com/braidml/braid/transport"
)

// Credentials are what a transport (transport/quic, transport/tlstcp)
// authenticates with and checks peers against: *NodeCreds or *Reloader.
// The TLS configurations are asked for once (ServerConfig, when the
// transport starts) or per dial (ClientConfig); PeerIdentity is asked after
// every handshake and again when the transport revalidates its
// connections, so credentials that change (a reloaded CA bundle, a revoked
// certificate) apply to connections already up.
type Credentials interface {
	// Self is this node's PeerID.
	Self() transport.PeerID
	// Certificate is the certificate and key presented; transport/quic
	// derives its stateless-reset key from the key it has when it starts.
	Certificate() tls.Certificate
	ServerConfig() *tls.Config
	ClientConfig(expect transport.PeerID) *tls.Config
	PeerIdentity(tls.ConnectionState) (transport.PeerID, error)
}

var (
	_ Credentials = (*NodeCreds)(nil)
	_ Credentials = (*Reloader)(nil)
)
