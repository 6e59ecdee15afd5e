package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/node"
	"github.com/braidml/braid/transport/pki"
)

// startTLSAPI serves an API over TLS with the certificate of node name
// (issued by the CA in caDir for hosts) and returns its host:port.
func startTLSAPI(t *testing.T, caDir, name, token string, hosts ...string) string {
	t.Helper()
	if err := pki.Issue(caDir, name, hosts, time.Hour); err != nil {
		t.Fatal(err)
	}
	creds, err := pki.LoadNode(caDir, name)
	if err != nil {
		t.Fatal(err)
	}
	api, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0", Token: token, TLS: node.APIServerTLS(creds)},
		func() node.Status { return node.Status{Self: name} }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close(context.Background()) })
	return api.Addr()
}

func newTestCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The CLI talks to an HTTPS API when it can verify the node against the
// cluster CA, still with the token; a wrong CA, a certificate for another
// host, and a URL of the wrong scheme are errors that say what to change.
func TestCLIOverTLS(t *testing.T) {
	ownRuntimeDir(t)
	t.Setenv("BRAID_TOKEN", "")
	t.Setenv("BRAID_TOKEN_FILE", "")
	t.Setenv("BRAID_CA", "")
	const token = "9e3779b97f4a7c15f39cc0605cedc8349e3779b97f4a7c15f39cc0605cedc834"
	caDir, otherCA := newTestCA(t), newTestCA(t)
	ca, wrongCA := filepath.Join(caDir, pki.CAFile), filepath.Join(otherCA, pki.CAFile)
	addr := startTLSAPI(t, caDir, "n1", token, "127.0.0.1")
	plain, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0", Token: token},
		func() node.Status { return node.Status{Self: "plain"} }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close(context.Background())

	for _, c := range []struct {
		name string
		args []string
		want string // in the output, or in the error when err is set
		err  bool
	}{
		{"the CA and the token", []string{"--api", "https://" + addr, "--ca", ca, "--token", token}, "self n1", false},
		{"the token is still required", []string{"--api", "https://" + addr, "--ca", ca}, "needs its API token", true},
		{"a wrong token", []string{"--api", "https://" + addr, "--ca", ca, "--token", "wrong"}, "refused the token", true},
		{"another cluster's CA", []string{"--api", "https://" + addr, "--ca", wrongCA, "--token", token}, "does not verify against the CA in " + wrongCA, true},
		{"no CA", []string{"--api", "https://" + addr, "--token", token}, "give --ca", true},
		{"http to the HTTPS API", []string{"--api", "http://" + addr, "--token", token}, "serves HTTPS (braid node --http-tls): use --api https://" + addr, true},
		{"https to a plain API", []string{"--api", "https://" + plain.Addr(), "--ca", ca, "--token", token}, "serves plain HTTP", true},
		{"the plain API as before", []string{"--api", "http://" + plain.Addr(), "--token", token}, "self plain", false},
		{"not an API URL", []string{"--api", "ftp://" + addr, "--token", token}, "want http://HOST:PORT or https://HOST:PORT", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := run(t, append([]string{"status"}, c.args...)...)
			switch {
			case c.err && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Errorf("err %v, want one containing %q (output %q)", err, c.want, out)
			case !c.err && (err != nil || !strings.Contains(out, c.want)):
				t.Errorf("err %v, output %q; want %q", err, out, c.want)
			}
		})
	}
}

// A certificate the CA signed for another host is refused unless this
// user's record of the node at that address names the node; the record
// also gives the CLI the CA.
func TestCLIOverTLSChecksTheHost(t *testing.T) {
	ownRuntimeDir(t)
	t.Setenv("BRAID_TOKEN", "")
	t.Setenv("BRAID_TOKEN_FILE", "")
	t.Setenv("BRAID_CA", "")
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	caDir := newTestCA(t)
	ca := filepath.Join(caDir, pki.CAFile)
	addr := startTLSAPI(t, caDir, "n2", token, "n2.example")

	_, err := run(t, "status", "--api", "https://"+addr, "--ca", ca, "--token", token)
	if err == nil || !strings.Contains(err.Error(), `it is node "n2"'s, for hosts [n2.example]`) {
		t.Errorf("a certificate for another host: %v", err)
	}

	tokenFile := filepath.Join(t.TempDir(), node.APITokenFile)
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	remove, err := writeAPIRecord(apiRecord{API: "https://" + addr, TokenFile: tokenFile, CAFile: ca, Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	defer remove()
	if out, err := run(t, "status", "--api", "https://"+addr); err != nil || !strings.Contains(out, "self n2") {
		t.Errorf("with the record (token, CA and node name from it): %v\n%s", err, out)
	}
	// The record's node name stands in for the host only with the CA it
	// came with: a record of another node does not vouch for n2.
	remove()
	if _, err := writeAPIRecord(apiRecord{API: "https://" + addr, CAFile: ca, Node: "n3"}); err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, "status", "--api", "https://"+addr, "--token", token); err == nil || !strings.Contains(err.Error(), "does not verify for 127.0.0.1") {
		t.Errorf("a record naming another node: %v", err)
	}
}

// `braid node --http-tls` serves its API over HTTPS with its certificate,
// and the CLI of its user finds the token and the CA by itself.
func TestNodeServesTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t)
	t.Setenv("BRAID_TOKEN", "")
	t.Setenv("BRAID_TOKEN_FILE", "")
	t.Setenv("BRAID_CA", "")
	tlsDir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "ca", "init", "--dir", tlsDir)
	mustRun(t, "ca", "issue", "--dir", tlsDir, "--name", "s1", "--host", "127.0.0.1")
	p := startNodeOnce(t, bin, tlsDir, "s1", nil, 1, "--http-tls")
	api := "https://" + strings.TrimPrefix(p.api, "http://")

	// The node says where its API is once it serves it.
	deadline := time.Now().Add(30 * time.Second)
	for !logHas(p.log, "API "+api) {
		if time.Now().After(deadline) {
			t.Fatalf("the node did not report its API at %s", api)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, err := run(t, "status", "--api", api); err != nil || !strings.Contains(out, "self s1") {
		t.Errorf("status over TLS with the token and CA found by the CLI: %v\n%s", err, out)
	}
	if _, err := run(t, "status", "--api", p.api); err == nil || !strings.Contains(err.Error(), "use --api "+api) {
		t.Errorf("status over plain HTTP: %v", err)
	}
	if _, err := run(t, "status", "--api", api, "--ca", filepath.Join(newTestCA(t), pki.CAFile)); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("status with another CA: %v", err)
	}
	if logHas(p.log, "clear text") {
		t.Error("a node with --http-tls warned of clear text")
	}
	// Uploads take the same verified client: a dataset pushed over TLS.
	in := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(in, 0o755)
	for i := range 4 {
		os.WriteFile(filepath.Join(in, fmt.Sprintf("d%d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("document %d. ", i), 200)), 0o644)
	}
	ds := filepath.Join(t.TempDir(), "ds")
	mustRun(t, "data", "prepare", "--input", in, "--out", ds, "--seq-len", "32", "--shard-mib", "1", "--name", "tlsdocs")
	if out, err := run(t, "data", "push", "--api", api, ds); err != nil {
		t.Errorf("data push over TLS: %v\n%s", err, out)
	}
}

// logHas says whether the file at path has a line containing s.
func logHas(path, s string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			return true
		}
	}
	return false
}
