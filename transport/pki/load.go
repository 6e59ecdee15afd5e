package pki

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/braidml/braid/transport"
)

// NodeCreds are one node's credentials: its certificate and key, and the
// cluster CA it trusts. They are immutable once loaded and safe for
// concurrent use.
type NodeCreds struct {
	// ID is the node's PeerID, the CommonName of its certificate.
	ID transport.PeerID
	// Cert is the certificate and key presented in every handshake.
	Cert tls.Certificate
	// CA is the cluster CA certificate; Pool holds only it.
	CA   *x509.Certificate
	Pool *x509.CertPool
}

// LoadNode loads node name's credentials from dir (ca.pem, NAME.pem,
// NAME-key.pem) and checks them as a peer would: the certificate must be
// for name, signed by the CA, within its validity period, good for server
// and client authentication, and match the key. Errors name the file at
// fault.
func LoadNode(dir, name string) (*NodeCreds, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q (want 1..64 bytes of a-z 0-9 - _ .)", ErrBadName, name)
	}
	caPath := filepath.Join(dir, CAFile)
	certPath, keyPath := filepath.Join(dir, CertFile(name)), filepath.Join(dir, KeyFile(name))
	ca, err := readCert(caPath)
	if err != nil {
		return nil, err
	}
	if !ca.IsCA {
		return nil, fmt.Errorf("%w: %s is not a CA certificate", ErrBadCert, caPath)
	}
	leaf, err := readCert(certPath)
	if err != nil {
		return nil, err
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%w: %s does not match %s", ErrKeyMismatch, keyPath, certPath)
	}
	if leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("%w: %s is for %q, not %q", ErrBadCert, certPath, leaf.Subject.CommonName, name)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if err := checkLeaf(leaf, pool, time.Now()); err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	return &NodeCreds{
		ID:   transport.PeerID(name),
		Cert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		CA:   ca,
		Pool: pool,
	}, nil
}

// checkLeaf checks a node certificate against the CA pool at time now.
func checkLeaf(leaf *x509.Certificate, pool *x509.CertPool, now time.Time) error {
	if now.Before(leaf.NotBefore) {
		return fmt.Errorf("%w: not valid before %s (now %s)", ErrExpired,
			leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return fmt.Errorf("%w: expired at %s (now %s)", ErrExpired,
			leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(leaf.ExtKeyUsage, u) {
			return fmt.Errorf("%w: lacks extended key usage %v (needs server and client auth)", ErrBadCert, u)
		}
	}
	if !ValidName(leaf.Subject.CommonName) {
		return fmt.Errorf("%w: common name %q is not a node name", ErrBadCert, leaf.Subject.CommonName)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return fmt.Errorf("%w: %v", ErrNotSigned, err)
	}
	return nil
}

// LoadGossipKey reads the memberlist key from dir/gossip.key (base64 of 16,
// 24 or 32 bytes; InitCA writes 32).
func LoadGossipKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, GossipKeyFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadKey, path, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("%w: %s holds %d bytes, want 16, 24 or 32", ErrBadKey, path, len(key))
}

// errNoCert is returned when a peer presents no certificate.
var errNoCert = errors.New("pki: peer presented no certificate")
