package serve_test

import (
	"context"
	"errors"
	"testing"

	"github.com/braidml/braid/model"
	"github.com/braidml/braid/serve"
)

// longModel is a random byte-level model with a long context, so that a
// request of many tokens runs for many steps.
func longModel(t *testing.T) (*model.Model, model.Tokenizer) {
	t.Helper()
	tok := model.ByteTokenizer{}
	m, err := model.NewInference(model.Config{Vocab: tok.Vocab(), Context: 1024, Dim: 32, Layers: 2, Heads: 4}, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(2)
	return m, tok
}

// drain reads events up to the last and returns it and the text.
func drain(t *testing.T, events <-chan serve.Event) (serve.Event, string) {
	t.Helper()
	var text string
	for ev := range events {
		text += ev.Text
		if ev.Done {
			return ev, text
		}
	}
	t.Fatal("the events ended without a last one")
	return serve.Event{}, ""
}

// TestEngineQueueAndCancel: with its one slot taken and its queue of one
// full, the engine refuses a third request (ErrBusy); a request whose
// context ends stops (cancelled) and frees the slot for the queued one.
func TestEngineQueueAndCancel(t *testing.T) {
	m, tok := longModel(t)
	finished := make(chan serve.Finish, 8)
	e, err := serve.NewEngine(m, tok, serve.EngineConfig{MaxBatch: 1, MaxQueue: 1, StepRows: 16, OnFinish: func(f serve.Finish) { finished <- f }})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	long := serve.Request{Prompt: []int32{'a'}, Sample: model.SampleOptions{MaxTokens: 1000, Temperature: 1}}
	a, err := e.Submit(ctx, long)
	if err != nil {
		t.Fatal(err)
	}
	<-a // a holds the slot
	short := serve.Request{Prompt: []int32{'b'}, Sample: model.SampleOptions{MaxTokens: 3, Temperature: 1}}
	b, err := e.Submit(context.Background(), short)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Submit(context.Background(), short); !errors.Is(err, serve.ErrBusy) {
		t.Fatalf("a third request: %v, want ErrBusy", err)
	}
	cancel()
	last, _ := drain(t, a)
	if last.Finish != serve.FinishCancelled || last.CompletionTokens >= 1000 {
		t.Errorf("cancelled request: %+v", last)
	}
	last, text := drain(t, b)
	if last.Finish != serve.FinishLength || last.CompletionTokens != 3 || last.PromptTokens != 1 {
		t.Errorf("queued request: %+v %q", last, text)
	}
	if f := <-finished; f != serve.FinishCancelled {
		t.Errorf("first finish %s", f)
	}
	if _, err := e.Submit(context.Background(), serve.Request{Prompt: []int32{'a'}, Sample: model.SampleOptions{MaxTokens: 1024}}); !errors.Is(err, serve.ErrContextLength) {
		t.Errorf("prompt and completion past the context: %v", err)
	}
}

// TestEngineBatches: requests submitted together share steps (far fewer
// steps than tokens) and give what each gives alone, which is what
// model.Generate gives.
func TestEngineBatches(t *testing.T) {
	m, tok := longModel(t)
	e, err := serve.NewEngine(m, tok, serve.EngineConfig{MaxBatch: 4, MaxQueue: 4, StepRows: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const n, tokens = 4, 40
	reqs := make([]serve.Request, n)
	for i := range reqs {
		reqs[i] = serve.Request{Prompt: []int32{'x', int32('0' + i), ':'}, Sample: model.SampleOptions{MaxTokens: tokens, Temperature: 0.9, TopP: 0.9, Seed: uint64(i)}}
	}
	var chans []<-chan serve.Event
	for _, r := range reqs {
		ch, err := e.Submit(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	for i, ch := range chans {
		last, text := drain(t, ch)
		if last.Finish != serve.FinishLength || last.CompletionTokens != tokens {
			t.Fatalf("request %d: %+v", i, last)
		}
		g, err := model.NewInference(m.Config, 1, m.Config.Context)
		if err != nil {
			t.Fatal(err)
		}
		copy(g.Params, m.Params)
		ids, err := model.Generate(g, tok, reqs[i].Prompt, reqs[i].Sample)
		if err != nil {
			t.Fatal(err)
		}
		if want := string(tok.Decode(nil, ids)); text != want {
			t.Errorf("request %d: served %q, Generate %q", i, text, want)
		}
	}
	st := e.Stats()
	if st.Steps > n*tokens*3/4 || st.Rows != n*(tokens+2) {
		t.Errorf("%d steps over %d rows for %d requests of %d tokens: not batched", st.Steps, st.Rows, n, tokens)
	}
	t.Logf("%d requests of %d tokens in %d steps", n, tokens, st.Steps)
}
