package main

import (
	"encoding/csv"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/braidml/braid/node"
)

// `braid job history` of a short job on a one-node cluster: the JSON's
// last point is the job's final loss and held-out loss, the CSV has a
// row per step with the held-out column empty where the step was not
// evaluated, and the table shows the same.
func TestJobHistoryCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and runs a job")
	}
	api := startCLINode(t, "history-test-token")
	pushDocs(t, api)
	base := byteBase(t, 16)
	const steps, evalEvery = 6, 3
	id := strings.TrimSpace(mustRunOut(t, "job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", strconv.Itoa(steps),
		"--global-batch", "2", "--micro-batch", "1", "--replicas", "1", "--eval-every", strconv.Itoa(evalEvery), "--lr", "3e-3", "--warmup", "1"))
	waitJob(t, api, id)
	var js node.JobStatus
	if err := json.Unmarshal([]byte(mustRunOut(t, "job", "status", id, "--json", "--api", api)), &js); err != nil {
		t.Fatal(err)
	}

	var h node.JobHistory
	out := mustRunOut(t, "job", "history", id, "--json", "--api", api)
	if err := json.Unmarshal([]byte(out), &h); err != nil || h.Job != id || h.Node != "n1" || len(h.Points) != steps {
		t.Fatalf("job history --json: %v\n%s", err, out)
	}
	last := h.Points[steps-1]
	if last.Step != steps || last.Loss != js.Loss || last.HeldoutLoss == nil || *last.HeldoutLoss != js.HeldoutLoss ||
		h.BaseHeldoutLoss == nil || *h.BaseHeldoutLoss != js.BaseHeldoutLoss || last.LR <= 0 || last.TokensPerSec <= 0 {
		t.Errorf("last point %+v, base %v; the job's status: loss %v, held-out %v, base %v", last, h.BaseHeldoutLoss, js.Loss, js.HeldoutLoss, js.BaseHeldoutLoss)
	}
	if !strings.Contains(out, `"heldout_loss"`) || strings.Count(out, `"heldout_loss"`) != steps/evalEvery {
		t.Errorf("held-out losses in the JSON: %d, want %d (absent where not evaluated)\n%s", strings.Count(out, `"heldout_loss"`), steps/evalEvery, out)
	}

	rows, err := csv.NewReader(strings.NewReader(mustRunOut(t, "job", "history", "--csv", id, "--api", api))).ReadAll()
	if err != nil || len(rows) != steps+1 || strings.Join(rows[0], ",") != "step,loss,heldout_loss,lr,tokens_per_sec,wire_bytes,time" {
		t.Fatalf("job history --csv: %v\n%q", err, rows)
	}
	for i, row := range rows[1:] {
		step, _ := strconv.Atoi(row[0])
		loss, _ := strconv.ParseFloat(row[1], 64)
		if step != i+1 || loss != h.Points[i].Loss || (row[2] == "") != (step%evalEvery != 0) {
			t.Errorf("csv row %d: %q", i+1, row)
		}
	}

	table := mustRunOut(t, "job", "history", id, "--api", api)
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != steps+2 || !strings.Contains(lines[1], "STEP") || !strings.Contains(lines[1], "HELD-OUT") ||
		!strings.Contains(lines[0], "base model's held-out loss") {
		t.Fatalf("job history table:\n%s", table)
	}
	if f := strings.Fields(lines[2]); f[0] != "1" || f[2] != "-" {
		t.Errorf("step 1's row %q: want a held-out column of -", lines[2])
	}
	if f := strings.Fields(lines[steps+1]); f[0] != strconv.Itoa(steps) || f[2] != strconv.FormatFloat(js.HeldoutLoss, 'f', 4, 64) {
		t.Errorf("the last row %q: want held-out loss %.4f", lines[steps+1], js.HeldoutLoss)
	}

	if _, err := run(t, "job", "history", "nope", "--api", api); err == nil || err.Error() != "no job nope (see `braid job list`)" {
		t.Errorf("history of an unknown job: %v", err)
	}
	if _, err := run(t, "job", "history", id, "--json", "--csv", "--api", api); err == nil || !strings.Contains(err.Error(), "choose one") {
		t.Errorf("--json with --csv: %v", err)
	}
}
