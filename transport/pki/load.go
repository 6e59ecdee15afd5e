package pki

import (
	"bytes"
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
	// CA is the cluster CA certificate that signed Cert. CAs are all the
	// CA certificates of ca.pem (a bundle: during a CA rotation the old
	// and the new CA are both trusted), and Pool holds exactly CAs.
	CA   *x509.Certificate
	CAs  []*x509.Certificate
	Pool *x509.CertPool
}

// Self is the node's PeerID (ID).
func (c *NodeCreds) Self() transport.PeerID { return c.ID }

// Certificate is the certificate and key presented in every handshake
// (Cert).
func (c *NodeCreds) Certificate() tls.Certificate { return c.Cert }

// LoadNode loads node name's credentials from dir (ca.pem, NAME.pem,
// NAME-key.pem) and checks them as a peer would: the certificate must be
// for name, signed by a CA of ca.pem, within its validity period, good for
// server and client authentication, and match the key. ca.pem may hold
// several CA certificates (a bundle), all trusted. Errors name the file at
// fault.
func LoadNode(dir, name string) (*NodeCreds, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("%w: %q (want 1..64 bytes of a-z 0-9 - _ .)", ErrBadName, name)
	}
	caPath := filepath.Join(dir, CAFile)
	certPath, keyPath := filepath.Join(dir, CertFile(name)), filepath.Join(dir, KeyFile(name))
	cas, err := readCerts(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for i, ca := range cas {
		if !ca.IsCA {
			return nil, fmt.Errorf("%w: certificate %d of %s is not a CA certificate", ErrBadCert, i+1, caPath)
		}
		pool.AddCert(ca)
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
	ca, err := checkLeaf(leaf, pool, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	return &NodeCreds{
		ID:   transport.PeerID(name),
		Cert: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		CA:   ca,
		CAs:  cas,
		Pool: pool,
	}, nil
}

// checkLeaf checks a node certificate against the CA pool at time now and
// returns the CA that signed it.
func checkLeaf(leaf *x509.Certificate, pool *x509.CertPool, now time.Time) (*x509.Certificate, error) {
	if now.Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: not valid before %s (now %s)", ErrExpired,
			leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: expired at %s (now %s)", ErrExpired,
			leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(leaf.ExtKeyUsage, u) {
			return nil, fmt.Errorf("%w: lacks extended key usage %v (needs server and client auth)", ErrBadCert, u)
		}
	}
	if !ValidName(leaf.Subject.CommonName) {
		return nil, fmt.Errorf("%w: common name %q is not a node name", ErrBadCert, leaf.Subject.CommonName)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotSigned, err)
	}
	chain := chains[0]
	return chain[len(chain)-1], nil
}

// LoadGossipKey reads the primary memberlist key from dir/gossip.key: the
// first key of LoadGossipKeys.
func LoadGossipKey(dir string) ([]byte, error) {
	keys, err := LoadGossipKeys(dir)
	if err != nil {
		return nil, err
	}
	return keys[0], nil
}

// MaxGossipKeys bounds the keys of one gossip.key file.
const MaxGossipKeys = 8

// LoadGossipKeys reads the memberlist keys from dir/gossip.key: one key
// per line, base64 of 16, 24 or 32 bytes (InitCA writes one of 32); blank
// lines and lines starting with '#' are skipped. The first key is the
// primary one, which encrypts what the node sends; every key decrypts what
// it receives, so that during a key rotation nodes with the old and the new
// primary key still understand each other. At least one key, at most
// MaxGossipKeys, none twice.
func LoadGossipKeys(dir string) ([][]byte, error) {
	path := filepath.Join(dir, GossipKeyFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keys, err := ParseGossipKeys(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// ParseGossipKeys decodes the content of a gossip.key file; see
// LoadGossipKeys. Errors wrap ErrBadKey and name the line.
func ParseGossipKeys(raw []byte) ([][]byte, error) {
	var keys [][]byte
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(keys) == MaxGossipKeys {
			return nil, fmt.Errorf("%w: more than %d keys", ErrBadKey, MaxGossipKeys)
		}
		key, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadKey, i+1, err)
		}
		switch len(key) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("%w: line %d holds %d bytes, want 16, 24 or 32", ErrBadKey, i+1, len(key))
		}
		for _, k := range keys {
			if bytes.Equal(k, key) {
				return nil, fmt.Errorf("%w: line %d repeats a key", ErrBadKey, i+1)
			}
		}
		keys = append(keys, key)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no key", ErrBadKey)
	}
	return keys, nil
}

// errNoCert is returned when a peer presents no certificate.
var errNoCert = errors.New("pki: peer presented no certificate")
