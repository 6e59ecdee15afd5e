package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
)

// newCA makes a CA in a fresh temporary directory.
func newCA(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := InitCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func issue(t *testing.T, dir, name string, hosts ...string) *NodeCreds {
	t.Helper()
	if err := Issue(dir, name, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err := LoadNode(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestInitCA(t *testing.T) {
	dir := newCA(t)
	for f, want := range map[string]os.FileMode{CAFile: 0o644, CAKeyFile: 0o600, GossipKeyFile: 0o600} {
		if got := mode(t, filepath.Join(dir, f)); got != want {
			t.Errorf("%s: mode %v, want %v", f, got, want)
		}
	}
	ca, err := readCert(filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.CheckSignatureFrom(ca) != nil {
		t.Errorf("CA certificate: IsCA=%v usage=%v self-signed=%v", ca.IsCA, ca.KeyUsage, ca.CheckSignatureFrom(ca))
	}
	if d := time.Until(ca.NotAfter); d < CAValidity-time.Hour {
		t.Errorf("CA valid for %v, want about %v", d, CAValidity)
	}
	key, err := LoadGossipKey(dir)
	if err != nil || len(key) != GossipKeySize {
		t.Errorf("gossip key: %d bytes, %v", len(key), err)
	}
	// No temporary files left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 3 {
		t.Errorf("directory holds %d entries, want 3", len(ents))
	}
}

func TestInitCARefusesOverwrite(t *testing.T) {
	dir := newCA(t)
	before, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	err := InitCA(dir)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), filepath.Join(dir, CAFile)) {
		t.Fatalf("second InitCA: %v, want ErrExists naming %s", err, CAFile)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if string(before) != string(after) {
		t.Error("second InitCA changed the CA key")
	}
	// A lone gossip key counts too.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, GossipKeyFile), []byte("x"), 0o600)
	if err := InitCA(dir2); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), GossipKeyFile) {
		t.Errorf("InitCA over a gossip key: %v", err)
	}
}

func TestIssueAndLoad(t *testing.T) {
	dir := newCA(t)
	c := issue(t, dir, "node-1", "10.0.0.7", "node1.example", "::1")
	if c.ID != "node-1" {
		t.Errorf("ID %q", c.ID)
	}
	leaf := c.Cert.Leaf
	if leaf.Subject.CommonName != "node-1" {
		t.Errorf("CN %q", leaf.Subject.CommonName)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.0.0.7")) || !slices.Equal(leaf.DNSNames, []string{"node1.example"}) {
		t.Errorf("SANs: IPs %v DNS %v", leaf.IPAddresses, leaf.DNSNames)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) {
		t.Errorf("ExtKeyUsage %v", leaf.ExtKeyUsage)
	}
	if leaf.IsCA {
		t.Error("node certificate is a CA")
	}
	if got := mode(t, filepath.Join(dir, KeyFile("node-1"))); got != 0o600 {
		t.Errorf("node key mode %v", got)
	}
	// Re-issuing (renewal) replaces the pair.
	if err := Issue(dir, "node-1", nil, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	c2, err := LoadNode(dir, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if c2.Cert.Leaf.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("renewal kept the old certificate")
	}
}

func TestIssueRejects(t *testing.T) {
	dir := newCA(t)
	for _, tc := range []struct {
		name     string
		hosts    []string
		validity time.Duration
		want     string
	}{
		{"", nil, time.Hour, "invalid node name"},
		{"Node1", nil, time.Hour, "invalid node name"},
		{"a/b", nil, time.Hour, "invalid node name"},
		{"..", nil, time.Hour, "invalid node name"},
		{strings.Repeat("a", 65), nil, time.Hour, "invalid node name"},
		{"n1", []string{"not a host"}, time.Hour, "neither an IP"},
		{"n1", nil, 0, "must be positive"},
		{"n1", nil, 20 * CAValidity, "outlive the CA"},
	} {
		err := Issue(dir, tc.name, tc.hosts, tc.validity)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Issue(%q, %q, %v) = %v, want %q", tc.name, tc.hosts, tc.validity, err, tc.want)
		}
	}
	if err := Issue(t.TempDir(), "n1", nil, time.Hour); err == nil || !strings.Contains(err.Error(), CAFile) {
		t.Errorf("Issue without a CA: %v", err)
	}
	if !ValidName(strings.Repeat("a", 64)) || !ValidName("n_1.x-y") {
		t.Error("ValidName rejects good names")
	}
}

func TestLoadNodeErrors(t *testing.T) {
	dir := newCA(t)
	issue(t, dir, "n1")
	issue(t, dir, "n2")
	other := newCA(t)
	issue(t, other, "n1")

	copyFile := func(t *testing.T, from, to string) {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Each case starts from a good n1 in a copy of dir and breaks one thing.
	for _, tc := range []struct {
		what    string
		breakIt func(t *testing.T, d string)
		is      error
		names   string
	}{
		{"missing certificate", func(t *testing.T, d string) { os.Remove(filepath.Join(d, "n1.pem")) }, os.ErrNotExist, "n1.pem"},
		{"missing key", func(t *testing.T, d string) { os.Remove(filepath.Join(d, "n1-key.pem")) }, os.ErrNotExist, "n1-key.pem"},
		{"missing CA", func(t *testing.T, d string) { os.Remove(filepath.Join(d, CAFile)) }, os.ErrNotExist, CAFile},
		{"not PEM", func(t *testing.T, d string) { os.WriteFile(filepath.Join(d, "n1.pem"), []byte("hello"), 0o644) }, ErrNotPEM, "n1.pem"},
		{"key not PEM", func(t *testing.T, d string) { os.WriteFile(filepath.Join(d, "n1-key.pem"), []byte("hello"), 0o600) }, ErrNotPEM, "n1-key.pem"},
		{"key mismatch", func(t *testing.T, d string) {
			copyFile(t, filepath.Join(d, "n2-key.pem"), filepath.Join(d, "n1-key.pem"))
		}, ErrKeyMismatch, "n1-key.pem"},
		{"other CA", func(t *testing.T, d string) {
			copyFile(t, filepath.Join(other, "n1.pem"), filepath.Join(d, "n1.pem"))
			copyFile(t, filepath.Join(other, "n1-key.pem"), filepath.Join(d, "n1-key.pem"))
		}, ErrNotSigned, "n1.pem"},
		{"wrong name", func(t *testing.T, d string) {
			copyFile(t, filepath.Join(d, "n2.pem"), filepath.Join(d, "n1.pem"))
			copyFile(t, filepath.Join(d, "n2-key.pem"), filepath.Join(d, "n1-key.pem"))
		}, ErrBadCert, "n1.pem"},
		{"expired", func(t *testing.T, d string) {
			if err := IssueBetween(d, "n1", nil, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, ErrExpired, "n1.pem"},
		{"not yet valid", func(t *testing.T, d string) {
			if err := IssueBetween(d, "n1", nil, time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, ErrExpired, "n1.pem"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			d := t.TempDir()
			for _, f := range []string{CAFile, CAKeyFile, "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem"} {
				copyFile(t, filepath.Join(dir, f), filepath.Join(d, f))
			}
			tc.breakIt(t, d)
			_, err := LoadNode(d, "n1")
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.names) {
				t.Errorf("LoadNode: %v, want %v naming %s", err, tc.is, tc.names)
			}
		})
	}
}

func TestLoadGossipKeyErrors(t *testing.T) {
	d := t.TempDir()
	if _, err := LoadGossipKey(d); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), GossipKeyFile) {
		t.Errorf("missing: %v", err)
	}
	for _, content := range []string{"!!!not base64", "AAAA"} {
		os.WriteFile(filepath.Join(d, GossipKeyFile), []byte(content), 0o600)
		if _, err := LoadGossipKey(d); !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), GossipKeyFile) {
			t.Errorf("%q: %v", content, err)
		}
	}
}

// identifier is *NodeCreds or *Reloader.
type identifier interface {
	PeerIdentity(tls.ConnectionState) (transport.PeerID, error)
}

// handshake runs a TLS handshake over an in-memory pipe and returns both
// sides' errors and the identities each side extracted.
func handshake(t *testing.T, server, client identifier, srvConf, cliConf *tls.Config) (srvErr, cliErr error, srvSaw, cliSaw transport.PeerID) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := tls.Server(a, srvConf)
		if srvErr = s.HandshakeContext(ctx); srvErr == nil {
			// In TLS 1.3 the server verifies the client's certificate
			// after the client has finished; a read makes sure of it.
			srvSaw, srvErr = server.PeerIdentity(s.ConnectionState())
			s.Write([]byte{1})
		}
		a.Close()
	}()
	c := tls.Client(b, cliConf)
	if cliErr = c.HandshakeContext(ctx); cliErr == nil {
		cliSaw, cliErr = client.PeerIdentity(c.ConnectionState())
		if cliErr == nil {
			var one [1]byte
			_, cliErr = c.Read(one[:])
		}
	}
	b.Close()
	<-done
	return
}

func TestMutualTLS(t *testing.T) {
	dir := newCA(t)
	n1, n2 := issue(t, dir, "n1"), issue(t, dir, "n2")
	other := issue(t, newCA(t), "n2")

	t.Run("good", func(t *testing.T) {
		srvErr, cliErr, srvSaw, cliSaw := handshake(t, n1, n2, n1.ServerConfig(), n2.ClientConfig("n1"))
		if srvErr != nil || cliErr != nil || srvSaw != "n2" || cliSaw != "n1" {
			t.Errorf("server %v saw %q; client %v saw %q", srvErr, srvSaw, cliErr, cliSaw)
		}
	})
	t.Run("wrong peer", func(t *testing.T) {
		_, cliErr, _, _ := handshake(t, n1, n2, n1.ServerConfig(), n2.ClientConfig("n3"))
		if !errors.Is(cliErr, transport.ErrWrongPeer) {
			t.Errorf("client: %v, want ErrWrongPeer", cliErr)
		}
	})
	t.Run("client from another CA", func(t *testing.T) {
		srvErr, _, _, _ := handshake(t, n1, other, n1.ServerConfig(), other.ClientConfig("n1"))
		if srvErr == nil {
			t.Error("server accepted a client of another CA")
		}
	})
	t.Run("server from another CA", func(t *testing.T) {
		_, cliErr, _, _ := handshake(t, other, n1, other.ServerConfig(), n1.ClientConfig("n2"))
		if cliErr == nil || !strings.Contains(cliErr.Error(), "unknown authority") {
			t.Errorf("client: %v, want unknown authority", cliErr)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		cc := n2.ClientConfig("n1")
		cc.Certificates = nil
		srvErr, cliErr, _, _ := handshake(t, n1, n2, n1.ServerConfig(), cc)
		if srvErr == nil || cliErr == nil {
			t.Errorf("server %v, client %v: want both to fail", srvErr, cliErr)
		}
	})
	t.Run("no ALPN", func(t *testing.T) {
		// A plain client that presents a good certificate but no ALPN.
		cc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{n2.Cert}, InsecureSkipVerify: true}
		srvErr, _, _, _ := handshake(t, n1, n2, n1.ServerConfig(), cc)
		if srvErr == nil || !strings.Contains(srvErr.Error(), "application protocol") {
			t.Errorf("server: %v, want a refusal for the missing ALPN", srvErr)
		}
	})
	t.Run("ALPN mismatch", func(t *testing.T) {
		cc := n2.ClientConfig("n1")
		cc.NextProtos = []string{"h2"}
		srvErr, _, _, _ := handshake(t, n1, n2, n1.ServerConfig(), cc)
		if srvErr == nil {
			t.Error("server accepted another ALPN")
		}
	})
}
