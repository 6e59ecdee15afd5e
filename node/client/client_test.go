package client_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/model"
	"github.com/braidml/braid/node"
	"github.com/braidml/braid/node/client"
	"github.com/braidml/braid/node/nodetest"
	"github.com/braidml/braid/node/push"
	"github.com/braidml/braid/shard"
	"github.com/braidml/braid/transport/pki"
)

// testToken is the token of the APIs these tests start.
const testToken = "5bd1e9955bd1e9955bd1e9955bd1e9955bd1e9955bd1e9955bd1e9955bd1e995"

// startAPI serves the node's real API (token, Host and JSON checks) on
// loopback, with status and the endpoints routes adds, and returns its
// http:// URL.
func startAPI(t *testing.T, status node.Status, routes func(*http.ServeMux)) string {
	t.Helper()
	return startAPIConfig(t, node.APIConfig{Routes: routes}, status)
}

func startAPIConfig(t *testing.T, cfg node.APIConfig, status node.Status) string {
	t.Helper()
	cfg.Addr, cfg.Token = "127.0.0.1:0", testToken
	a, err := node.StartAPI(cfg, func() node.Status { return status }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	scheme := "http"
	if cfg.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + a.Addr()
}

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// writeJSONAnswer answers v as the node does.
func writeJSONAnswer(w http.ResponseWriter, v string) {
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, v)
}

// A call decodes the node's answer into the node's own type, field for
// field.
func TestStatusDecodesTheNodesType(t *testing.T) {
	want := node.Status{Self: "n1", Leader: "n2", Term: 3, Epoch: node.EpochStatus{ID: 7, Members: []string{"n1", "n2"}},
		Members: []node.MemberStatus{{Name: "n1", State: "alive", Addr: "10.0.0.1:7946", Cores: 8, Memory: 1 << 34, Voter: true},
			{Name: "n2", State: "suspect", Addr: "10.0.0.2:7946", GPUs: 2, Device: "cuda"}},
		Ring: []string{"n2", "n1"}}
	c := newClient(t, client.Config{URL: startAPI(t, want, nil), Token: testToken})
	got, err := c.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status %+v, want %+v", got, want)
	}
}

// An answer other than 200 is an *APIError with the method, the URL, the
// status and the node's message; a missing or wrong token is a 401 one.
func TestAPIError(t *testing.T) {
	url := startAPI(t, node.Status{}, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "braid: no such job "+r.PathValue("id"), http.StatusNotFound)
		})
		mux.HandleFunc("POST /v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "braid: the job has ended", http.StatusConflict)
		})
	})
	for _, c := range []struct {
		name    string
		token   string
		call    func(*client.Client) error
		method  string
		path    string
		status  int
		message string // in APIError.Message
	}{
		{"not found", testToken, func(c *client.Client) error { _, err := c.Job(context.Background(), "j1"); return err },
			http.MethodGet, "/v1/jobs/j1", http.StatusNotFound, "braid: no such job j1"},
		{"conflict", testToken, func(c *client.Client) error { _, err := c.CancelJob(context.Background(), "j1"); return err },
			http.MethodPost, "/v1/jobs/j1/cancel", http.StatusConflict, "braid: the job has ended"},
		{"no token", "", func(c *client.Client) error { _, err := c.Status(context.Background()); return err },
			http.MethodGet, "/v1/status", http.StatusUnauthorized, "missing or wrong bearer token"},
		{"wrong token", "wrong", func(c *client.Client) error { _, err := c.Jobs(context.Background()); return err },
			http.MethodGet, "/v1/jobs", http.StatusUnauthorized, "missing or wrong bearer token"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.call(newClient(t, client.Config{URL: url, Token: c.token}))
			e, ok := errors.AsType[*client.APIError](err)
			if !ok {
				t.Fatalf("error %v (%T), want an *APIError", err, err)
			}
			if e.Method != c.method || e.URL != url+c.path || e.StatusCode != c.status || !strings.Contains(e.Message, c.message) {
				t.Errorf("%+v, want %s %s%s, %d, a message with %q", *e, c.method, url, c.path, c.status, c.message)
			}
			if e.Message != strings.TrimSpace(e.Message) {
				t.Errorf("message %q is not trimmed", e.Message)
			}
			if s := err.Error(); !strings.Contains(s, fmt.Sprint(c.status)) || !strings.Contains(s, c.message) {
				t.Errorf("error %q lacks the status or the message", s)
			}
		})
	}
}

// A node that does not answer is ErrUnreachable, wrapping the network
// error and naming the URL; no APIError.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String()
	ln.Close()
	_, err = newClient(t, client.Config{URL: url, Token: testToken}).Status(context.Background())
	if !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), url) {
		t.Errorf("error %v, want ErrUnreachable naming %s", err, url)
	}
	if _, ok := errors.AsType[*net.OpError](err); !ok {
		t.Errorf("error %v does not wrap the network error", err)
	}
	if _, ok := errors.AsType[*client.APIError](err); ok {
		t.Errorf("error %v is an APIError", err)
	}
}

// New refuses what is not an API URL, saying what to write instead: a URL
// without a scheme gets it spelt out.
func TestNewRefusesBadURLs(t *testing.T) {
	for _, c := range []struct {
		url, want string
	}{
		{"127.0.0.1:7000", "write http://127.0.0.1:7000 or, for a node that serves TLS, https://127.0.0.1:7000"},
		{"localhost:7950", "write http://localhost:7950"},
		{"node1", "write http://node1"},
		{"", "want http://HOST:PORT or https://HOST:PORT"},
		{"ftp://127.0.0.1:7000", "want http://HOST:PORT or https://HOST:PORT"},
		{"http://", "want http://HOST:PORT or https://HOST:PORT"},
		{"http://127.0.0.1:7000/?x=1", "no user, query or fragment"},
	} {
		_, err := client.New(client.Config{URL: c.url})
		if !errors.Is(err, client.ErrURL) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%q): %v, want ErrURL saying %q", c.url, err, c.want)
		}
	}
	if _, err := client.New(client.Config{URL: "https://127.0.0.1:7000"}); err == nil || !strings.Contains(err.Error(), "CAFile") {
		t.Errorf("https without a CA: %v, want an error naming CAFile", err)
	}
	if _, err := client.New(client.Config{URL: "http://127.0.0.1:7000", Timeouts: client.Timeouts{Read: 1}}); err == nil ||
		!strings.Contains(err.Error(), "Timeouts.SubmitJob") {
		t.Errorf("a zero timeout among others: %v, want an error naming it", err)
	}
	for _, u := range []string{"http://127.0.0.1:7000", "https://[::1]:7000/", "http://node1/braid"} {
		if err := (client.Config{URL: u, CAFile: "ca.pem"}).Validate(); err != nil {
			t.Errorf("Validate(%q): %v", u, err)
		}
	}
}

// Every segment the caller gives is escaped: ids of random odd characters
// reach the node's route as they were given, and never another route.
func TestPathSegmentsAreEscaped(t *testing.T) {
	got := make(chan [2]string, 1)
	url := startAPI(t, node.Status{}, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
			got <- [2]string{r.PathValue("id"), ""}
			writeJSONAnswer(w, `{"id": "ok"}`)
		})
		mux.HandleFunc("GET /v1/datasets/{name}", func(w http.ResponseWriter, r *http.Request) {
			got <- [2]string{"", r.PathValue("name")}
			writeJSONAnswer(w, `{"name": "ok"}`)
		})
	})
	c := newClient(t, client.Config{URL: url + "/", Token: testToken})
	const odd = "/?#% .&=+;:@!$'()*,~\\\"<>[]{}|^`é\t"
	rng := rand.New(rand.NewPCG(1, 2))
	ids := []string{"a/b", "../status", "x?y=1#z", "100%", "with space", ".", ".."}
	for range 50 {
		b := make([]byte, 1+rng.IntN(12))
		for i := range b {
			b[i] = "abc"[rng.IntN(3)]
			if rng.IntN(2) == 0 {
				b[i] = odd[rng.IntN(len(odd))]
			}
		}
		ids = append(ids, string(b))
	}
	for _, id := range ids {
		if _, err := c.Job(context.Background(), id); err != nil {
			t.Errorf("Job(%q): %v", id, err)
			continue
		}
		if g := <-got; g[0] != id {
			t.Errorf("Job(%q) reached the node as %q", id, g[0])
		}
		if _, err := c.Dataset(context.Background(), id); err != nil {
			t.Errorf("Dataset(%q): %v", id, err)
			continue
		}
		if g := <-got; g[1] != id {
			t.Errorf("Dataset(%q) reached the node as %q", id, g[1])
		}
	}
}

// DownloadJobFile writes the file when its bytes hash to the node's
// X-Braid-Sha256, and otherwise leaves the path as it was, with no
// temporary file beside it.
func TestDownloadJobFile(t *testing.T) {
	content := []byte(strings.Repeat("weights ", 10_000))
	sum := sha256.Sum256(content)
	url := startAPI(t, node.Status{}, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/jobs/{id}/files/{name}", func(w http.ResponseWriter, r *http.Request) {
			body := content
			switch r.PathValue("id") {
			case "corrupt": // a byte flipped on the way
				body = append([]byte(nil), content...)
				body[len(body)/2] ^= 1
			case "none":
				http.Error(w, "braid: the job has no checkpoint yet", http.StatusNotFound)
				return
			}
			w.Header().Set("X-Braid-Sha256", hex.EncodeToString(sum[:]))
			w.Write(body)
		})
	})
	c := newClient(t, client.Config{URL: url, Token: testToken})
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")

	if err := c.DownloadJobFile(context.Background(), "good", "model.safetensors", path); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != string(content) {
		t.Fatalf("downloaded %d bytes (%v), want %d", len(b), err, len(content))
	}

	fresh := filepath.Join(dir, "fresh.safetensors")
	if err := c.DownloadJobFile(context.Background(), "corrupt", "model.safetensors", fresh); !errors.Is(err, client.ErrHashMismatch) {
		t.Errorf("a download that does not hash to the header: %v, want ErrHashMismatch", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a mismatching download left %s behind: %v", fresh, err)
	}
	if err := c.DownloadJobFile(context.Background(), "corrupt", "model.safetensors", path); !errors.Is(err, client.ErrHashMismatch) {
		t.Errorf("a mismatching download over a file: %v, want ErrHashMismatch", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(content) {
		t.Error("a mismatching download changed the file it would have replaced")
	}
	if e, ok := errors.AsType[*client.APIError](c.DownloadJobFile(context.Background(), "none", "config.json", fresh)); !ok ||
		e.StatusCode != http.StatusNotFound || e.Message != "braid: the job has no checkpoint yet" {
		t.Errorf("a job without a checkpoint: %v", e)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %v, want only model.safetensors", entries)
	}
}

// Writes carry the JSON the node requires (its 415 would show otherwise),
// and each request's body is the caller's value.
func TestWritesAreJSON(t *testing.T) {
	url := startAPI(t, node.Status{}, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /v1/jobs", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if !strings.Contains(string(b), `"dataset":"legal"`) {
				http.Error(w, "body "+string(b), http.StatusBadRequest)
				return
			}
			writeJSONAnswer(w, `{"id": "j1", "state": "submitted", "submitted_by": "n1"}`)
		})
		mux.HandleFunc("POST /v1/jobs/{id}/cancel", func(w http.ResponseWriter, r *http.Request) {
			writeJSONAnswer(w, fmt.Sprintf(`{"id": %q, "state": "cancelled"}`, r.PathValue("id")))
		})
	})
	c := newClient(t, client.Config{URL: url, Token: testToken})
	j, err := c.SubmitJob(context.Background(), node.JobRequest{Dataset: "legal", Steps: 1, GlobalBatch: 1})
	if err != nil || j.ID != "j1" || j.State != coordinator.JobSubmitted || j.SubmittedBy != "n1" {
		t.Errorf("SubmitJob: %+v, %v", j, err)
	}
	j, err = c.CancelJob(context.Background(), "j1")
	if err != nil || j.ID != "j1" || j.State != coordinator.JobCancelled {
		t.Errorf("CancelJob: %+v, %v", j, err)
	}
}

// BenchAllReduce passes each row on as it comes and returns the node's
// error after the rows that preceded it.
func TestBenchAllReduce(t *testing.T) {
	rows := []allreduce.BenchRow{{Nodes: 3, Bytes: 1 << 20, Dtype: "fp32", TimeMS: 1.5}, {Nodes: 3, Bytes: 1 << 22, Dtype: "fp32", TimeMS: 4}}
	var fail error
	url := startAPIConfig(t, node.APIConfig{Bench: func(ctx context.Context, plan node.BenchPlan, emit func(allreduce.BenchRow)) error {
		for _, r := range rows {
			emit(r)
		}
		return fail
	}}, node.Status{})
	c := newClient(t, client.Config{URL: url, Token: testToken})
	plan := node.BenchPlan{Sizes: []int{1 << 20, 1 << 22}, Dtype: "fp32", Iters: 1}
	var got []allreduce.BenchRow
	if err := c.BenchAllReduce(context.Background(), plan, func(r allreduce.BenchRow) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rows) {
		t.Errorf("rows %+v, want %+v", got, rows)
	}
	fail, got = errors.New("a member left"), nil
	err := c.BenchAllReduce(context.Background(), plan, func(r allreduce.BenchRow) { got = append(got, r) })
	if err == nil || !strings.Contains(err.Error(), "a member left") || len(got) != len(rows) {
		t.Errorf("a failed run: %v after %d rows, want the node's error after %d", err, len(got), len(rows))
	}
	plan.Dtype = "fp7"
	if e, ok := errors.AsType[*client.APIError](c.BenchAllReduce(context.Background(), plan, func(allreduce.BenchRow) {})); !ok ||
		e.StatusCode != http.StatusBadRequest {
		t.Errorf("a plan the node refuses: %v, want a 400 APIError", e)
	}
}

// newCA makes a cluster CA and returns its directory and ca.pem.
func newCA(t *testing.T) (dir, caFile string) {
	t.Helper()
	dir = t.TempDir()
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir, filepath.Join(dir, pki.CAFile)
}

// Over https the client trusts the cluster CA only and a certificate for
// the URL's host (or for Config.Node); a URL of the wrong scheme is
// ErrScheme, not an unreachable node.
func TestTLS(t *testing.T) {
	caDir, ca := newCA(t)
	_, otherCA := newCA(t)
	serve := func(name string, hosts ...string) string {
		if err := pki.Issue(caDir, name, hosts, time.Hour); err != nil {
			t.Fatal(err)
		}
		creds, err := pki.LoadNode(caDir, name)
		if err != nil {
			t.Fatal(err)
		}
		return startAPIConfig(t, node.APIConfig{TLS: node.APIServerTLS(creds)}, node.Status{Self: name})
	}
	forHost, forOther := serve("n1", "127.0.0.1"), serve("n2", "n2.example")
	plain := startAPI(t, node.Status{Self: "plain"}, nil)
	for _, c := range []struct {
		name string
		cfg  client.Config
		self string // the answer's, when it succeeds
		err  error  // else the error it wraps
		want string // in the error
	}{
		{"the cluster CA and the host", client.Config{URL: forHost, CAFile: ca}, "n1", nil, ""},
		{"another CA", client.Config{URL: forHost, CAFile: otherCA}, "", client.ErrCert, "against the CA in " + otherCA},
		{"a certificate for another host", client.Config{URL: forOther, CAFile: ca}, "", client.ErrCert, `it is node "n2"'s, for hosts [n2.example]`},
		{"the node known to listen there", client.Config{URL: forOther, CAFile: ca, Node: "n2"}, "n2", nil, ""},
		{"another node known to listen there", client.Config{URL: forOther, CAFile: ca, Node: "n3"}, "", client.ErrCert, "for 127.0.0.1"},
		{"http to an HTTPS API", client.Config{URL: strings.Replace(forHost, "https:", "http:", 1)}, "", client.ErrScheme, "serves HTTPS"},
		{"https to a plain API", client.Config{URL: strings.Replace(plain, "http:", "https:", 1), CAFile: ca}, "", client.ErrScheme, "serves plain HTTP"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Token = testToken
			st, err := newClient(t, c.cfg).Status(context.Background())
			switch {
			case c.err == nil && (err != nil || st.Self != c.self):
				t.Errorf("status %q, %v; want %q", st.Self, err, c.self)
			case c.err != nil && (!errors.Is(err, c.err) || !strings.Contains(err.Error(), c.want)):
				t.Errorf("error %v, want %v saying %q", err, c.err, c.want)
			case errors.Is(err, client.ErrUnreachable):
				t.Errorf("error %v: the node was reached", err)
			}
		})
	}
	if _, err := client.New(client.Config{URL: forHost, CAFile: filepath.Join(caDir, "missing.pem")}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing CA file: %v", err)
	}
}

// Against a real node: the types of each endpoint round-trip, a dataset
// pushed through PushTarget registers, and a name the node does not know
// is its 404.
func TestAgainstANode(t *testing.T) {
	cl := nodetest.NewCluster(t, 1, nodetest.WithAPI())
	cl.WaitLeader()
	n := cl.Node("n1")
	token, err := node.ReadTokenFile(n.APITokenFile())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, client.Config{URL: "http://" + n.APIAddr(), Token: token})
	ctx := context.Background()

	st, err := c.Status(ctx)
	if err != nil || st.Self != "n1" || st.Leader != "n1" {
		t.Fatalf("status %+v, %v", st, err)
	}
	dir := prepareDataset(t)
	res, err := push.Dataset(ctx, c.PushTarget(), dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if has, err := c.HasBlob(ctx, res.Manifest); !has || err != nil {
		t.Errorf("HasBlob of the pushed manifest: %v, %v", has, err)
	}
	if has, err := c.HasBlob(ctx, strings.Repeat("ab", 32)); has || err != nil {
		t.Errorf("HasBlob of an object never sent: %v, %v", has, err)
	}
	d, err := c.CreateDataset(ctx, node.AddDatasetRequest{Manifest: res.Manifest, Name: "notes", Local: true})
	if err != nil || d.Name != "notes" || !d.Local || len(d.Shards) != len(res.Dataset.Shards) {
		t.Fatalf("CreateDataset: %+v, %v", d, err)
	}
	if ds, err := c.Datasets(ctx); err != nil || len(ds) != 1 || ds[0].ID != d.ID {
		t.Errorf("Datasets: %+v, %v", ds, err)
	}
	if dst, err := c.Dataset(ctx, "notes"); err != nil || dst.ID != d.ID || len(dst.Shards) != len(d.Shards) {
		t.Errorf("Dataset: %+v, %v", dst, err)
	}
	if jobs, err := c.Jobs(ctx); err != nil || len(jobs) != 0 {
		t.Errorf("Jobs: %+v, %v", jobs, err)
	}
	if _, err := c.Job(ctx, "nope"); !isStatus(err, http.StatusNotFound) {
		t.Errorf("Job of an unknown id: %v, want a 404 APIError", err)
	}
	if _, err := c.CreateDataset(ctx, node.AddDatasetRequest{Manifest: strings.Repeat("ab", 32)}); !isStatus(err, http.StatusUnprocessableEntity) {
		t.Errorf("CreateDataset of a manifest never sent: %v, want a 422 APIError", err)
	}
	if cs, err := c.Certs(ctx); err != nil {
		t.Errorf("Certs: %+v, %v", cs, err)
	}
}

func isStatus(err error, code int) bool {
	e, ok := errors.AsType[*client.APIError](err)
	return ok && e.StatusCode == code
}

// prepareDataset prepares a few documents as a dataset of small shards.
func prepareDataset(t *testing.T) string {
	t.Helper()
	in := t.TempDir()
	for i := range 12 {
		text := strings.Repeat(fmt.Sprintf("note %d says something about the matter at hand. ", i), 30)
		if err := os.WriteFile(filepath.Join(in, fmt.Sprintf("doc%02d.txt", i)), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := shard.DefaultConfig()
	cfg.Inputs, cfg.Out, cfg.Tokenizer = []string{in}, filepath.Join(t.TempDir(), "ds"), model.ByteTokenizer{}
	cfg.SeqLen, cfg.ShardBytes, cfg.Holdout = 64, 4<<10, 0.1
	res, err := shard.Prepare(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res.Dir
}
