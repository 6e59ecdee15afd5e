package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node"
)

// This file runs real `braid node` processes on loopback: QUIC with mutual
// TLS, encrypted gossip, Raft on disk. It is the process-level check behind
// node/nodetest's in-process scenarios.

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// braidBinary builds cmd/braid once per test binary.
func braidBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "braid-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "braid")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildOnce.err != nil {
		t.Fatal(buildOnce.err)
	}
	return buildOnce.path
}

// freePorts returns n loopback ports that were free a moment ago (for both
// TCP and UDP).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		l.Close()
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports
}

type proc struct {
	name    string
	cmd     *exec.Cmd
	api     string
	gossip  string
	log     string
	dataDir string
}

// startNode starts a node process on ports that were free a moment ago;
// when another process took one of them meanwhile (the node exits with
// "address already in use"), it tries again on new ones.
func startNode(t *testing.T, bin, tlsDir, name string, join []string, expect int) *proc {
	t.Helper()
	for attempt := 1; ; attempt++ {
		p := startNodeOnce(t, bin, tlsDir, name, join, expect)
		if attempt == 3 || !p.lostAPort() {
			return p
		}
		t.Logf("%s lost a port to another process; starting it again", name)
	}
}

// lostAPort waits until p's API answers its health check or p exits, and
// says whether it exited because a port was taken.
func (p *proc) lostAPort() bool {
	exited := make(chan struct{})
	go func() { p.cmd.Process.Wait(); close(exited) }()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case <-exited:
			b, _ := os.ReadFile(p.log)
			return strings.Contains(string(b), "address already in use")
		case <-deadline:
			return false
		case <-time.After(50 * time.Millisecond):
			if resp, err := http.Get(p.api + "/v1/health"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return false
				}
			}
		}
	}
}

// startNodeOnce starts a node process, with extra flags after the usual ones.
func startNodeOnce(t *testing.T, bin, tlsDir, name string, join []string, expect int, extra ...string) *proc {
	t.Helper()
	ports := freePorts(t, 3)
	dir := t.TempDir()
	p := &proc{name: name, api: fmt.Sprintf("http://127.0.0.1:%d", ports[2]), gossip: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		log: filepath.Join(dir, "node.log"), dataDir: filepath.Join(dir, "data")}
	args := []string{"node", "--name", name, "--data-dir", p.dataDir, "--tls-dir", tlsDir,
		"--gossip-addr", p.gossip, "--quic-addr", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--http", fmt.Sprintf("127.0.0.1:%d", ports[2]), "--bootstrap-expect", fmt.Sprint(expect), "--profile", "local"}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	args = append(args, extra...)
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			t.Logf("log of %s:\n%s", name, b)
		}
	})
	return p
}

// status asks p's API for its status with the token p generated (which
// exists once its API is up).
func (p *proc) status() (node.Status, error) {
	var st node.Status
	token, err := node.ReadTokenFile(filepath.Join(p.dataDir, node.APITokenFile))
	if err != nil {
		return st, err
	}
	req, _ := http.NewRequest("GET", p.api+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status: %s", resp.Status)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// ownRuntimeDir gives the test's node processes and CLI runs a runtime
// directory of their own, where the nodes leave the records by which the
// CLI finds their tokens (apitoken.go).
func ownRuntimeDir(t *testing.T) {
	t.Setenv("XDG_RUNTIME_DIR", t.TempDir())
}

// waitStatus polls p's status until cond holds; processes give no event to
// wait on, so this polls with a deadline.
func waitStatus(t *testing.T, p *proc, what string, cond func(node.Status) bool) node.Status {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := p.status()
		if err == nil && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within 30s (last status %+v, err %v)", p.name, what, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestThreeProcessCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t) // every CLI command below finds the token of the node it talks to
	tlsDir := filepath.Join(t.TempDir(), "tls")
	mustRun(t, "ca", "init", "--dir", tlsDir)
	for _, n := range []string{"a1", "a2", "a3", "a4", "spy"} {
		mustRun(t, "ca", "issue", "--dir", tlsDir, "--name", n, "--host", "127.0.0.1")
	}
	p1 := startNode(t, bin, tlsDir, "a1", nil, 3)
	p2 := startNode(t, bin, tlsDir, "a2", []string{p1.gossip}, 3)
	p3 := startNode(t, bin, tlsDir, "a3", []string{p1.gossip}, 3)
	st := waitStatus(t, p1, "leader and a 3-member epoch", func(s node.Status) bool { return s.Leader != "" && len(s.Epoch.Members) == 3 })
	t.Logf("leader %s, epoch %d %v", st.Leader, st.Epoch.ID, st.Epoch.Members)

	// `braid bench allreduce --api` runs a ring across the live members.
	out, err := exec.Command(bin, "bench", "allreduce", "--api", p2.api, "--sizes", "64KiB,256KiB", "--iters", "1",
		"--dtype", "fp16", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("bench allreduce --api: %v\n%s", err, out)
	}
	if rows := benchRows(t, out); len(rows) != 2 || rows[0].Nodes != 3 || rows[0].Wrong != 0 || rows[1].Wrong != 0 || rows[1].Bytes != 256<<10 {
		t.Fatalf("bench allreduce --api rows %+v:\n%s", rows, out)
	}

	// A dataset prepared here and pushed through one node is placed on two
	// of the three and shown healthy by `braid data status`.
	in := filepath.Join(t.TempDir(), "docs")
	os.MkdirAll(in, 0o755)
	for i := range 20 {
		os.WriteFile(filepath.Join(in, fmt.Sprintf("d%02d.txt", i)), []byte(strings.Repeat(fmt.Sprintf("document %d. ", i), 300)), 0o644)
	}
	ds := filepath.Join(t.TempDir(), "ds")
	mustRun(t, "data", "prepare", "--input", in, "--out", ds, "--seq-len", "64", "--shard-mib", "1", "--name", "docs", "--holdout", "0.3")
	mustRun(t, "data", "push", "--api", p3.api, ds)
	// The client's copy is gone once pushed, as on another machine: the
	// nodes hold what was uploaded and never read the client's path.
	if err := os.RemoveAll(ds); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := exec.Command(bin, "data", "status", "--json", "--api", p1.api, "docs").CombinedOutput()
		var dst node.DatasetStatus
		if err == nil && json.Unmarshal(out, &dst) == nil && dst.UnderReplicated == 0 && dst.Healthy == len(dst.Shards) && len(dst.Placement) > 0 {
			for h, holders := range dst.Held {
				if len(holders) < 2 {
					t.Fatalf("shard %s held by %v", h, holders)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dataset not replicated within 30 s: %v\n%s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := run(t, "data", "ls", "--api", p2.api); err != nil || !strings.Contains(out, "docs") {
		t.Fatalf("data ls: %v\n%s", err, out)
	}

	// A job through the CLI: submit on one node, watch it to the end,
	// status, list, export the model and score it with braid eval.
	base := filepath.Join(t.TempDir(), "base")
	bc := model.Config{Context: 64, Dim: 32, Layers: 2, Heads: 2, Vocab: model.ByteTokenizer{}.Vocab()}
	bm, err := model.NewInference(bc, 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	bm.Init(3)
	if err := model.SaveCheckpoint(base, bc, model.ByteTokenizer{}, bm.Params); err != nil {
		t.Fatal(err)
	}
	sub, err := exec.Command(bin, "job", "submit", "--api", p2.api, "--base", base, "--dataset", "docs", "--steps", "12",
		"--global-batch", "6", "--micro-batch", "2", "--lr", "3e-3", "--eval-every", "12", "--checkpoint-every", "6").Output()
	if err != nil {
		t.Fatalf("job submit: %v", err)
	}
	id := strings.TrimSpace(string(sub))
	if err := os.RemoveAll(base); err != nil { // uploaded: the job needs it no more here
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "job", "watch", "--api", p1.api, id).CombinedOutput(); err != nil {
		t.Fatalf("job watch: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "job", "status", "--json", "--api", p3.api, id).Output()
	var js node.JobStatus
	if err != nil || json.Unmarshal(out, &js) != nil || js.State != "completed" || js.Step != 12 || len(js.Members) != 3 || js.WeightsHash == "" ||
		!(js.HeldoutLoss > 0 && js.HeldoutLoss < js.BaseHeldoutLoss) {
		t.Fatalf("job %q status: %v\n%s", id, err, out)
	}
	if out, err := run(t, "job", "events", "--api", p2.api, id); err != nil || !strings.Contains(out, "no epoch change") {
		t.Fatalf("job events of a job whose members never changed: %v\n%s", err, out)
	}
	if out, err := run(t, "job", "list", "--api", p1.api); err != nil || !strings.Contains(out, id) || !strings.Contains(out, "completed") {
		t.Fatalf("job list: %v\n%s", err, out)
	}
	export := filepath.Join(t.TempDir(), "out")
	mustRun(t, "job", "export", "--api", p1.api, "--out", export, id)
	if out, err := run(t, "eval", "--model", export, "--input", in, "--json"); err != nil || !strings.Contains(out, "loss") {
		t.Fatalf("eval of the exported model: %v\n%s", err, out)
	}

	// A LoRA job exported with --merged: the merged model scores what the
	// base with the exported adapter applied scores.
	base2 := filepath.Join(t.TempDir(), "base2")
	if err := model.SaveCheckpoint(base2, bc, model.ByteTokenizer{}, bm.Params); err != nil {
		t.Fatal(err)
	}
	sub, err = exec.Command(bin, "job", "submit", "--api", p1.api, "--base", base2, "--dataset", "docs", "--steps", "6",
		"--global-batch", "6", "--micro-batch", "2", "--lora-rank", "4", "--checkpoint-every", "6").Output()
	if err != nil {
		t.Fatalf("LoRA job submit: %v", err)
	}
	loraID := strings.TrimSpace(string(sub))
	if out, err := exec.Command(bin, "job", "watch", "--api", p1.api, loraID).CombinedOutput(); err != nil {
		t.Fatalf("LoRA job watch: %v\n%s", err, out)
	}
	adapter, merged := filepath.Join(t.TempDir(), "adapter"), filepath.Join(t.TempDir(), "merged")
	mustRun(t, "job", "export", "--api", p3.api, "--out", adapter, "--merged", merged, loraID)
	score := func(args ...string) float64 {
		t.Helper()
		out, err := run(t, append([]string{"eval", "--input", in, "--json"}, args...)...)
		var r struct{ Loss float64 }
		if err != nil || json.Unmarshal([]byte(out[strings.LastIndex(out, "{"):]), &r) != nil || !(r.Loss > 0) {
			t.Fatalf("eval %v: %v\n%s", args, err, out)
		}
		return r.Loss
	}
	withAdapter, mergedLoss, baseLoss := score("--model", base2, "--adapter", adapter), score("--model", merged), score("--model", base2)
	if math.Abs(withAdapter-mergedLoss) > 1e-4*withAdapter || withAdapter == baseLoss {
		t.Fatalf("eval: base %.6f, base+adapter %.6f, merged %.6f: the merged model should score as base+adapter, and differ from the base", baseLoss, withAdapter, mergedLoss)
	}

	// kill -9 of a node that is not the leader gives an epoch without it.
	victim := p2
	if st.Leader == "a2" {
		victim = p3
	}
	observer := p1
	if st.Leader == "a1" && victim == p3 {
		observer = p2
	}
	start := time.Now()
	victim.cmd.Process.Signal(syscall.SIGKILL)
	st = waitStatus(t, observer, "epoch without "+victim.name, func(s node.Status) bool {
		return s.Epoch.ID > 0 && !slices.Contains(s.Epoch.Members, victim.name)
	})
	t.Logf("kill -9 %s → epoch %d %v in %v", victim.name, st.Epoch.ID, st.Epoch.Members, time.Since(start))

	// A node whose certificate comes from another CA never gets past the
	// handshake: it is not in any epoch, and it sees no leader.
	otherCA := filepath.Join(t.TempDir(), "other")
	mustRun(t, "ca", "init", "--dir", otherCA)
	mustRun(t, "ca", "issue", "--dir", otherCA, "--name", "a4", "--host", "127.0.0.1")
	// Same gossip key, so only TLS stands in the way.
	copyFile(t, filepath.Join(tlsDir, "gossip.key"), filepath.Join(otherCA, "gossip.key"))
	rogue := startNode(t, bin, otherCA, "a4", []string{p1.gossip}, 0)
	// The wrong gossip key: the node cannot join gossip at all.
	wrongKey := filepath.Join(t.TempDir(), "wrongkey")
	mustRun(t, "ca", "init", "--dir", wrongKey)
	for _, f := range []string{"ca.pem", "spy.pem", "spy-key.pem"} {
		copyFile(t, filepath.Join(tlsDir, f), filepath.Join(wrongKey, f))
	}
	spy := startNode(t, bin, wrongKey, "spy", []string{p1.gossip}, 0)
	waitStatus(t, rogue, "its own API", func(node.Status) bool { return true })
	waitStatus(t, spy, "its own API", func(node.Status) bool { return true })
	// Watch the cluster for several gossip and reconcile rounds of the
	// local profile while they try: neither may appear in the epoch, nor
	// the spy in gossip, at any point. A status that cannot be read is a
	// failure, not a pass.
	watchUntil := time.Now().Add(3 * time.Second)
	for time.Now().Before(watchUntil) {
		st, err := observer.status()
		if err != nil {
			t.Fatalf("observer status: %v", err)
		}
		if slices.Contains(st.Epoch.Members, "a4") || slices.Contains(st.Epoch.Members, "spy") {
			t.Fatalf("an intruder is in the epoch: %v", st.Epoch.Members)
		}
		for _, m := range st.Members {
			if m.Name == "spy" {
				t.Fatalf("the node with the wrong gossip key is a gossip member: %+v", m)
			}
		}
		time.Sleep(100 * time.Millisecond) // polling a process's API: there is no event to wait on
	}
	if rs, err := rogue.status(); err == nil && rs.Leader != "" {
		t.Errorf("the node from another CA sees leader %s", rs.Leader)
	}
	b, _ := os.ReadFile(observer.log)
	t.Logf("observer log mentions the refused handshake: %v", strings.Contains(string(b), "certificate"))
}

func mustRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := run(t, args...); err != nil {
		t.Fatalf("braid %v: %v\n%s", args, err, out)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestBenchAllreduceProcesses: `braid bench allreduce` runs a ring of real
// processes over QUIC and every value comes out right.
func TestBenchAllreduceProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	out, err := exec.Command(braidBinary(t), "bench", "allreduce", "--nodes", "3", "--sizes", "64KiB,1MiB",
		"--iters", "1", "--dtype", "bf16", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rows := benchRows(t, out)
	for _, r := range rows {
		if r.Nodes != 3 || r.Wrong != 0 || r.BusBW <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2:\n%s", len(rows), out)
	}
}

// benchRows parses the JSON rows of `braid bench allreduce --json`,
// skipping other lines (logs on stderr).
func benchRows(t *testing.T, out []byte) []benchRow {
	t.Helper()
	var rows []benchRow
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r benchRow
		if err := json.Unmarshal([]byte(line), &r); err == nil && r.Nodes > 0 {
			rows = append(rows, r)
		}
	}
	return rows
}
