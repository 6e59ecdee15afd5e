package serve_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/serve"
)

// TestMaxTokensOverflow: a max_tokens near MaxInt, whose sum with the
// prompt's length wraps negative, is a 400 in OpenAI's error shape (not a
// panic making the completion's event channel), over HTTP and on the
// Engine.
func TestMaxTokensOverflow(t *testing.T) {
	h := startChat(t)
	for _, tc := range []struct{ path, body string }{
		{"completions", `{"model": "tiny-chat", "prompt": "hi", "max_tokens": 9223372036854775807}`},
		{"completions", `{"model": "tiny-chat", "prompt": "hi", "max_tokens": 9223372036854775806, "stream": true}`},
		{"chat/completions", `{"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9223372036854775807}`},
		{"chat/completions", `{"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 9223372036854775807}`},
	} {
		req, _ := http.NewRequest("POST", h.url+tc.path, strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		var e struct {
			Error struct {
				Message, Type string
				Code          *string
			}
		}
		err = json.NewDecoder(res.Body).Decode(&e)
		res.Body.Close()
		if res.StatusCode != 400 || err != nil || e.Error.Type != "invalid_request_error" || e.Error.Code == nil || *e.Error.Code != "context_length_exceeded" {
			t.Errorf("%s: %d %+v (%v), want 400 context_length_exceeded", tc.body, res.StatusCode, e.Error, err)
		}
	}
	for _, mt := range []int{math.MaxInt, math.MaxInt - 1, h.e.MaxContext()} {
		_, err := h.e.Submit(context.Background(), serve.Request{Prompt: []int32{'a', 'b'}, Sample: model.SampleOptions{MaxTokens: mt, Temperature: 1}})
		if !errors.Is(err, serve.ErrContextLength) {
			t.Errorf("Submit with MaxTokens %d: %v, want ErrContextLength", mt, err)
		}
	}
}
