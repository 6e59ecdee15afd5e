package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/transport"
)

// ErrRevoked is wrapped by the error of a handshake, or of PeerIdentity,
// with a certificate whose serial number has been revoked.
var ErrRevoked = errors.New("pki: certificate revoked")

// Serial is the form braid names a certificate's serial number in: lower
// case hexadecimal without leading zeros (as in `openssl x509 -serial`,
// lower-cased).
func Serial(c *x509.Certificate) string { return SerialText(c.SerialNumber) }

// SerialText is n in the form of Serial.
func SerialText(n *big.Int) string { return strings.ToLower(n.Text(16)) }

// ValidSerial reports whether s is a serial in the form of Serial: 1..40
// hexadecimal digits in lower case (RFC 5280 bounds serials to 20 bytes),
// without a leading zero.
func ValidSerial(s string) bool {
	if len(s) < 1 || len(s) > 40 || s[0] == '0' && s != "0" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Reloader holds a node's credentials that can change while the node runs:
// its certificate and key, the CA bundle it trusts, and the serials of the
// certificates it must refuse. The TLS configurations it makes read the
// current values at every handshake (GetCertificate, GetClientCertificate
// and a verifier over the current CA pool and revocation set), so a Reload
// or SetRevoked applies to every new handshake at once, without a
// restart; connections already up are the transport's business (see
// transport/quic's Transport.Revalidate). All methods are safe for
// concurrent use.
type Reloader struct {
	dir, name string

	creds   atomic.Pointer[NodeCreds]
	revoked atomic.Pointer[map[string]struct{}]

	reloadMu sync.Mutex // one Reload at a time
}

// NewReloader loads node name's credentials from dir (see LoadNode).
func NewReloader(dir, name string) (*Reloader, error) {
	c, err := LoadNode(dir, name)
	if err != nil {
		return nil, err
	}
	r := &Reloader{dir: dir, name: name}
	r.creds.Store(c)
	r.revoked.Store(&map[string]struct{}{})
	return r, nil
}

// Reload reads the certificate, key and CA bundle from the directory again
// and, if they pass LoadNode's checks, uses them for every handshake from
// now on. On error the credentials in use stay as they were. It returns
// the credentials now in use.
func (r *Reloader) Reload() (*NodeCreds, error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	c, err := LoadNode(r.dir, r.name)
	if err != nil {
		return r.creds.Load(), err
	}
	if r.isRevoked(c.Cert.Leaf) {
		return r.creds.Load(), fmt.Errorf("%w: %s's new certificate, serial %s", ErrRevoked, r.name, Serial(c.Cert.Leaf))
	}
	r.creds.Store(c)
	return c, nil
}

// Current returns the credentials in use (immutable; a Reload replaces
// them, it does not change them).
func (r *Reloader) Current() *NodeCreds { return r.creds.Load() }

// Dir is the directory the credentials are read from.
func (r *Reloader) Dir() string { return r.dir }

// Self is the node's PeerID; it never changes (Reload requires the same
// name).
func (r *Reloader) Self() transport.PeerID { return transport.PeerID(r.name) }

// Certificate is the certificate and key in use.
func (r *Reloader) Certificate() tls.Certificate { return r.creds.Load().Cert }

// SetRevoked replaces the set of revoked serials (in the form of Serial;
// others are ignored). Handshakes from now on refuse a peer whose
// certificate has one of them.
func (r *Reloader) SetRevoked(serials []string) {
	m := make(map[string]struct{}, len(serials))
	for _, s := range serials {
		if ValidSerial(s) {
			m[s] = struct{}{}
		}
	}
	r.revoked.Store(&m)
}

// Revoked returns the revoked serials in use, sorted.
func (r *Reloader) Revoked() []string {
	return slices.Sorted(maps.Keys(*r.revoked.Load()))
}

func (r *Reloader) isRevoked(c *x509.Certificate) bool {
	_, ok := (*r.revoked.Load())[Serial(c)]
	return ok
}

// verify checks a presented chain against the current CA bundle and the
// revocation set.
func (r *Reloader) verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (transport.PeerID, error) {
	id, err := verifyChain(r.creds.Load().Pool, chain, usage, time.Now())
	if err != nil {
		return "", err
	}
	if r.isRevoked(chain[0]) {
		return "", fmt.Errorf("%w: %q, serial %s", ErrRevoked, id, Serial(chain[0]))
	}
	return id, nil
}

// ServerConfig is NodeCreds.ServerConfig over the current credentials:
// the certificate of the moment is presented, and the client's chain is
// verified against the CA bundle and revocation set of the moment. The
// caller may modify the returned Config but not its callbacks.
func (r *Reloader) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c := r.creds.Load().Cert
			return &c, nil
		},
		// The chain is verified in VerifyConnection, against the pool of
		// the moment (ClientCAs would fix it when the Config is made).
		ClientAuth:             tls.RequireAnyClientCert,
		NextProtos:             []string{ALPN},
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			_, err := r.verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// ClientConfig is NodeCreds.ClientConfig over the current credentials,
// with the revocation set checked as well.
func (r *Reloader) ClientConfig(expect transport.PeerID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c := r.creds.Load().Cert
			return &c, nil
		},
		NextProtos:         []string{ALPN},
		InsecureSkipVerify: true, // replaced by VerifyConnection, as in NodeCreds.ClientConfig
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := checkALPN(cs); err != nil {
				return err
			}
			id, err := r.verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
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

// PeerIdentity returns the PeerID of the other end of a connection set up
// with ServerConfig or ClientConfig, verifying the presented chain now
// against the current CA bundle and revocation set: a connection that was
// good when it was made fails it once its certificate is revoked or its
// CA dropped.
func (r *Reloader) PeerIdentity(cs tls.ConnectionState) (transport.PeerID, error) {
	return r.verify(cs.PeerCertificates, x509.ExtKeyUsageAny)
}

// ReadCertificate reads the first certificate of a PEM file (a node's
// NAME.pem: `braid ca revoke` takes the serial to revoke from it).
func ReadCertificate(path string) (*x509.Certificate, error) { return readCert(path) }
