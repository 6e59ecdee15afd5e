package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/node"
)

// `braid dev` as a user runs it: a process that prints a ready line, a
// cluster that `braid status` sees whole, then Ctrl-C (SIGINT) stopping it
// with exit 0 and removing its temporary directory.
func TestDevClusterStatusAndCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster")
	}
	bin := braidBinary(t)
	ownRuntimeDir(t)
	tmp := t.TempDir() // the dev cluster's temporary directory is made in it
	cmd := exec.Command(bin, "dev", "--nodes", "3", "--api-port", "0")
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()

	// Wait for the ready line, collecting what the user is told to export.
	var out []string
	var api, token string
	timeout := time.After(90 * time.Second)
	for ready := false; !ready; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("braid dev ended before it was ready:\n%s\nstderr:\n%s", strings.Join(out, "\n"), stderr.String())
			}
			out = append(out, l)
			if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "export "); ok {
				for _, kv := range strings.Fields(rest) {
					k, v, _ := strings.Cut(kv, "=")
					switch k {
					case "BRAID_API":
						api = v
					case "BRAID_TOKEN":
						token = v
					}
				}
			}
			ready = strings.HasPrefix(l, devReadyLine)
		case <-timeout:
			t.Fatalf("no ready line within 90 s:\n%s\nstderr:\n%s", strings.Join(out, "\n"), stderr.String())
		}
	}
	if api == "" || len(token) != 64 {
		t.Fatalf("the output names no API and token to export (api %q, token %q):\n%s", api, token, strings.Join(out, "\n"))
	}
	if !strings.Contains(strings.Join(out, "\n"), "web console  "+api+"/#token="+token) {
		t.Errorf("no console URL with the token in the output:\n%s", strings.Join(out, "\n"))
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, "braid-dev-*"))
	if len(dirs) != 1 || !strings.Contains(out[0], dirs[0]) {
		t.Fatalf("the first line should name the cluster's directory %v: %q", dirs, out[0])
	}

	// The printed token works, and the CLI of this user finds it by itself.
	text := mustRunOut(t, "status", "--api", api, "--token", token)
	if strings.Count(text, " alive ") != 3 || !strings.Contains(text, "leader") {
		t.Fatalf("braid status shows no leader and 3 alive members:\n%s", text)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(mustRunOut(t, "status", "--json", "--api", api)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Leader == "" || len(st.Epoch.Members) != 3 {
		t.Fatalf("braid status --json (token found through the runtime record): leader %q, epoch %v", st.Leader, st.Epoch.Members)
	}

	// Ctrl-C: every node stops, exit 0, the directory is gone.
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil { // an exit status other than 0 too
		t.Fatalf("braid dev after SIGINT: %v\n%s\nstderr:\n%s", err, strings.Join(rest, "\n"), stderr.String())
	}
	t.Logf("stopped %v after SIGINT: %s", time.Since(start), strings.Join(rest, " | "))
	if !strings.Contains(strings.Join(rest, "\n"), "stopped 3 node(s)") {
		t.Errorf("no line saying the nodes stopped: %q", rest)
	}
	if _, err := os.Stat(dirs[0]); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there after braid dev ended (%v)", dirs[0], err)
	}
}

// What braid dev refuses, and a taken --api-port, named with the way out.
func TestDevRefuses(t *testing.T) {
	ownRuntimeDir(t)
	t.Setenv("TMPDIR", t.TempDir()) // the directory of the failed start is kept there
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := fmt.Sprint(taken.Addr().(*net.TCPAddr).Port)
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "--nodes", "0"}, "--nodes 0: want 1 to 16"},
		{[]string{"dev", "--api-port", "70000"}, "--api-port 70000"},
		{[]string{"dev", "--dir", full}, "is not empty"},
		{[]string{"dev", "--log-level", "loud"}, "--log-level"},
		{[]string{"dev", "--nodes", "1", "--api-port", port}, "--api-port " + port + " is in use (another braid node or dev cluster?): stop it, or give --api-port 0"},
	} {
		out, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("braid %v: got %v (%s), want an error containing %q", tc.args, err, out, tc.want)
		}
	}
}
