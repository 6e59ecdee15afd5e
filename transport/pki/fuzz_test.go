package pki

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// FuzzLoad: whatever bytes sit in the PKI files, loading returns an error
// or credentials, never panics.
func FuzzLoad(f *testing.F) {
	dir := filepath.Join(f.TempDir(), "seed")
	if err := InitCA(dir); err != nil {
		f.Fatal(err)
	}
	if err := Issue(dir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		f.Fatal(err)
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	ca, cert, key, gossip := read(CAFile), read(CertFile("n1")), read(KeyFile("n1")), read(GossipKeyFile)
	f.Add(ca, cert, key, gossip)
	f.Add(ca, key, cert, []byte("AAAA"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), cert[:len(cert)/2], key[:10], []byte{})
	f.Fuzz(func(t *testing.T, ca, cert, key, gossip []byte) {
		d := t.TempDir()
		for name, b := range map[string][]byte{CAFile: ca, CertFile("n1"): cert, KeyFile("n1"): key, GossipKeyFile: gossip} {
			if err := os.WriteFile(filepath.Join(d, name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if c, err := LoadNode(d, "n1"); err == nil && c.ID != "n1" {
			t.Errorf("loaded credentials for %q", c.ID)
		}
		if k, err := LoadGossipKey(d); err == nil && len(k) != 16 && len(k) != 24 && len(k) != 32 {
			t.Errorf("gossip key of %d bytes", len(k))
		}
	})
}
