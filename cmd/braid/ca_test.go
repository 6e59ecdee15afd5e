package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/transport/pki"
)

// TestCA: init writes the CA and gossip key, issue writes node
// certificates, keys are 0600, and errors name the files.
func TestCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	out, err := run(t, "ca", "init", "--dir", dir)
	if err != nil {
		t.Fatalf("ca init: %v\n%s", err, out)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "gossip.key"} {
		if !strings.Contains(out, "wrote "+filepath.Join(dir, f)) {
			t.Errorf("ca init output lacks %s:\n%s", f, out)
		}
	}
	// A second init refuses and names the file.
	if out, err := run(t, "ca", "init", "--dir", dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "ca.pem")) {
		t.Errorf("second ca init: %v\n%s", err, out)
	}

	out, err = run(t, "ca", "issue", "--dir", dir, "--name", "node-1", "--host", "10.0.0.1", "--host", "node1.lan,::1", "--days", "30")
	if err != nil {
		t.Fatalf("ca issue: %v\n%s", err, out)
	}
	for _, want := range []string{"wrote " + filepath.Join(dir, "node-1.pem"), "wrote " + filepath.Join(dir, "node-1-key.pem"), "10.0.0.1 ::1 node1.lan"} {
		if !strings.Contains(out, want) {
			t.Errorf("ca issue output lacks %q:\n%s", want, out)
		}
	}
	creds, err := pki.LoadNode(dir, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(creds.Cert.Leaf.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("--days 30 gave a certificate valid for %v", d)
	}
	for f, want := range map[string]os.FileMode{"ca-key.pem": 0o600, "gossip.key": 0o600, "node-1-key.pem": 0o600, "ca.pem": 0o644, "node-1.pem": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f, fi.Mode().Perm(), want)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dir", t.TempDir(), "--name", "n1"}, "ca.pem"}, // no CA there
		{[]string{"--dir", dir, "--name", "Bad/Name"}, "invalid node name"},
		{[]string{"--dir", dir, "--name", "n1", "--days", "0"}, "--days"},
		{[]string{"--dir", dir, "--name", "n1", "--host", "not a host"}, "not a host"},
		{[]string{"--dir", dir}, "name"},
	} {
		if out, err := run(t, append([]string{"ca", "issue"}, tc.args...)...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ca issue %q: %v, want an error mentioning %q\n%s", tc.args, err, tc.want, out)
		}
	}
}
