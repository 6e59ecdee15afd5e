package provenance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/pki/pkitest"
)

// issueOther issues, from ca, a certificate for name with the given usages
// (not a node certificate's), and returns its key and DER.
func issueOther(t *testing.T, ca *pkitest.CA, name string, ku x509.KeyUsage, eku []x509.ExtKeyUsage) (crypto.Signer, []byte) {
	t.Helper()
	blk, _ := pem.Decode(must(os.ReadFile(filepath.Join(ca.Dir, pki.CAKeyFile))))
	caKey, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if caKey, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
			t.Fatal(err)
		}
	}
	cas := roots(t, ca)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: ku, ExtKeyUsage: eku, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, cas[0], &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// TestVerifyRefusesANonNodeCertificate: a certificate the cluster CA
// issued without the node certificate's usages does not sign records.
func TestVerifyRefusesANonNodeCertificate(t *testing.T) {
	ca := pkitest.NewCA(t)
	for name, c := range map[string]struct {
		ku  x509.KeyUsage
		eku []x509.ExtKeyUsage
	}{
		"any usage":             {x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageAny}},
		"no digitalSignature":   {x509.KeyUsageKeyEncipherment, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
		"code signing":          {x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}},
		"server without client": {x509.KeyUsageDigitalSignature, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
	} {
		t.Run(name, func(t *testing.T) {
			key, der := issueOther(t, ca, "n1", c.ku, c.eku)
			dir, rec := exported(t, "n1")
			sig, err := Sign(rec, key, [][]byte{der})
			if err != nil {
				t.Fatal(err)
			}
			if err := WriteDir(dir, rec, sig); err != nil {
				t.Fatal(err)
			}
			rep := verify(t, dir, Options{Roots: roots(t, ca)})
			if rep.OK() {
				t.Fatal("verified a record signed by a certificate that is not a node's")
			}
			found := false
			for _, p := range rep.Problems {
				found = found || len(p) > 24 && p[:24] == "not a node certificate: "
			}
			if !found {
				t.Errorf("problems %q: want one saying it is not a node certificate", rep.Problems)
			}
		})
	}
}
