package pki

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// nodeDir copies the CA bundle, the gossip key and name's certificate and
// key from the CA's directory into the node's directory (created if
// needed), as an operator would before a SIGHUP.
func nodeDir(t *testing.T, caDir, dir, name string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{CAFile, GossipKeyFile, CertFile(name), KeyFile(name)} {
		b, err := os.ReadFile(filepath.Join(caDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// copyFile copies one file of the CA's directory to a node's.
func copyFile(t *testing.T, caDir, dir, f string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(caDir, f))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func reloader(t *testing.T, dir, name string) *Reloader {
	t.Helper()
	r, err := NewReloader(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func mustReload(t *testing.T, r *Reloader) {
	t.Helper()
	if _, err := r.Reload(); err != nil {
		t.Fatal(err)
	}
}

// bothWays checks that a and b complete a handshake with each other in
// both directions, each seeing the other's name.
func bothWays(t *testing.T, stage string, a, b *Reloader) {
	t.Helper()
	for _, p := range [][2]*Reloader{{a, b}, {b, a}} {
		srv, cli := p[0], p[1]
		srvErr, cliErr, srvSaw, cliSaw := handshake(t, srv, cli, srv.ServerConfig(), cli.ClientConfig(srv.Self()))
		if srvErr != nil || cliErr != nil || srvSaw != cli.Self() || cliSaw != srv.Self() {
			t.Fatalf("%s: %s dialling %s: server %v (saw %q), client %v (saw %q)", stage, cli.Self(), srv.Self(), srvErr, srvSaw, cliErr, cliSaw)
		}
	}
}

// The rolling CA rotation of docs/SECURITY.md, at the TLS level: at every
// stage every pair of nodes still completes its handshakes, and at the
// end a certificate of the old CA is refused.
func TestCARotationStages(t *testing.T) {
	ca := newCA(t)
	root := t.TempDir()
	d1, d2 := filepath.Join(root, "n1"), filepath.Join(root, "n2")
	issue(t, ca, "n1")
	issue(t, ca, "n2")
	stale := issue(t, ca, "n3") // never re-issued
	nodeDir(t, ca, d1, "n1")
	nodeDir(t, ca, d2, "n2")
	r1, r2 := reloader(t, d1, "n1"), reloader(t, d2, "n2")
	oldCA := r1.Current().CA
	bothWays(t, "before", r1, r2)

	// 1. The bundle (new + old CA) to every node.
	if err := RotateCA(ca); err != nil {
		t.Fatal(err)
	}
	if err := RotateCA(ca); !errors.Is(err, ErrExists) {
		t.Errorf("second rotation under way: %v", err)
	}
	copyFile(t, ca, d1, CAFile)
	mustReload(t, r1)
	if n := len(r1.Current().CAs); n != 2 {
		t.Fatalf("bundle of %d CAs", n)
	}
	bothWays(t, "n1 has the bundle", r1, r2)
	copyFile(t, ca, d2, CAFile)
	mustReload(t, r2)
	bothWays(t, "both have the bundle", r1, r2)

	// 2. Each node's certificate re-issued by the new CA.
	issue(t, ca, "n1")
	copyFile(t, ca, d1, CertFile("n1"))
	copyFile(t, ca, d1, KeyFile("n1"))
	mustReload(t, r1)
	if r1.Current().CA.Equal(oldCA) {
		t.Fatal("n1's certificate is still from the old CA")
	}
	bothWays(t, "n1 re-issued", r1, r2)
	issue(t, ca, "n2")
	copyFile(t, ca, d2, CertFile("n2"))
	copyFile(t, ca, d2, KeyFile("n2"))
	mustReload(t, r2)
	bothWays(t, "both re-issued", r1, r2)

	// 3. The old CA dropped everywhere.
	if err := DropOldCAs(ca); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ca, OldCAKeyFile)); !os.IsNotExist(err) {
		t.Errorf("old CA key left behind: %v", err)
	}
	copyFile(t, ca, d1, CAFile)
	copyFile(t, ca, d2, CAFile)
	mustReload(t, r1)
	mustReload(t, r2)
	bothWays(t, "old CA dropped", r1, r2)
	if srvErr, _, _, _ := handshake(t, r1, stale, r1.ServerConfig(), stale.ClientConfig("n1")); srvErr == nil {
		t.Error("a certificate of the dropped CA was accepted")
	}
}

// A reload that fails (a key that does not match) keeps the credentials in
// use; a good one swaps them for the next handshake.
func TestReloadKeepsCredentialsOnError(t *testing.T) {
	ca := newCA(t)
	issue(t, ca, "n1")
	d := filepath.Join(t.TempDir(), "n1")
	nodeDir(t, ca, d, "n1")
	r := reloader(t, d, "n1")
	before := r.Current()
	issue(t, ca, "n1")
	copyFile(t, ca, d, CertFile("n1")) // the new certificate without its key
	if _, err := r.Reload(); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("mismatched key: %v", err)
	}
	if r.Current() != before {
		t.Fatal("a failed reload replaced the credentials")
	}
	copyFile(t, ca, d, KeyFile("n1"))
	mustReload(t, r)
	if Serial(r.Current().Cert.Leaf) == Serial(before.Cert.Leaf) {
		t.Fatal("reload kept the old certificate")
	}
	if c := r.Certificate(); Serial(c.Leaf) != Serial(r.Current().Cert.Leaf) {
		t.Error("Certificate is not the reloaded one")
	}
}

// A revoked serial fails the handshake on both sides: as a client the
// revoked node is refused by the server, as a server by the client; and
// an established connection's identity no longer verifies.
func TestRevokedCertificateRefused(t *testing.T) {
	ca := newCA(t)
	issue(t, ca, "n1")
	issue(t, ca, "n2")
	root := t.TempDir()
	d1, d2 := filepath.Join(root, "n1"), filepath.Join(root, "n2")
	nodeDir(t, ca, d1, "n1")
	nodeDir(t, ca, d2, "n2")
	r1, r2 := reloader(t, d1, "n1"), reloader(t, d2, "n2")
	bothWays(t, "before", r1, r2)
	s2 := Serial(r2.Current().Cert.Leaf)
	if !ValidSerial(s2) {
		t.Fatalf("serial %q not valid", s2)
	}
	r1.SetRevoked([]string{s2, "not hex", "00ff"})
	if got := r1.Revoked(); !slices.Equal(got, []string{s2}) {
		t.Errorf("revoked %v", got)
	}
	srvErr, _, _, _ := handshake(t, r1, r2, r1.ServerConfig(), r2.ClientConfig("n1"))
	if !errors.Is(srvErr, ErrRevoked) {
		t.Errorf("n2 dialling n1: server error %v, want ErrRevoked", srvErr)
	}
	_, cliErr, _, _ := handshake(t, r2, r1, r2.ServerConfig(), r1.ClientConfig("n2"))
	if !errors.Is(cliErr, ErrRevoked) {
		t.Errorf("n1 dialling n2: client error %v, want ErrRevoked", cliErr)
	}
	// n2 itself has not revoked anything; n1 still passes there.
	r2.SetRevoked(nil)
	// A node refuses to reload into a revoked certificate of its own.
	r1.SetRevoked([]string{Serial(r1.Current().Cert.Leaf)})
	if _, err := r1.Reload(); !errors.Is(err, ErrRevoked) {
		t.Errorf("reload into a revoked certificate: %v", err)
	}
}

func TestParseGossipKeys(t *testing.T) {
	k16, k32 := "AAAAAAAAAAAAAAAAAAAAAA==", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
	for _, tc := range []struct {
		name, in string
		want     int // keys; 0: an error
	}{
		// Good files.
		{"one", k32 + "\n", 1},
		{"two with comments", "# primary\n" + k32 + "\n\n" + k16 + "\n", 2},
		{"no final newline", k16, 1},
		// Bad ones.
		{"empty", "", 0},
		{"comments only", "# nothing\n", 0},
		{"not base64", "!!!\n", 0},
		{"wrong length", "AAAA\n", 0},
		{"repeated", k16 + "\n" + k16 + "\n", 0},
	} {
		keys, err := ParseGossipKeys([]byte(tc.in))
		if tc.want == 0 {
			if !errors.Is(err, ErrBadKey) {
				t.Errorf("%s: %d keys, %v; want ErrBadKey", tc.name, len(keys), err)
			}
			continue
		}
		if err != nil || len(keys) != tc.want {
			t.Errorf("%s: %d keys, %v; want %d", tc.name, len(keys), err, tc.want)
		}
	}
}

// The gossip key stages: add (accepted, not used), promote (used), drop.
func TestGossipKeyStages(t *testing.T) {
	dir := newCA(t)
	old, err := LoadGossipKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := PromoteGossipKey(dir); !errors.Is(err, ErrBadKey) {
		t.Errorf("promote with one key: %v", err)
	}
	if err := AddGossipKey(dir); err != nil {
		t.Fatal(err)
	}
	keys, _ := LoadGossipKeys(dir)
	if len(keys) != 2 || !bytes.Equal(keys[0], old) {
		t.Fatalf("after add: %d keys, primary kept %v", len(keys), bytes.Equal(keys[0], old))
	}
	added := keys[1]
	if err := PromoteGossipKey(dir); err != nil {
		t.Fatal(err)
	}
	keys, _ = LoadGossipKeys(dir)
	if len(keys) != 2 || !bytes.Equal(keys[0], added) || !bytes.Equal(keys[1], old) {
		t.Fatal("promote did not put the new key first")
	}
	if err := DropGossipKeys(dir); err != nil {
		t.Fatal(err)
	}
	keys, _ = LoadGossipKeys(dir)
	if len(keys) != 1 || !bytes.Equal(keys[0], added) {
		t.Fatal("drop did not keep the new key alone")
	}
	if got := mode(t, filepath.Join(dir, GossipKeyFile)); got != 0o600 {
		t.Errorf("gossip.key mode %v", got)
	}
}

// FuzzParseGossipKeys: any bytes give keys of a valid length or an error.
func FuzzParseGossipKeys(f *testing.F) {
	f.Add([]byte("AAAAAAAAAAAAAAAAAAAAAA==\n# c\n\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"))
	f.Add([]byte("AAAA\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseGossipKeys(b)
		if err != nil {
			return
		}
		if len(keys) == 0 || len(keys) > MaxGossipKeys {
			t.Fatalf("%d keys", len(keys))
		}
		for _, k := range keys {
			if n := len(k); n != 16 && n != 24 && n != 32 {
				t.Fatalf("key of %d bytes", n)
			}
		}
	})
}
