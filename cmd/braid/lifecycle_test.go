package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// fakeAPI serves the routes a test gives behind the API's token, and sets
// BRAID_TOKEN for the commands; it returns the --api URL.
func fakeAPI(t *testing.T, routes func(mux *http.ServeMux)) string {
	t.Helper()
	const token = "lifecycle-test-token"
	api, err := node.StartAPI(node.APIConfig{Addr: "127.0.0.1:0", Token: token, Routes: routes}, func() node.Status { return node.Status{Self: "n1"} }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close(context.Background()) })
	t.Setenv("BRAID_TOKEN", token)
	return "http://" + api.Addr()
}

func writeTestJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// exitCode is the status braid exits with for err (main.go).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ec, ok := errors.AsType[cli.ExitCoder](err); ok {
		return ec.ExitCode()
	}
	return exitFailed
}

// `job resume --wait` and `--watch` (the wait of `job submit`) exit 0 when
// the job completes, 1 when it fails, 3 when it is cancelled and 4 when it
// is removed while waited for; --watch prints progress lines meanwhile.
func TestJobWaitExitCodes(t *testing.T) {
	for _, tc := range []struct {
		end   coordinator.JobState // "": removed (404)
		code  int
		flag  string
		says  string
		lines bool
	}{
		{coordinator.JobCompleted, 0, "--wait", "", false},
		{coordinator.JobFailed, 1, "--wait", "n2's weights differ", false},
		{coordinator.JobCancelled, exitJobCancelled, "--wait", "cancelled at step 5/10", false},
		{"", exitJobGone, "--wait", "removed while waited for", false},
		{coordinator.JobCompleted, 0, "--watch", "", true},
	} {
		t.Run(string(tc.end)+tc.flag, func(t *testing.T) {
			var mu sync.Mutex
			polls := 0
			api := fakeAPI(t, func(mux *http.ServeMux) {
				mux.HandleFunc("POST /v1/jobs/{id}/resume", func(w http.ResponseWriter, r *http.Request) {
					writeTestJSON(w, coordinator.Job{ID: r.PathValue("id"), State: coordinator.JobSubmitted,
						Checkpoints: []coordinator.Checkpoint{{Step: 4}}})
				})
				mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					polls++
					p := polls
					mu.Unlock()
					js := node.JobStatus{ID: r.PathValue("id"), State: coordinator.JobRunning, Step: 5, Steps: 10}
					if p >= 2 {
						if tc.end == "" {
							http.Error(w, "braid: node: no job", http.StatusNotFound)
							return
						}
						js.State = tc.end
						if tc.end == coordinator.JobFailed {
							js.Error = "n2's weights differ"
						}
						if tc.end == coordinator.JobCompleted {
							js.Step = 10
						}
					}
					writeTestJSON(w, js)
				})
			})
			out, err := run(t, "job", "resume", "--api", api, tc.flag, "job-1")
			if got := exitCode(err); got != tc.code {
				t.Fatalf("exit %d (%v), want %d\n%s", got, err, tc.code, out)
			}
			if tc.says != "" && !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
			if !strings.Contains(out, "resumed: it goes on from its checkpoint at step 4") {
				t.Errorf("output lacks the step it resumes from:\n%s", out)
			}
			if got := strings.Contains(out, "step    5/10"); got != tc.lines {
				t.Errorf("progress lines printed %v, want %v:\n%s", got, tc.lines, out)
			}
		})
	}
	// The exit codes are in the help.
	out, _ := run(t, "job", "submit", "--help")
	if !strings.Contains(out, "3 it was cancelled") || !strings.Contains(out, "--keep-checkpoints") {
		t.Errorf("job submit --help lacks the exit codes or --keep-checkpoints:\n%s", out)
	}
}

// --keep-checkpoints out of range is refused before anything is read or
// uploaded.
func TestJobSubmitKeepCheckpointsFlag(t *testing.T) {
	out, err := run(t, "job", "submit", "--api", "http://127.0.0.1:1", "--model", t.TempDir(), "--dataset", "d", "--steps", "1", "--global-batch", "1", "--keep-checkpoints", "9")
	if err == nil || !strings.Contains(err.Error(), "--keep-checkpoints 9: want 1..8") {
		t.Errorf("--keep-checkpoints 9: %v\n%s", err, out)
	}
}

// `data push --wait` returns once every placed replica is held, and
// after --timeout fails naming the replicas still missing.
func TestDataPushWait(t *testing.T) {
	ds := filepath.Join(t.TempDir(), "ds")
	mustRunOut(t, "data", "prepare", "--input", corpusDir(t), "--out", ds, "--seq-len", "32", "--name", "docs")
	for _, held := range []bool{true, false} {
		var mu sync.Mutex
		var d coordinator.Dataset
		api := fakeAPI(t, func(mux *http.ServeMux) {
			mux.HandleFunc("HEAD /v1/blobs/{hash}", func(w http.ResponseWriter, r *http.Request) {}) // held: nothing uploaded
			mux.HandleFunc("POST /v1/datasets", func(w http.ResponseWriter, r *http.Request) {
				var req node.AddDatasetRequest
				json.NewDecoder(r.Body).Decode(&req)
				mu.Lock()
				defer mu.Unlock()
				d = coordinator.Dataset{ID: strings.Repeat("d", 64), Name: "docs", Manifest: req.Manifest, Replicas: 2,
					Shards: []coordinator.DatasetShard{{Hash: strings.Repeat("a", 64)}, {Hash: strings.Repeat("b", 64)}}}
				writeTestJSON(w, d)
			})
			mux.HandleFunc("GET /v1/datasets/{name}", func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				st := node.DatasetStatus{Dataset: d, Held: map[string][]string{}}
				st.Placement = map[string][]string{d.Shards[0].Hash: {"n1", "n2"}, d.Shards[1].Hash: {"n2", "n3"}}
				st.Held[d.Shards[0].Hash] = []string{"n1", "n2"}
				st.Held[d.Shards[1].Hash] = []string{"n2"}
				if held {
					st.Held[d.Shards[1].Hash] = []string{"n3", "n2"}
				}
				writeTestJSON(w, st)
			})
		})
		out, err := run(t, "data", "push", "--api", api, "--wait", "--timeout", "1s", ds)
		if held && (err != nil || !strings.Contains(out, "2 shards held as placed")) {
			t.Errorf("push --wait with every replica held: %v\n%s", err, out)
		}
		if !held && (err == nil || !strings.Contains(err.Error(), "1 replicas are missing: shard bbbbbbbbbbbb on n3")) {
			t.Errorf("push --wait with a replica missing: %v\n%s", err, out)
		}
	}
}
