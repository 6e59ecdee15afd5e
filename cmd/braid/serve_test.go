package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRefuses: braid serve refuses, before it listens, a device other
// than the CPU (by name), a chat template the model's tokenizer cannot
// encode, and an unreadable token file.
func TestServeRefuses(t *testing.T) {
	base := filepath.Join("..", "..", "models", "base-en")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--device", "cuda"}, "--device cuda: braid serve computes on the CPU only"},
		{[]string{"--chat-template", "llama3"}, "tokenizer byte has no control tokens"},
		{[]string{"--chat-template", "jinja"}, "--chat-template"},
		{[]string{"--token-file", filepath.Join(t.TempDir(), "missing")}, "--token-file"},
		{[]string{"--job", "j1"}, "give --model DIR or --job ID"},
	} {
		_, err := run(t, append([]string{"serve", "--model", base, "--addr", "127.0.0.1:0"}, tc.args...)...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

// TestServeRuns: braid serve with an adapter and a token file answers a
// completion with the token and refuses one without, then stops cleanly
// when its context ends (Ctrl-C).
func TestServeRuns(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	url, stop := startServe(t, "tiny", "--model", "../../model/testdata/hf_tiny", "--adapter", "../../model/testdata/lora_tiny",
		"--token-file", tokenFile, "--name", "tiny")
	if code, prompt := complete(t, url, "tok-123", "tiny"); code != 200 || prompt != 3 {
		t.Errorf("completion: %d, %d prompt tokens", code, prompt)
	}
	if code, _ := complete(t, url, "wrong", "tiny"); code != 401 {
		t.Errorf("a wrong token: %d", code)
	}
	stop()
}

// TestServeJob: braid serve --job serves the latest checkpoint of a full
// fine-tuning job and of a LoRA job (its base with the adapter), fetched
// from the node; a job without a checkpoint and an unknown job are refused.
func TestServeJob(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node and runs jobs")
	}
	api := startCLINode(t, "serve-job-token") // sets BRAID_TOKEN, which --api-token reads
	pushDocs(t, api)
	base := byteBase(t, 16)
	for _, extra := range [][]string{nil, {"--lora-rank", "2"}} {
		id := strings.TrimSpace(mustRunOut(t, append([]string{"job", "submit", "--api", api, "--model", base, "--dataset", "docs", "--steps", "2",
			"--global-batch", "2", "--micro-batch", "1", "--replicas", "1"}, extra...)...))
		waitJob(t, api, id)
		url, stop := startServe(t, "job-"+id, "--job", id, "--api", api, "--token", "k")
		if code, prompt := complete(t, url, "k", "job-"+id); code != 200 || prompt != 3 {
			t.Errorf("job %s %v: completion %d, %d prompt tokens", id, extra, code, prompt)
		}
		stop()
	}
	if _, err := run(t, "serve", "--job", "nope", "--api", api, "--token", "k", "--addr", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "no job nope") {
		t.Errorf("an unknown job: %v", err)
	}
}

// startServe runs braid serve with args in the background until stop,
// which fails the test if serve ended with an error; it returns the API's
// base URL, read from serve's first line.
func startServe(t *testing.T, name string, args ...string) (url string, stop func()) {
	t.Helper()
	pr, pw := io.Pipe()
	app := newApp()
	app.Writer, app.ErrWriter = pw, io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runApp(ctx, app, append([]string{"braid", "serve", "--addr", "127.0.0.1:0", "--threads", "1"}, args...))
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		cancel()
		t.Fatalf("no first line: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	if _, err := fmt.Sscanf(line, "serving "+name+" on %s", &url); err != nil {
		cancel()
		t.Fatalf("first line %q: %v", line, err)
	}
	return url, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve ended with %v", err)
		}
	}
}

// complete posts a completion of three prompt ids with token to the API at
// url and returns the status and the prompt tokens the usage counts.
func complete(t *testing.T, url, token, name string) (status, promptTokens int) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/completions", strings.NewReader(`{"model":"`+name+`","prompt":[1,2,3],"max_tokens":4,"temperature":0}`))
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var c struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	json.NewDecoder(res.Body).Decode(&c)
	return res.StatusCode, c.Usage.PromptTokens
}
