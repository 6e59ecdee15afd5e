package nodetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
	"github.com/braidml/braid/node"
)

// apiClient talks to one node's HTTP API with its token.
type apiClient struct {
	t     *testing.T
	base  string
	token string
	http  *http.Client
}

func newAPIClient(t *testing.T, n *node.Node) *apiClient {
	t.Helper()
	token, err := node.ReadTokenFile(n.APITokenFile())
	if err != nil {
		t.Fatal(err)
	}
	// ExpectContinueTimeout: a PUT asks before it sends its body, so a
	// node that answers without reading it is seen not to.
	tr := &http.Transport{ExpectContinueTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return &apiClient{t: t, base: "http://" + n.APIAddr(), token: token, http: &http.Client{Transport: tr}}
}

// do sends a request and returns the status and the body's text.
func (a *apiClient) do(method, path, contentType string, body io.Reader, contentLength int64) (int, string) {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, body)
	if err != nil {
		a.t.Fatal(err)
	}
	req.ContentLength = contentLength
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Content-Type", contentType)
	if method == http.MethodPut {
		req.Header.Set("Expect", "100-continue")
	}
	resp, err := a.http.Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (a *apiClient) put(hash string, body []byte) (int, string) {
	return a.do(http.MethodPut, "/v1/blobs/"+hash, "application/octet-stream", bytes.NewReader(body), int64(len(body)))
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// storeLeftovers lists what the node's store holds in tmp/ and objects/.
func storeLeftovers(t *testing.T, c *Cluster, name string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"tmp", "objects"} {
		entries, err := os.ReadDir(filepath.Join(c.DataDir(name), "store", sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

// noBody fails the test if the client ever sends the body.
type noBody struct{ t *testing.T }

func (b noBody) Read([]byte) (int, error) {
	b.t.Error("the node read the body of an upload it already held")
	return 0, io.EOF
}

// The upload endpoint installs an object only when its bytes hash to its
// name and fit the limit; a refused upload leaves nothing in the store;
// an object already held is answered without reading the body; requests
// that name a path on the node are refused as unknown fields; and the node
// stays healthy through all of it.
func TestUploadRefusals(t *testing.T) {
	c := NewCluster(t, 1, WithAPI(), WithMaxUploadBytes(1000))
	c.WaitLeader()
	api := newAPIClient(t, c.Node("n1"))
	obj := bytes.Repeat([]byte("braid "), 100)
	h := hashOf(obj)
	big := bytes.Repeat([]byte("x"), 1001)

	for _, tc := range []struct {
		name   string
		hash   string
		body   io.Reader
		length int64 // -1: chunked, no Content-Length
		code   int
		says   string
	}{
		{"bytes that do not match the name", hashOf([]byte("other")), bytes.NewReader(obj), int64(len(obj)), http.StatusUnprocessableEntity, "does not match"},
		{"over the limit, announced", hashOf(big), bytes.NewReader(big), int64(len(big)), http.StatusRequestEntityTooLarge, "more than the 1000"},
		{"over the limit, chunked", hashOf(big), io.MultiReader(bytes.NewReader(big)), -1, http.StatusRequestEntityTooLarge, "more than the 1000"},
		{"a name that is not a hash", "..%2F..%2Fetc%2Fpasswd", bytes.NewReader(obj), int64(len(obj)), http.StatusBadRequest, "not a SHA-256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := api.do(http.MethodPut, "/v1/blobs/"+tc.hash, "application/octet-stream", tc.body, tc.length)
			if code != tc.code || !strings.Contains(msg, tc.says) {
				t.Fatalf("PUT: %d %q, want %d saying %q", code, msg, tc.code, tc.says)
			}
			if left := storeLeftovers(t, c, "n1"); len(left) != 0 {
				t.Fatalf("a refused upload left %v", left)
			}
		})
	}
	if code, msg := api.do(http.MethodPut, "/v1/blobs/"+h, "application/json", bytes.NewReader(obj), int64(len(obj))); code != http.StatusUnsupportedMediaType {
		t.Errorf("an upload not sent as octet-stream: %d %s", code, msg)
	}

	// A good upload is stored; sending it again reads nothing.
	if code, msg := api.put(h, obj); code != http.StatusOK || !c.Node("n1").HasObject(h) {
		t.Fatalf("a good upload: %d %s", code, msg)
	}
	var again node.BlobPut
	code, msg := api.do(http.MethodPut, "/v1/blobs/"+h, "application/octet-stream", noBody{t}, int64(len(obj)))
	if code != http.StatusOK || json.Unmarshal([]byte(msg), &again) != nil || !again.Present || again.Size != int64(len(obj)) {
		t.Fatalf("uploading a held object again: %d %s", code, msg)
	}
	if code, _ := api.do(http.MethodHead, "/v1/blobs/"+h, "", nil, 0); code != http.StatusOK {
		t.Errorf("HEAD of a held object: %d", code)
	}
	if code, _ := api.do(http.MethodHead, "/v1/blobs/"+hashOf(big), "", nil, 0); code != http.StatusNotFound {
		t.Errorf("HEAD of a missing object: %d", code)
	}

	// The API takes no paths: the fields that used to name one are refused.
	for path, body := range map[string]string{
		"/v1/datasets": `{"dir": "/etc"}`,
		"/v1/jobs":     `{"base": "/root/models/base", "dataset": "d", "steps": 1, "global_batch": 1}`,
	} {
		code, msg := api.do(http.MethodPost, path, "application/json", strings.NewReader(body), int64(len(body)))
		if code != http.StatusBadRequest || !(strings.Contains(msg, "unknown field") || strings.Contains(msg, "cannot unmarshal")) {
			t.Errorf("POST %s %s: %d %q, want 400", path, body, code, msg)
		}
	}
	// A manifest that is not uploaded, or an object that is not a
	// manifest, is refused by hash, and quotes nothing of the object.
	for hash, says := range map[string]string{
		hashOf(big): "not on this node",
		h:           "bad manifest",
	} {
		body := `{"manifest": "` + hash + `"}`
		code, msg := api.do(http.MethodPost, "/v1/datasets", "application/json", strings.NewReader(body), int64(len(body)))
		if code != http.StatusUnprocessableEntity || !strings.Contains(msg, hash[:12]) || !strings.Contains(msg, says) || strings.Contains(msg, "braid braid") || strings.Contains(msg, "'b'") {
			t.Errorf("registering %.12s: %d %q, want 422 naming it and saying %q", hash, code, msg, says)
		}
	}
	if code, _ := api.do(http.MethodGet, "/v1/health", "", nil, 0); code != http.StatusOK {
		t.Errorf("health after the refusals: %d", code)
	}
}

// A remote client: nothing of the dataset or the base model stays on disk
// where the client read it, and the job trains all the same — the nodes
// read only what was uploaded.
func TestPushedDatasetTrainsWithoutTheClientsFiles(t *testing.T) {
	c := NewCluster(t, 2)
	c.WaitEpoch(func(e coordinator.Epoch) bool { return len(e.Members) == 2 })
	dir, _ := prepareDataset(t, "legal", 30)
	if _, err := c.PushDataset("n1", dir, node.DatasetOptions{}); err != nil {
		t.Fatal(err)
	}
	baseDir := baseModel(t)
	base, err := c.PushModel("n2", baseDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, baseDir} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	j, err := c.Node("n2").SubmitJob(context.Background(), node.JobRequest{Base: base, Dataset: "legal", Steps: 6, GlobalBatch: 4, MicroBatch: 2, HashEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	if js := waitJob(c, "n1", j.ID, final); js.State != coordinator.JobCompleted {
		t.Fatalf("job %s: %s", js.State, js.Error)
	}
}
