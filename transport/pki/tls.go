package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/braidml/braid/transport"
)

// ServerConfig is the TLS configuration for accepting connections: TLS 1.3
// only, ALPN "braid/1" required, and a client certificate that chains to the cluster
// CA, is valid now, allows client authentication and names a node is
// required. Session tickets are off, so every handshake verifies
// certificates afresh. The caller may modify the returned Config.
func (c *NodeCreds) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		MaxVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{c.Cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              c.Pool,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			_, err := c.PeerIdentity(cs)
			return err
		},
	}
}

// ClientConfig is the TLS configuration for dialing node expect: TLS 1.3
// only, ALPN "braid/1" required, this node's certificate presented, and the server's
// certificate checked against the cluster CA (valid now, server
// authentication allowed) with its CommonName equal to expect. A server
// with another name fails the handshake with an error wrapping
// transport.ErrWrongPeer. An empty expect accepts any node of the cluster.
//
// Host-name verification is replaced by this PeerID check, since peers are
// addressed by name: InsecureSkipVerify is set only to switch off Go's
// host-name check, and VerifyConnection does the chain verification in its
// place. Do not clear VerifyConnection.
func (c *NodeCreds) ClientConfig(expect transport.PeerID) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{c.Cert},
		RootCAs:            c.Pool,
		NextProtos:         []string{ALPN},
		InsecureSkipVerify: true, // replaced by VerifyConnection, see above
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			id, err := c.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, time.Now())
			if err != nil {
				return err
			}
			if expect != "" && id != expect {
				return fmt.Errorf("%w: dialled %q, certificate is for %q", transport.ErrWrongPeer, expect, id)
			}
			return nil
		},
	}
}

// checkALPN refuses a connection that did not negotiate braid's ALPN (a
// peer that offered none at all would otherwise get through on plain TLS).
func checkALPN(cs tls.ConnectionState) error {
	if cs.NegotiatedProtocol != ALPN {
		return fmt.Errorf("pki: peer negotiated application protocol %q, want %q", cs.NegotiatedProtocol, ALPN)
	}
	return nil
}

// PeerIdentity returns the PeerID of the other end of a connection set up
// with ServerConfig or ClientConfig: the CommonName of the verified leaf
// certificate. Where the TLS stack recorded no verified chain (the client
// side, whose verification is custom) the presented chain is verified here
// again, so the result never rests on an unverified certificate.
func (c *NodeCreds) PeerIdentity(cs tls.ConnectionState) (transport.PeerID, error) {
	if len(cs.VerifiedChains) > 0 && len(cs.VerifiedChains[0]) > 0 {
		leaf := cs.VerifiedChains[0][0]
		if !ValidName(leaf.Subject.CommonName) {
			return "", fmt.Errorf("%w: common name %q is not a node name", ErrBadCert, leaf.Subject.CommonName)
		}
		return transport.PeerID(leaf.Subject.CommonName), nil
	}
	return c.verifyChain(cs.PeerCertificates, x509.ExtKeyUsageAny, time.Now())
}

// verifyChain verifies a presented chain (leaf first) against the cluster
// CA and returns the leaf's node name.
func (c *NodeCreds) verifyChain(chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (transport.PeerID, error) {
	return verifyChain(c.Pool, chain, usage, now)
}

// verifyChain verifies a presented chain (leaf first) against pool and
// returns the leaf's node name.
func verifyChain(pool *x509.CertPool, chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) (transport.PeerID, error) {
	if len(chain) == 0 {
		return "", errNoCert
	}
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return "", fmt.Errorf("pki: certificate of %q: %w", leaf.Subject.CommonName, err)
	}
	if !ValidName(leaf.Subject.CommonName) {
		return "", fmt.Errorf("%w: common name %q is not a node name", ErrBadCert, leaf.Subject.CommonName)
	}
	return transport.PeerID(leaf.Subject.CommonName), nil
}
