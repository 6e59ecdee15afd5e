// Package pkitest makes throw-away cluster CAs and node credentials for the
// tests of the transports and of what runs on them.
package pkitest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/braidml/braid/transport/pki"
)

// CA is a cluster CA in a test's temporary directory (Dir), which issues
// node credentials valid for an hour on 127.0.0.1.
type CA struct {
	t   testing.TB
	Dir string
}

// NewCA makes a CA; its files go when the test ends.
func NewCA(t testing.TB) *CA {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	return &CA{t, dir}
}

// Creds issues name's certificate and loads its credentials.
func (c *CA) Creds(name string) *pki.NodeCreds {
	c.t.Helper()
	if err := pki.Issue(c.Dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
		c.t.Fatal(err)
	}
	cr, err := pki.LoadNode(c.Dir, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return cr
}

// Reloader issues name's certificate into a directory of its own (the CA,
// the certificate and its key, as on a node) and loads it as a
// *pki.Reloader, whose revocation set and CA bundle a test can change.
func (c *CA) Reloader(name string) *pki.Reloader {
	c.t.Helper()
	if err := pki.Issue(c.Dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
		c.t.Fatal(err)
	}
	dir := filepath.Join(c.t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	for _, f := range []string{pki.CAFile, pki.CertFile(name), pki.KeyFile(name)} {
		b, err := os.ReadFile(filepath.Join(c.Dir, f))
		if err != nil {
			c.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	r, err := pki.NewReloader(dir, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return r
}
