// Package pki is braid's small certificate authority: it creates the cluster
// CA and the gossip key (InitCA), issues node certificates signed by that CA
// (Issue), loads a node's credentials back (LoadNode, LoadGossipKey) and
// builds the mutual-TLS configurations the QUIC transport uses (ServerConfig,
// ClientConfig, PeerIdentity).
//
// Identity. A node's PeerID is the CommonName of its certificate, and every
// node certificate is good for both server and client authentication, so
// the same credentials dial and accept. Peers are addressed by name, not by
// host name: a client checks that the server's certificate chains to the
// cluster CA and that its CommonName is the PeerID it meant to reach, and
// does not check the address it dialled against the certificate's SANs (the
// SANs that Issue writes are informational, for operators and other tools).
//
// Files, all in one directory:
//
//	ca.pem          cluster CA certificate(s): every node needs it; during a
//	                rotation a bundle of the new CA and the old, both trusted
//	ca-key.pem      cluster CA private key, 0600 (keep it off the nodes)
//	ca-key.old.pem  the previous CA's key during a rotation (RotateCA)
//	gossip.key      memberlist keys, base64, one per line, 0600 (every node
//	                needs it); the first is used, all are accepted
//	NAME.pem        node certificate
//	NAME-key.pem    node private key, 0600
//
// Lifecycle: a Reloader re-reads a node's files while it runs and checks
// every handshake against the CA bundle and the revoked serials of the
// moment; RotateCA / DropOldCAs and AddGossipKey / PromoteGossipKey /
// DropGossipKeys are the stages of a rotation (rotate.go).
//
// What this package does not do: decide what is revoked (the serials come
// from the cluster's replicated state, package coordinator; there is no CRL
// or OCSP), key storage other than PEM files, or anything with the network.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/braidml/braid/internal/atomicfile"
)

// File names inside a PKI directory.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	GossipKeyFile = "gossip.key"
)

// CertFile is the name of node name's certificate file.
func CertFile(name string) string { return name + ".pem" }

// KeyFile is the name of node name's private key file.
func KeyFile(name string) string { return name + "-key.pem" }

// ALPN is the TLS application protocol every braid connection negotiates;
// a peer that offers anything else fails the handshake.
const ALPN = "braid/1"

// CAValidity is how long the cluster CA that InitCA creates is valid.
const CAValidity = 10 * 365 * 24 * time.Hour

// clockSkew backdates NotBefore so that a certificate issued on one machine
// is already valid on a peer whose clock is a little behind.
const clockSkew = 5 * time.Minute

// GossipKeySize is the length of the memberlist key InitCA writes (AES-256).
const GossipKeySize = 32

// Errors. Functions wrap these with the file at fault.
var (
	ErrExists      = errors.New("pki: file already exists")
	ErrBadName     = errors.New("pki: invalid node name")
	ErrNotPEM      = errors.New("pki: no PEM block of the expected type")
	ErrKeyMismatch = errors.New("pki: private key does not match the certificate")
	ErrNotSigned   = errors.New("pki: certificate not signed by the cluster CA")
	ErrExpired     = errors.New("pki: certificate outside its validity period")
	ErrBadCert     = errors.New("pki: certificate unfit for a braid node")
	ErrBadKey      = errors.New("pki: invalid gossip key")
)

// ValidName reports whether name can be a node name: 1..64 bytes of
// [a-z0-9-_.].
func ValidName(name string) bool {
	if len(name) < 1 || len(name) > 64 || name == "." || name == ".." {
		return false
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// InitCA creates a cluster CA in dir (created 0700 if missing): a
// self-signed ECDSA P-256 certificate valid for CAValidity (ca.pem), its key
// (ca-key.pem, 0600) and a fresh gossip key (gossip.key, 0600). It refuses,
// with ErrExists naming the file, when any of the three already exists: a
// second CA would silently split the cluster. Each file is written
// atomically (temporary file, fsync, rename).
func InitCA(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	for _, f := range []string{CAFile, CAKeyFile, GossipKeyFile} {
		p := filepath.Join(dir, f)
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%w: %s (refusing to overwrite the cluster CA)", ErrExists, p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("pki: %w", err)
		}
	}
	keyPEM, certPEM, err := makeCA("braid cluster CA")
	if err != nil {
		return err
	}
	gossip := make([]byte, GossipKeySize)
	if _, err := rand.Read(gossip); err != nil {
		return fmt.Errorf("pki: generate gossip key: %w", err)
	}
	// Key first: a crash between the files leaves a key without a
	// certificate, which InitCA then refuses to overwrite rather than
	// pairing a new certificate with nothing.
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{CAKeyFile, keyPEM, 0o600},
		{CAFile, certPEM, 0o644},
		{GossipKeyFile, []byte(base64.StdEncoding.EncodeToString(gossip) + "\n"), 0o600},
	}
	for _, f := range files {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.perm); err != nil {
			return err
		}
	}
	return nil
}

// makeCA makes a self-signed ECDSA P-256 CA certificate valid for
// CAValidity, and returns its key and certificate in PEM.
func makeCA(commonName string) (keyPEM, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"braid"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return keyPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Issue writes a certificate for node name, signed by the CA in dir and
// valid from now (less a few minutes for clock skew) for validity:
// NAME.pem and NAME-key.pem (0600), replacing an older pair (renewal). The
// CommonName is name (the node's PeerID); hosts become SANs (IP addresses
// and DNS names); the certificate is good for server and client
// authentication.
func Issue(dir, name string, hosts []string, validity time.Duration) error {
	if validity <= 0 {
		return fmt.Errorf("pki: validity %v, must be positive", validity)
	}
	now := time.Now()
	return IssueBetween(dir, name, hosts, now.Add(-clockSkew), now.Add(validity))
}

// IssueBetween is Issue with an explicit validity window, for certificates
// that start later, and for tests that need expired ones.
func IssueBetween(dir, name string, hosts []string, notBefore, notAfter time.Time) error {
	if !ValidName(name) {
		return fmt.Errorf("%w: %q (want 1..64 bytes of a-z 0-9 - _ .)", ErrBadName, name)
	}
	if !notAfter.After(notBefore) {
		return fmt.Errorf("pki: certificate for %q would end (%v) before it starts (%v)", name, notAfter, notBefore)
	}
	ca, caKey, err := loadCA(dir)
	if err != nil {
		return err
	}
	if notAfter.After(ca.NotAfter) {
		return fmt.Errorf("pki: certificate for %q would outlive the CA in %s (valid until %s)",
			name, filepath.Join(dir, CAFile), ca.NotAfter.Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("pki: generate key: %w", err)
	}
	serial, err := randSerial()
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"braid"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if validDNSName(h) {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		} else {
			return fmt.Errorf("pki: host %q is neither an IP address nor a DNS name", h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("pki: sign certificate for %q: %w", name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, KeyFile(name)), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CertFile(name)), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// loadCA reads the CA certificate and key from dir.
func loadCA(dir string) (*x509.Certificate, crypto.Signer, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	ca, err := readCert(certPath)
	if err != nil {
		return nil, nil, err
	}
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%w: %s is not a CA certificate", ErrBadCert, certPath)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, err
	}
	if !publicKeysEqual(ca.PublicKey, key.Public()) {
		return nil, nil, fmt.Errorf("%w: %s does not match %s", ErrKeyMismatch, keyPath, certPath)
	}
	return ca, key, nil
}

// readCerts reads every CERTIFICATE block of a PEM file (at least one).
func readCerts(path string) ([]*x509.Certificate, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	var out []*x509.Certificate
	for rest := raw; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: certificate %d: %w", path, len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s has no CERTIFICATE block", ErrNotPEM, path)
	}
	return out, nil
}

// readCert reads the first CERTIFICATE block of a PEM file.
func readCert(path string) (*x509.Certificate, error) {
	b, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(b)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", path, err)
	}
	return c, nil
}

// readKey reads a PKCS#8 (or SEC 1 EC) private key from a PEM file.
func readKey(path string) (crypto.Signer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	for rest := raw; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: %s has no PRIVATE KEY block", ErrNotPEM, path)
		}
		var k any
		switch blk.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("pki: %s: unsupported key type %T", path, k)
		}
		return s, nil
	}
}

// readPEM returns the bytes of the first block of type typ in the file.
func readPEM(path, typ string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	for rest := raw; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, fmt.Errorf("%w: %s has no %s block", ErrNotPEM, path, typ)
		}
		if blk.Type == typ {
			return blk.Bytes, nil
		}
	}
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func randSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// validDNSName accepts host names and wildcard names made of letters,
// digits, '-', '_' and '.'.
func validDNSName(h string) bool {
	if len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") || strings.Contains(h, "..") {
		return false
	}
	h = strings.TrimPrefix(h, "*.")
	for _, c := range []byte(h) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return h != ""
}

// writeFileAtomic writes data to path with mode perm so that path holds
// either its old content or all of data, never a mix (atomicfile; the final
// directory fsync is best effort: some file systems refuse it).
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := atomicfile.WriteBytes(path, data, perm); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}
