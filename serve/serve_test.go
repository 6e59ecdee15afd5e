package serve_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"go.uber.org/goleak"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/model/chat"
	"github.com/braidml/braid/serve"
)

// TestMain checks that no test leaves a goroutine behind (the engine's
// scheduler, the server's connections) but the kernels' worker pool,
// which lives as long as the process.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/braidml/braid/kernels.startPool.func1"))
}

const (
	testToken = "s3cret-token"
	baseDir   = "../models/base-en" // the bundled base model: byte tokenizer, 256 tokens of context
)

// harness is a server on loopback in front of an engine, and an official
// OpenAI client pointed at it.
type harness struct {
	e      *serve.Engine
	s      *serve.Server
	client openai.Client
	url    string
	name   string
}

// startBase serves the bundled base model.
func startBase(t *testing.T, cfg serve.EngineConfig) *harness {
	t.Helper()
	m, tok, err := model.Load(baseDir, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, m, tok, nil, "base-en", cfg)
}

// startChat serves a small random byte-level model with the ChatML
// template (the base model has none; the answers are noise, the protocol
// is what is tested).
func startChat(t *testing.T) *harness {
	t.Helper()
	tok := chat.ByteTokenizer{}
	c := model.Config{Vocab: tok.Vocab(), Context: 128, Dim: 32, Layers: 2, Heads: 4}
	m, err := model.NewInference(c, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(1)
	tmpl, err := chat.ByName(chat.ChatMLName)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := chat.NewEncoder(tok, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	return start(t, m, tok, enc, "tiny-chat", serve.DefaultEngineConfig())
}

func start(t *testing.T, m *model.Model, tok model.Tokenizer, enc *chat.Encoder, name string, cfg serve.EngineConfig) *harness {
	t.Helper()
	e, err := serve.NewEngine(m, tok, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := serve.Start(serve.Config{Addr: "127.0.0.1:0", Token: testToken, ModelName: name, Chat: enc, Seed: 1}, e)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	url := "http://" + s.Addr().String() + "/v1/"
	t.Cleanup(func() {
		s.Close(context.Background())
		e.Close()
	})
	return &harness{e: e, s: s, url: url, name: name,
		client: openai.NewClient(option.WithBaseURL(url), option.WithAPIKey(testToken), option.WithMaxRetries(0))}
}

// apiError returns err as the client's API error, failing the test if it
// is not one with the given status.
func apiError(t *testing.T, err error, status int) *openai.Error {
	t.Helper()
	var ae *openai.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v, want an API error %d", err, status)
	}
	if ae.StatusCode != status {
		t.Fatalf("status %d (%s), want %d", ae.StatusCode, ae.Message, status)
	}
	return ae
}

// TestCompletions: the official client lists the model and gets a
// completion with its usage; the same seed gives the same text, which is
// model.Generate's for the same options.
func TestCompletions(t *testing.T) {
	h := startBase(t, serve.DefaultEngineConfig())
	ctx := context.Background()
	list, err := h.client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 1 || list.Data[0].ID != "base-en" {
		t.Fatalf("models %+v", list.Data)
	}
	params := openai.CompletionNewParams{
		Model:       "base-en",
		Prompt:      openai.CompletionNewParamsPromptUnion{OfString: openai.String("The river")},
		MaxTokens:   openai.Int(24),
		Temperature: openai.Float(0.8),
		TopP:        openai.Float(0.95),
		Seed:        openai.Int(7),
	}
	c, err := h.client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Object != "text_completion" {
		t.Fatalf("completion %+v", c)
	}
	ch := c.Choices[0]
	if c.Usage.PromptTokens != 9 || c.Usage.CompletionTokens < 1 || c.Usage.TotalTokens != c.Usage.PromptTokens+c.Usage.CompletionTokens {
		t.Errorf("usage %+v for a 9-byte prompt", c.Usage)
	}
	if ch.FinishReason == "length" && c.Usage.CompletionTokens != 24 {
		t.Errorf("finished by length after %d tokens, want 24", c.Usage.CompletionTokens)
	}
	again, err := h.client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if again.Choices[0].Text != ch.Text {
		t.Errorf("the same seed gave %q, then %q", ch.Text, again.Choices[0].Text)
	}
	m, tok, err := model.Load(baseDir, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := model.Generate(m, tok, tok.Encode(nil, []byte("The river")), model.SampleOptions{MaxTokens: 24, Temperature: 0.8, TopP: 0.95, Seed: 7, StopAtEOT: true})
	if err != nil {
		t.Fatal(err)
	}
	if want := string(tok.Decode(nil, ids)); ch.Text != want {
		t.Errorf("served %q, Generate %q", ch.Text, want)
	}
	t.Logf("%q → %q (%s, %d + %d tokens)", "The river", ch.Text, ch.FinishReason, c.Usage.PromptTokens, c.Usage.CompletionTokens)
}

// TestCompletionStopString: the text ends before the first stop string,
// finish_reason stop, in a whole answer and a streamed one alike.
func TestCompletionStopString(t *testing.T) {
	h := startBase(t, serve.DefaultEngineConfig())
	ctx := context.Background()
	params := openai.CompletionNewParams{
		Model: "base-en", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("The")},
		MaxTokens: openai.Int(60), Temperature: openai.Float(0), Seed: openai.Int(1),
	}
	full, err := h.client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	text := full.Choices[0].Text
	// Stop at the second word's first letter, wherever greedy decoding
	// put it.
	i := strings.Index(strings.TrimLeft(text, " "), " ")
	if i < 0 || len(text) < i+3 {
		t.Skipf("greedy text %q has no second word", text)
	}
	i += len(text) - len(strings.TrimLeft(text, " "))
	stop := text[i+1 : i+3]
	want := text[:strings.Index(text, stop)]
	params.Stop = openai.CompletionNewParamsStopUnion{OfStringArray: []string{"\x00never", stop}}
	got, err := h.client.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got.Choices[0].Text != want || got.Choices[0].FinishReason != "stop" {
		t.Errorf("stop %q: %q (%s), want %q (stop)", stop, got.Choices[0].Text, got.Choices[0].FinishReason, want)
	}
	stream := h.client.Completions.NewStreaming(ctx, params)
	var b strings.Builder
	var fin string
	for stream.Next() {
		for _, c := range stream.Current().Choices {
			b.WriteString(c.Text)
			if c.FinishReason != "" {
				fin = string(c.FinishReason)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if b.String() != want || fin != "stop" {
		t.Errorf("streamed with stop %q: %q (%s), want %q (stop)", stop, b.String(), fin, want)
	}
}

// TestChatCompletions: a chat completion in the model's template, whole
// and streamed (role first, then content deltas, a finish reason, the
// usage chunk, [DONE]); both give the same text for the same seed.
func TestChatCompletions(t *testing.T) {
	h := startChat(t)
	ctx := context.Background()
	params := openai.ChatCompletionNewParams{
		Model: "tiny-chat",
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("Be brief."),
			openai.UserMessage("Hello?"),
		},
		MaxCompletionTokens: openai.Int(20),
		Seed:                openai.Int(3),
		Temperature:         openai.Float(1),
	}
	c, err := h.client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Choices) != 1 || c.Choices[0].Message.Role != "assistant" || c.Object != "chat.completion" {
		t.Fatalf("chat completion %+v", c)
	}
	// The ChatML prompt: <|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n
	if want := int64(1 + 7 + 9 + 1 + 1 + 1 + 5 + 6 + 1 + 1 + 1 + 10); c.Usage.PromptTokens != want {
		t.Errorf("prompt tokens %d, want %d", c.Usage.PromptTokens, want)
	}
	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := h.client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	chunks, roleFirst := 0, false
	for stream.Next() {
		ch := stream.Current()
		acc.AddChunk(ch)
		if chunks == 0 && len(ch.Choices) == 1 && ch.Choices[0].Delta.Role == "assistant" {
			roleFirst = true
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if !roleFirst || chunks < 3 {
		t.Errorf("%d chunks, the role first: %v", chunks, roleFirst)
	}
	if got := acc.Choices[0].Message.Content; got != c.Choices[0].Message.Content {
		t.Errorf("streamed %q, whole %q", got, c.Choices[0].Message.Content)
	}
	if acc.Choices[0].FinishReason != c.Choices[0].FinishReason || acc.Usage.TotalTokens != c.Usage.TotalTokens {
		t.Errorf("streamed finish %q usage %+v, whole %q %+v", acc.Choices[0].FinishReason, acc.Usage, c.Choices[0].FinishReason, c.Usage)
	}
	t.Logf("%q (%s, %d chunks)", c.Choices[0].Message.Content, c.Choices[0].FinishReason, chunks)
}

// TestRefusals: a wrong key is 401, an unknown model 404, an over-long
// prompt, n > 1, bad parameters and a chat without a template 400, each in
// OpenAI's error shape as the client reads it.
func TestRefusals(t *testing.T) {
	h := startBase(t, serve.DefaultEngineConfig())
	ctx := context.Background()
	wrong := openai.NewClient(option.WithBaseURL(h.url), option.WithAPIKey("guess"), option.WithMaxRetries(0))
	_, err := wrong.Models.List(ctx)
	if ae := apiError(t, err, 401); ae.Code != "invalid_api_key" {
		t.Errorf("wrong key: code %q", ae.Code)
	}
	prompt := func(s string) openai.CompletionNewParamsPromptUnion {
		return openai.CompletionNewParamsPromptUnion{OfString: openai.String(s)}
	}
	for _, tc := range []struct {
		name   string
		p      openai.CompletionNewParams
		status int
		code   string
		param  string
	}{
		{"over-long prompt", openai.CompletionNewParams{Model: "base-en", Prompt: prompt(strings.Repeat("x", 300))}, 400, "context_length_exceeded", "prompt"},
		{"prompt and max_tokens past the context", openai.CompletionNewParams{Model: "base-en", Prompt: prompt(strings.Repeat("x", 200)), MaxTokens: openai.Int(100)}, 400, "context_length_exceeded", "prompt"},
		{"unknown model", openai.CompletionNewParams{Model: "gpt-4", Prompt: prompt("hi")}, 404, "model_not_found", ""},
		{"n = 2", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), N: openai.Int(2)}, 400, "", "n"},
		{"temperature 3", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), Temperature: openai.Float(3)}, 400, "", "temperature"},
		{"top_p 0", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), TopP: openai.Float(0)}, 400, "", "top_p"},
		{"max_tokens 0", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), MaxTokens: openai.Int(0)}, 400, "", "max_tokens"},
		{"five stops", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), Stop: openai.CompletionNewParamsStopUnion{OfStringArray: []string{"a", "b", "c", "d", "e"}}}, 400, "", "stop"},
		{"two prompts", openai.CompletionNewParams{Model: "base-en", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfStrings: []string{"a", "b"}}}, 400, "", "prompt"},
		{"a token outside the vocabulary", openai.CompletionNewParams{Model: "base-en", Prompt: openai.CompletionNewParamsPromptUnion{OfArrayOfTokens: []int64{1, 5000}}}, 400, "", "prompt"},
		{"echo", openai.CompletionNewParams{Model: "base-en", Prompt: prompt("hi"), Echo: openai.Bool(true)}, 400, "", "echo"},
	} {
		_, err := h.client.Completions.New(ctx, tc.p)
		ae := apiError(t, err, tc.status)
		if ae.Code != tc.code || ae.Param != tc.param || ae.Message == "" {
			t.Errorf("%s: code %q param %q (%s), want code %q param %q", tc.name, ae.Code, ae.Param, ae.Message, tc.code, tc.param)
		}
	}
	_, err = h.client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "base-en", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	if ae := apiError(t, err, 400); !strings.Contains(ae.Message, "chat template") {
		t.Errorf("chat without a template: %s", ae.Message)
	}
	// Bad JSON, and a Host that does not name the server, straight over HTTP.
	req, _ := http.NewRequest("POST", h.url+"completions", strings.NewReader(`{"model": "base-en", "prompt": `))
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 400 || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("bad JSON: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	req, _ = http.NewRequest("GET", h.url+"models", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Host = "rebound.example"
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host: %d", res.StatusCode)
	}
}

// TestConcurrentRequestsBatched: requests sent at once over HTTP each get
// the text they get alone (TestEngineBatches checks that they share steps).
func TestConcurrentRequestsBatched(t *testing.T) {
	cfg := serve.DefaultEngineConfig()
	h := startBase(t, cfg)
	ctx := context.Background()
	const n = 4
	params := func(i int) openai.CompletionNewParams {
		return openai.CompletionNewParams{Model: "base-en", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(fmt.Sprintf("Story %d:", i))},
			MaxTokens: openai.Int(16), Temperature: openai.Float(0.7), Seed: openai.Int(int64(i))}
	}
	alone := make([]string, n)
	for i := range n {
		c, err := h.client.Completions.New(ctx, params(i))
		if err != nil {
			t.Fatal(err)
		}
		alone[i] = c.Choices[0].Text
	}
	together := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c, err := h.client.Completions.New(ctx, params(i))
			if err != nil {
				errs <- err
				return
			}
			together[i] = c.Choices[0].Text
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for i := range n {
		if together[i] != alone[i] {
			t.Errorf("request %d: %q together, %q alone", i, together[i], alone[i])
		}
	}
}
