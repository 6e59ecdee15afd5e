package provenance

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// The signature file (provenance.sig) is PEM: one block of type
// SignatureBlock, whose headers name the algorithm and the SHA-256 of the
// record's bytes, then the signer's certificate and any intermediates
// (CERTIFICATE blocks, leaf first). The signature covers the exact bytes
// of provenance.json; no re-encoding is involved.
const (
	SignatureBlock = "BRAID PROVENANCE SIGNATURE"
	certBlock      = "CERTIFICATE"
	// MaxSignatureBytes bounds provenance.sig.
	MaxSignatureBytes = 64 << 10
	// maxChain bounds the certificates in a signature file.
	maxChain = 8
)

// ErrBadSignatureFile is wrapped by ParseSignature's errors.
var ErrBadSignatureFile = errors.New("provenance: bad signature file")

// Signature is a parsed provenance.sig.
type Signature struct {
	Algorithm x509.SignatureAlgorithm
	// RecordSHA256 is the hash of the record the signer says it signed
	// (informational: the signature itself is what is checked).
	RecordSHA256 string
	Value        []byte
	// Chain is the signer's certificate, then intermediates.
	Chain []*x509.Certificate
}

// algorithmFor is the signature algorithm a key of pub's type signs with.
func algorithmFor(pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch pub.(type) {
	case *ecdsa.PublicKey:
		return x509.ECDSAWithSHA256, nil
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	case *rsa.PublicKey:
		return x509.SHA256WithRSA, nil
	}
	return x509.UnknownSignatureAlgorithm, fmt.Errorf("provenance: cannot sign with a %T key (want ECDSA, Ed25519 or RSA)", pub)
}

// Sign signs record (the exact bytes of provenance.json) with key, whose
// certificate is chain[0] (DER, leaf first, as tls.Certificate.Certificate
// holds it), and returns the signature file's bytes. The key never leaves
// the caller's process: Sign only calls key.Sign.
func Sign(record []byte, key crypto.Signer, chain [][]byte) ([]byte, error) {
	if len(chain) == 0 {
		return nil, errors.New("provenance: signing needs the signer's certificate")
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("provenance: the signer's certificate: %w", err)
	}
	alg, err := algorithmFor(key.Public())
	if err != nil {
		return nil, err
	}
	// The key must be the certificate's: a signature no one could verify
	// is worse than none.
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("provenance: the signing key does not match the certificate of %s", leaf.Subject.CommonName)
	}
	sum := sha256.Sum256(record)
	var sig []byte
	if alg == x509.PureEd25519 {
		sig, err = key.Sign(rand.Reader, record, crypto.Hash(0))
	} else {
		sig, err = key.Sign(rand.Reader, sum[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("provenance: signing: %w", err)
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: SignatureBlock, Headers: map[string]string{
		"Algorithm": alg.String(), "Signed-File": RecordFile, "Record-SHA256": hex.EncodeToString(sum[:]),
		"Signer": leaf.Subject.CommonName}, Bytes: sig})
	for _, der := range chain {
		pem.Encode(&buf, &pem.Block{Type: certBlock, Bytes: der})
	}
	return buf.Bytes(), nil
}

// algorithms are the signature algorithms a signature file may name.
var algorithms = []x509.SignatureAlgorithm{x509.ECDSAWithSHA256, x509.PureEd25519, x509.SHA256WithRSA}

// ParseSignature reads a signature file: exactly one signature block with
// a known algorithm, then 1..8 certificates, nothing else. Errors wrap
// ErrBadSignatureFile; it never panics.
func ParseSignature(b []byte) (*Signature, error) {
	if len(b) > MaxSignatureBytes {
		return nil, fmt.Errorf("%w: %d bytes, at most %d", ErrBadSignatureFile, len(b), MaxSignatureBytes)
	}
	var s Signature
	rest := b
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		switch {
		case blk.Type == SignatureBlock && s.Value == nil:
			if len(blk.Bytes) == 0 {
				return nil, fmt.Errorf("%w: empty signature", ErrBadSignatureFile)
			}
			s.Value = blk.Bytes
			name := blk.Headers["Algorithm"]
			for _, a := range algorithms {
				if a.String() == name {
					s.Algorithm = a
				}
			}
			if s.Algorithm == x509.UnknownSignatureAlgorithm {
				return nil, fmt.Errorf("%w: algorithm %.40q (want one of %v)", ErrBadSignatureFile, name, algorithms)
			}
			s.RecordSHA256 = blk.Headers["Record-SHA256"]
		case blk.Type == certBlock && s.Value != nil:
			if len(s.Chain) == maxChain {
				return nil, fmt.Errorf("%w: more than %d certificates", ErrBadSignatureFile, maxChain)
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: certificate %d: %v", ErrBadSignatureFile, len(s.Chain)+1, err)
			}
			s.Chain = append(s.Chain, c)
		default:
			return nil, fmt.Errorf("%w: unexpected PEM block %.40q (want one %s, then the signer's certificates)", ErrBadSignatureFile, blk.Type, SignatureBlock)
		}
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: data that is not PEM", ErrBadSignatureFile)
	}
	if s.Value == nil {
		return nil, fmt.Errorf("%w: no %s block", ErrBadSignatureFile, SignatureBlock)
	}
	if len(s.Chain) == 0 {
		return nil, fmt.Errorf("%w: no signer certificate", ErrBadSignatureFile)
	}
	return &s, nil
}

// Signer is the common name of the signing certificate.
func (s *Signature) Signer() string { return s.Chain[0].Subject.CommonName }

// serialText is a certificate serial as transport/pki writes it
// (pki.Serial): lower-case hexadecimal.
func serialText(c *x509.Certificate) string { return strings.ToLower(c.SerialNumber.Text(16)) }
