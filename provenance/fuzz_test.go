package provenance

import (
	"crypto"
	"testing"

	"github.com/braidml/braid/transport/pki/pkitest"
)

// FuzzDecode: any bytes decode to a record or an error, never a panic, and
// a decoded record encodes and decodes again.
func FuzzDecode(f *testing.F) {
	_, rec := exportedF(f)
	f.Add(rec)
	f.Add([]byte(`{"format":1,"files":[{"name":"a","sha256":"` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `"}]}`))
	f.Add([]byte(`{"format":1,"files":[{"name":"..","sha256":""}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Decode(b)
		if err != nil {
			return
		}
		again, err := r.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(again); err != nil {
			t.Fatalf("a decoded record does not decode again: %v", err)
		}
	})
}

// FuzzParseSignature: any bytes parse to a signature with a certificate
// or an error, never a panic.
func FuzzParseSignature(f *testing.F) {
	ca := pkitest.NewCA(f)
	creds := ca.Creds("n1")
	_, rec := exportedF(f)
	sig, err := Sign(rec, creds.Cert.PrivateKey.(crypto.Signer), creds.Cert.Certificate)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sig)
	f.Add([]byte("-----BEGIN " + SignatureBlock + "-----\nAlgorithm: Ed25519\n\nAA==\n-----END " + SignatureBlock + "-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSignature(b)
		if err == nil && (len(s.Chain) == 0 || len(s.Value) == 0) {
			t.Fatalf("parsed a signature without a value or a certificate")
		}
	})
}
