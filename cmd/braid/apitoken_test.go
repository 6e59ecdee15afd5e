package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/node"
)

// The CLI finds the token of a node of its user on its machine through the
// record the node leaves, whatever loopback spelling --api uses; without it
// the node refuses, and the error says what to give.
func TestCLIFindsTheNodeToken(t *testing.T) {
	ownRuntimeDir(t)
	t.Setenv("BRAID_TOKEN", "")
	t.Setenv("BRAID_TOKEN_FILE", "")
	const token = "4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee4f1c0ffee0"
	tokenFile := filepath.Join(t.TempDir(), node.APITokenFile)
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	api, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0", Token: token}, func() node.Status { return node.Status{Self: "n1"} }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close(context.Background())
	port := api.Addr()[strings.LastIndex(api.Addr(), ":")+1:]

	// No record yet: refused, with the way out in the error.
	_, err = run(t, "status", "--api", "http://"+api.Addr())
	if err == nil || !strings.Contains(err.Error(), "needs its API token") || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("no token anywhere: %v", err)
	}
	if _, err := run(t, "status", "--api", "http://"+api.Addr(), "--token", "wrong"); err == nil || !strings.Contains(err.Error(), "refused the token") {
		t.Errorf("a wrong token: %v", err)
	}
	if out, err := run(t, "status", "--api", "http://"+api.Addr(), "--token-file", tokenFile); err != nil || !strings.Contains(out, "self n1") {
		t.Errorf("--token-file: %v\n%s", err, out)
	}

	remove, err := writeAPIRecord(apiRecord{API: "http://" + api.Addr(), TokenFile: tokenFile})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"http://" + api.Addr(), "http://localhost:" + port, "http://127.0.0.1:" + port + "/"} {
		if out, err := run(t, "status", "--api", u); err != nil || !strings.Contains(out, "self n1") {
			t.Errorf("status --api %s with the record: %v\n%s", u, err, out)
		}
	}
	// A token file the user cannot read is no token (and no error).
	if os.Geteuid() != 0 {
		os.Chmod(tokenFile, 0)
		if _, err := run(t, "status", "--api", "http://"+api.Addr()); err == nil || !strings.Contains(err.Error(), "needs its API token") {
			t.Errorf("unreadable token file: %v", err)
		}
		os.Chmod(tokenFile, 0o600)
	}
	remove()
	if _, err := run(t, "status", "--api", "http://"+api.Addr()); err == nil {
		t.Error("the record was removed, but the CLI still found the token")
	}
}

// A real node started without a token generates one at its first start,
// private in its data directory, and requires it on loopback for everything
// but the health check; the CLI of its user finds it.
func TestNodeGeneratesItsToken(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t)
	t.Setenv("BRAID_TOKEN", "")
	t.Setenv("BRAID_TOKEN_FILE", "")
	tlsDir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "ca", "init", "--dir", tlsDir)
	mustRun(t, "ca", "issue", "--dir", tlsDir, "--name", "t1", "--host", "127.0.0.1")
	p := startNode(t, bin, tlsDir, "t1", nil, 1)
	waitStatus(t, p, "a leader", func(s node.Status) bool { return s.Leader != "" })

	tokenFile := filepath.Join(p.dataDir, node.APITokenFile)
	st, err := os.Stat(tokenFile)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v; want mode 0600", st.Mode(), err)
	}
	b, _ := os.ReadFile(tokenFile)
	if !regexp.MustCompile(`^[0-9a-f]{64}\n$`).Match(b) {
		t.Errorf("token file holds %q, want 64 hex digits", b)
	}
	for path, want := range map[string]int{"/v1/status": http.StatusUnauthorized, "/metrics": http.StatusUnauthorized,
		"/v1/jobs": http.StatusUnauthorized, "/v1/health": http.StatusOK} {
		resp, err := http.Get(p.api + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s without a token on loopback: %s, want %d", path, resp.Status, want)
		}
	}
	if out, err := run(t, "status", "--api", p.api); err != nil || !strings.Contains(out, "self t1") {
		t.Errorf("status, the token found by the CLI: %v\n%s", err, out)
	}
	logged, _ := os.ReadFile(p.log)
	if n := strings.Count(string(logged), tokenFile); n != 1 {
		t.Errorf("the log names the token file %d times, want once:\n%s", n, logged)
	}
}
