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
	pr, pw := io.Pipe()
	app := newApp()
	app.Writer, app.ErrWriter = pw, io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runApp(ctx, app, []string{"braid", "serve", "--model", "../../model/testdata/hf_tiny", "--adapter", "../../model/testdata/lora_tiny",
			"--addr", "127.0.0.1:0", "--token-file", tokenFile, "--name", "tiny", "--threads", "1"})
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("no first line: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, pr)
	var url string
	if _, err := fmt.Sscanf(line, "serving tiny on %s", &url); err != nil {
		t.Fatalf("first line %q: %v", line, err)
	}
	post := func(token string) *http.Response {
		req, _ := http.NewRequest("POST", url+"/completions", strings.NewReader(`{"model":"tiny","prompt":[1,2,3],"max_tokens":4,"temperature":0}`))
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := post("tok-123")
	var c struct {
		Usage struct {
			PromptTokens int `json:"prompt_tokens"`
		} `json:"usage"`
	}
	json.NewDecoder(res.Body).Decode(&c)
	res.Body.Close()
	if res.StatusCode != 200 || c.Usage.PromptTokens != 3 {
		t.Errorf("completion: %d, usage %+v", res.StatusCode, c.Usage)
	}
	if res := post("wrong"); res.StatusCode != 401 {
		t.Errorf("a wrong token: %d", res.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve ended with %v", err)
	}
}
