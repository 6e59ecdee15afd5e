package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/node"
)

// TestNodeJSONLogs: with --log-format json (at debug level, so Raft's and
// memberlist's chatter is in it) every line a node writes to stderr is a
// JSON object, without hclog format placeholders, through a cluster
// forming, a dataset pushed and replicated, and a shutdown; the push logs
// no warning.
func TestNodeJSONLogs(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t)
	tlsDir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "ca", "init", "--dir", tlsDir)
	for _, n := range []string{"j1", "j2", "j3"} {
		mustRun(t, "ca", "issue", "--dir", tlsDir, "--name", n, "--host", "127.0.0.1")
	}
	jsonFlags := []string{"--log-format", "json", "--log-level", "debug"}
	p1 := startNodeOnce(t, bin, tlsDir, "j1", nil, 3, jsonFlags...)
	p2 := startNodeOnce(t, bin, tlsDir, "j2", []string{p1.gossip}, 3, jsonFlags...)
	p3 := startNodeOnce(t, bin, tlsDir, "j3", []string{p1.gossip}, 3, jsonFlags...)
	procs := []*proc{p1, p2, p3}
	for _, p := range procs {
		waitReady(t, p)
	}

	in := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(in, 0o755)
	for i := range 40 { // 2.4 MB: several shards of 1 MiB to replicate
		os.WriteFile(filepath.Join(in, fmt.Sprintf("d%02d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("document %d. ", i), 5000)), 0o644)
	}
	ds := filepath.Join(t.TempDir(), "ds")
	mustRun(t, "data", "prepare", "--input", in, "--out", ds, "--seq-len", "64", "--shard-mib", "1", "--name", "docs", "--holdout", "0.3")
	mustRun(t, "data", "push", "--api", p2.api, ds)
	pushed := time.Now()
	deadline := pushed.Add(30 * time.Second)
	for {
		var dst node.DatasetStatus
		out, err := run(t, "data", "status", "--json", "--api", p1.api, "docs")
		if err == nil && json.Unmarshal([]byte(out), &dst) == nil && dst.UnderReplicated == 0 && dst.Healthy == len(dst.Shards) && len(dst.Placement) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dataset not replicated within 30 s: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []*proc{p3, p2, p1} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}

	for _, p := range procs {
		f, err := os.Open(p.log)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		lines, stdout := 0, 0
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "braid node ") { // the API address, on stdout (the test gives both streams one file)
				stdout++
				continue
			}
			lines++
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s: a line that is not JSON: %q", p.name, line)
				continue
			}
			if strings.Contains(line, "%+v") || strings.Contains(line, "%v") {
				t.Errorf("%s: a format placeholder: %s", p.name, line)
			}
			if lvl, _ := rec["level"].(string); (lvl == "WARN" || lvl == "ERROR") && strings.Contains(line, "object not found") {
				t.Errorf("%s: the push logged: %s", p.name, line)
			}
		}
		f.Close()
		t.Logf("%s: %d JSON lines on stderr, %d on stdout", p.name, lines, stdout)
		if lines < 20 {
			t.Errorf("%s: only %d log lines at debug level", p.name, lines)
		}
	}
}

// waitReady polls p's /v1/ready (no token) until it answers 200.
func waitReady(t *testing.T, p *proc) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(p.api + "/v1/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready within 30s: %v %v", p.name, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
