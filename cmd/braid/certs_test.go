package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport/pki"
)

// startTLSNode runs a one-node cluster on loopback (QUIC with mutual TLS,
// encrypted gossip, the API with token) from the credentials in tlsDir,
// and waits until it leads. The bulk transport listens on TCP at the port
// the system gave QUIC over UDP, which another process may hold: then it
// tries again, on a new port.
func startTLSNode(t *testing.T, tlsDir, token string) *node.Node {
	t.Helper()
	cfg := node.DefaultConfig()
	cfg.Name, cfg.TLSDir = "n1", tlsDir
	cfg.GossipAddr, cfg.QUICAddr, cfg.HTTPAddr, cfg.HTTPToken = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", token
	cfg.BootstrapExpect, cfg.Profile, cfg.Coordinator = 1, "local", coordinator.LocalConfig()
	var n *node.Node
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		cfg.DataDir = t.TempDir()
		if n, err = node.New(cfg, node.Deps{}); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := n.Coordinator().WaitEpoch(ctx, func(e coordinator.Epoch) bool { return e.Has("n1") }); err != nil {
		t.Fatal(err)
	}
	return n
}

// A node whose certificate ends within 30 days says so: `braid status`
// prints a warning naming the node and what to do, and the metric
// braid_cert_expiry_seconds counts the seconds left. With a fresh
// certificate and a reload the warning goes.
func TestStatusWarnsOfExpiringCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := pki.IssueBetween(dir, "n1", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(10*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	const token = "certs-test-token"
	n := startTLSNode(t, dir, token)
	t.Setenv("BRAID_TOKEN", token)
	api := "http://" + n.APIAddr()

	out, err := run(t, "status", "--api", api)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	if !strings.Contains(out, "WARNING: certificate of node n1") || !strings.Contains(out, "expires in 10.0 days") ||
		!strings.Contains(out, "braid ca issue --name n1") {
		t.Errorf("status does not warn of the certificate's end:\n%s", out)
	}

	req, _ := http.NewRequest(http.MethodGet, api+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var nodeLeft, ca float64
	for _, line := range strings.Split(string(body), "\n") {
		switch {
		case strings.HasPrefix(line, `braid_cert_expiry_seconds{cert="node"}`):
			nodeLeft = parseMetric(t, line)
		case strings.HasPrefix(line, `braid_cert_expiry_seconds{cert="ca"}`):
			ca = parseMetric(t, line)
		}
	}
	if d := 10*24*3600 - nodeLeft; !(d >= 0 && d < 600) {
		t.Errorf("node certificate expiry %v s, want about %v", nodeLeft, 10*24*3600)
	}
	if !(ca > 9*365*24*3600) {
		t.Errorf("CA expiry %v s", ca)
	}

	// Renewed: no warning any more.
	if out, err := run(t, "ca", "issue", "--dir", dir, "--name", "n1", "--host", "127.0.0.1"); err != nil {
		t.Fatalf("ca issue: %v\n%s", err, out)
	}
	if err := n.Reload(); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "status", "--api", api); err != nil || strings.Contains(out, "WARNING") {
		t.Errorf("status after renewal: %v\n%s", err, out)
	}
}

func parseMetric(t *testing.T, line string) float64 {
	t.Helper()
	f := strings.Fields(line)
	v, err := strconv.ParseFloat(f[len(f)-1], 64)
	if err != nil {
		t.Fatalf("metric line %q: %v", line, err)
	}
	return v
}

// `braid ca revoke NAME --dir` takes the serial from NAME.pem and commits
// the revocation through the node's API; the node lists it.
func TestCARevokeCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"n1", "n2"} {
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	const token = "revoke-test-token"
	n := startTLSNode(t, dir, token)
	t.Setenv("BRAID_TOKEN", token)
	api := "http://" + n.APIAddr()
	cert, err := pki.ReadCertificate(filepath.Join(dir, pki.CertFile("n2")))
	if err != nil {
		t.Fatal(err)
	}
	serial := pki.Serial(cert)

	if out, err := run(t, "ca", "revoke", "--api", api, "n2"); err == nil || !strings.Contains(err.Error(), "--dir") {
		t.Errorf("revoke without --dir or --serial: %v\n%s", err, out)
	}
	out, err := run(t, "ca", "revoke", "--api", api, "--dir", dir, "n2")
	if err != nil || !strings.Contains(out, "serial "+serial) {
		t.Fatalf("ca revoke: %v\n%s", err, out)
	}
	got := n.Certs().Revoked
	if len(got) != 1 || got[0].Serial != serial || got[0].Name != "n2" {
		t.Fatalf("revoked %+v, want n2's %s", got, serial)
	}
	// By serial, in the form openssl prints (upper case, colons).
	if _, err := run(t, "ca", "revoke", "--api", api, "--serial", "0A:BC", "n3"); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Coordinator().State().RevokedCert("abc"); !ok {
		t.Errorf("serial 0A:BC not revoked as abc: %+v", n.Certs().Revoked)
	}
}

// `braid ca rotate` and `braid ca gossip-key` walk the stages.
func TestCARotateCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := run(t, "ca", "init", "--dir", dir); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "ca", "rotate", "--dir", dir); err != nil || !strings.Contains(out, "--finish") {
		t.Fatalf("rotate: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, pki.OldCAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, "ca", "rotate", "--dir", dir, "--finish"); err != nil {
		t.Fatalf("rotate --finish: %v\n%s", err, out)
	}
	for _, st := range []struct{ stage, want string }{{"add", "2 key(s)"}, {"promote", "2 key(s)"}, {"drop", "1 key(s)"}} {
		if out, err := run(t, "ca", "gossip-key", "--dir", dir, st.stage); err != nil || !strings.Contains(out, st.want) {
			t.Errorf("gossip-key %s: %v\n%s", st.stage, err, out)
		}
	}
	if _, err := run(t, "ca", "gossip-key", "--dir", dir, "rotate"); err == nil {
		t.Error("unknown stage accepted")
	}
}

// certs asks p's API for GET /v1/certs.
func (p *proc) certs() (node.CertsStatus, error) {
	var cs node.CertsStatus
	token, err := node.ReadTokenFile(filepath.Join(p.dataDir, node.APITokenFile))
	if err != nil {
		return cs, err
	}
	req, _ := http.NewRequest(http.MethodGet, p.api+"/v1/certs", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return cs, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return cs, fmt.Errorf("certs: %s", resp.Status)
	}
	return cs, json.NewDecoder(resp.Body).Decode(&cs)
}

// SIGHUP makes `braid node` reload its certificate: a node started with
// one about to end warns of it, and after a renewal and a SIGHUP presents
// the new one without the warning, still running.
func TestSIGHUPReloadsCredentials(t *testing.T) {
	ownRuntimeDir(t)
	bin := braidBinary(t)
	dir := filepath.Join(t.TempDir(), "pki")
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := pki.IssueBetween(dir, "n1", []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(5*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	p := startNode(t, bin, dir, "n1", nil, 1)
	var before node.CertsStatus
	waitFor(t, "the node's certificates", func() bool {
		var err error
		before, err = p.certs()
		return err == nil && before.Node != nil
	})
	if len(before.Warnings) != 1 {
		t.Fatalf("warnings %q, want one for a certificate that ends in 5 days", before.Warnings)
	}
	if err := pki.Issue(dir, "n1", []string{"127.0.0.1"}, 365*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var after node.CertsStatus
	waitFor(t, "the renewed certificate", func() bool {
		var err error
		after, err = p.certs()
		return err == nil && after.Node != nil && after.Node.Serial != before.Node.Serial
	})
	if len(after.Warnings) != 0 {
		t.Errorf("warnings after the renewal: %q", after.Warnings)
	}
	if b, _ := os.ReadFile(p.log); !strings.Contains(string(b), "SIGHUP: reloaded") {
		t.Errorf("the log does not say the node reloaded:\n%s", b)
	}
}

// waitFor polls cond (a process gives no event to wait on) for up to 30 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
