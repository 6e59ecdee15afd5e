package nodetest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// headlessChromium runs chromium headless on url with a profile of its own
// and the extra flags, and returns what it printed. Virtual time lets the
// page's fetches and first polls finish before the DOM is dumped, without
// a wall-clock wait.
func headlessChromium(t *testing.T, bin, url string, extra ...string) string {
	t.Helper()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=8000", "--window-size=1280,1500"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, url)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, errOut.String())
	}
	return out.String()
}

// The console in a real browser: headless Chromium loads a node's console
// with the token in the URL's fragment (/#token=..., never sent to the
// server), which the script keeps in the tab's sessionStorage and sends as
// a bearer header; the overview shows both members, the finished job with
// its loss curve; the job's page draws a point per step of the job's
// history. Without the token the page shows the login form and no data,
// and so it does with a token in the query instead (an old URL: ignored).
func TestConsoleInChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (Debian: apt-get install chromium): the console's browser test needs it")
	}
	c := NewCluster(t, 2, WithAPI())
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	const steps, evalEvery = 10, 5
	id := submit(t, c, "n1", node.JobRequest{Steps: steps, GlobalBatch: 6, MicroBatch: 3, LR: 3e-3, Warmup: 2,
		EvalEvery: evalEvery, CheckpointEvery: 5})
	if js := waitJob(c, "n1", id, final); js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
	n := c.Node("n2")
	token, err := node.ReadTokenFile(n.APITokenFile())
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.APIAddr()

	dom := headlessChromium(t, bin, base+"/#token="+token, "--dump-dom")
	for _, name := range []string{"n1", "n2"} {
		if !strings.Contains(dom, `<span class="mono member-name">`+name+`</span>`) {
			t.Errorf("the overview does not list member %s:\n%s", name, dom)
		}
	}
	if !strings.Contains(dom, `data-job="`+id+`"`) || !strings.Contains(dom, ">"+id+"</a>") {
		t.Errorf("the overview does not show job %s:\n%s", id, dom)
	}
	if strings.Contains(dom, token) {
		t.Error("the token is in the page")
	}
	if got := lossPoints(t, dom); got != steps {
		t.Errorf("the overview's loss curve has %d points, want %d", got, steps)
	}

	dom = headlessChromium(t, bin, base+"/jobs/"+id+"#token="+token, "--dump-dom")
	if !strings.Contains(dom, `<span class="mono job-id">`+id+`</span>`) {
		t.Errorf("the job's page does not name job %s:\n%s", id, dom)
	}
	if got := lossPoints(t, dom); got != steps {
		t.Errorf("the job's loss curve has %d points, want %d", got, steps)
	}
	// The base model's held-out loss and one per evaluation.
	if m := regexp.MustCompile(`class="heldout-line" data-points="(\d+)"`).FindStringSubmatch(dom); m == nil || m[1] != strconv.Itoa(1+steps/evalEvery) {
		t.Errorf("held-out curve %v, want %d points", m, 1+steps/evalEvery)
	}
	if !strings.Contains(dom, "Checkpoints (2)") {
		t.Errorf("the job's page does not list its 2 checkpoints:\n%s", dom)
	}
	if dir := os.Getenv("BRAID_CONSOLE_SCREENSHOT"); dir != "" { // for a person to look at
		shot := filepath.Join(dir, "braid-console-job.png")
		headlessChromium(t, bin, base+"/jobs/"+id+"#token="+token, "--screenshot="+shot)
		headlessChromium(t, bin, base+"/#token="+token, "--screenshot="+filepath.Join(dir, "braid-console.png"))
		t.Logf("screenshots in %s", dir)
	}

	for _, path := range []string{"/", "/?token=" + token} {
		dom = headlessChromium(t, bin, base+path, "--dump-dom")
		if !strings.Contains(dom, `id="login-token"`) || !regexp.MustCompile(`<section id="login">`).MatchString(dom) ||
			!strings.Contains(dom, `<div id="app" hidden="">`) || strings.Contains(dom, "member-name") || strings.Contains(dom, id) {
			t.Errorf("%s: want the login form and no data:\n%s", path, dom)
		}
	}
}

// lossPoints is the number of points of the first loss curve in dom,
// counted in the polyline's own points (and checked against its
// data-points).
func lossPoints(t *testing.T, dom string) int {
	t.Helper()
	m := regexp.MustCompile(`<polyline class="loss-line" data-points="(\d+)" points="([^"]*)"`).FindStringSubmatch(dom)
	if m == nil {
		t.Errorf("no loss curve in the page")
		return 0
	}
	n := len(strings.Fields(m[2]))
	if fmt.Sprint(n) != m[1] {
		t.Errorf("the loss curve says %s points and draws %d", m[1], n)
	}
	return n
}
