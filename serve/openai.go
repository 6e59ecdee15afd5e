package serve

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/braidml/braid/internal/jsonerr"
	"github.com/braidml/braid/model/chat"
)

// This file is OpenAI's wire format as far as braid speaks it: the
// requests of /v1/completions and /v1/chat/completions, decoded and
// checked into one params value, and the responses and stream chunks.

// apiError is a refusal in OpenAI's error shape, with its HTTP status.
type apiError struct {
	status  int
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

// badRequest is a 400 invalid_request_error about param ("" for none) with
// code ("" for none).
func badRequest(param, code, format string, args ...any) *apiError {
	e := &apiError{status: 400, Message: fmt.Sprintf(format, args...), Type: "invalid_request_error"}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

// Request bodies. Fields braid does not implement are decoded only to
// refuse a value that would change the answer (refuseUnsupported).
type sampling struct {
	Model            string          `json:"model"`
	MaxTokens        *int            `json:"max_tokens"`
	Temperature      *float64        `json:"temperature"`
	TopP             *float64        `json:"top_p"`
	N                *int            `json:"n"`
	Stream           bool            `json:"stream"`
	StreamOptions    *streamOptions  `json:"stream_options"`
	Stop             json.RawMessage `json:"stop"`
	Seed             *int64          `json:"seed"`
	PresencePenalty  *float64        `json:"presence_penalty"`
	FrequencyPenalty *float64        `json:"frequency_penalty"`
	LogitBias        map[string]any  `json:"logit_bias"`
	Logprobs         json.RawMessage `json:"logprobs"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type completionRequest struct {
	sampling
	Prompt json.RawMessage `json:"prompt"`
	Echo   bool            `json:"echo"`
	BestOf *int            `json:"best_of"`
	Suffix *string         `json:"suffix"`
}

type chatRequest struct {
	sampling
	Messages            []chatMessage   `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Tools               json.RawMessage `json:"tools"`
	ResponseFormat      *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// params is a checked request, ready to tokenise.
type params struct {
	model        string
	maxTokens    int // 0: up to the context
	temperature  float64
	topP         float64
	seed         *int64
	stop         []string
	stream       bool
	includeUsage bool
	prompt       string  // completions: text to continue
	promptIDs    []int32 // completions: or token ids
	messages     []chat.Message
}

// maxStops is how many stop strings a request may give, as OpenAI allows.
const maxStops = 4

// decodeStrict decodes one JSON object from b into v, naming what is wrong
// without quoting the input.
func decodeStrict(b []byte, v any) *apiError {
	d := json.NewDecoder(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return badRequest("", "", "the request body is not valid: %s", jsonerr.Problem(err))
	}
	if d.More() {
		return badRequest("", "", "the request body holds more than one JSON value")
	}
	return nil
}

// check checks the sampling parameters common to both endpoints into p.
func (s *sampling) check(p *params) *apiError {
	if s.Model == "" {
		return badRequest("model", "", "you must provide a model parameter")
	}
	p.model = s.Model
	if s.N != nil && *s.N != 1 {
		return badRequest("n", "", "n = %d: this server returns one choice a request (n = 1); send several requests instead", *s.N)
	}
	p.temperature = 1
	if t := s.Temperature; t != nil {
		if !(*t >= 0 && *t <= 2) {
			return badRequest("temperature", "", "temperature %g, want 0..2", *t)
		}
		p.temperature = *t
	}
	p.topP = 1
	if t := s.TopP; t != nil {
		if !(*t > 0 && *t <= 1) {
			return badRequest("top_p", "", "top_p %g, want more than 0 and at most 1", *t)
		}
		p.topP = *t
	}
	if s.MaxTokens != nil {
		if *s.MaxTokens < 1 {
			return badRequest("max_tokens", "", "max_tokens %d, want ≥ 1", *s.MaxTokens)
		}
		p.maxTokens = *s.MaxTokens
	}
	p.seed = s.Seed
	p.stream = s.Stream
	if s.StreamOptions != nil {
		if !s.Stream {
			return badRequest("stream_options", "", "stream_options applies only with stream: true")
		}
		p.includeUsage = s.StreamOptions.IncludeUsage
	}
	stops, err := decodeStop(s.Stop)
	if err != nil {
		return err
	}
	p.stop = stops
	for name, v := range map[string]*float64{"presence_penalty": s.PresencePenalty, "frequency_penalty": s.FrequencyPenalty} {
		if v != nil && *v != 0 {
			return badRequest(name, "", "%s is not supported (only 0)", name)
		}
	}
	if len(s.LogitBias) > 0 {
		return badRequest("logit_bias", "", "logit_bias is not supported")
	}
	if l := bytes.TrimSpace(s.Logprobs); len(l) > 0 && !bytes.Equal(l, []byte("null")) && !bytes.Equal(l, []byte("false")) {
		return badRequest("logprobs", "", "logprobs are not supported")
	}
	return nil
}

// decodeStop reads stop: absent, null, a string, or up to maxStops
// strings, none empty.
func decodeStop(raw json.RawMessage) ([]string, *apiError) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		raw = nil
		if one == "" {
			return nil, badRequest("stop", "", "an empty stop string")
		}
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest("stop", "", "stop must be a string or an array of strings")
	}
	if len(many) > maxStops {
		return nil, badRequest("stop", "", "%d stop strings, at most %d", len(many), maxStops)
	}
	for _, s := range many {
		if s == "" {
			return nil, badRequest("stop", "", "an empty stop string")
		}
	}
	return many, nil
}

// parseCompletion decodes and checks a /v1/completions body.
func parseCompletion(b []byte) (params, *apiError) {
	var r completionRequest
	var p params
	if err := decodeStrict(b, &r); err != nil {
		return p, err
	}
	if err := r.check(&p); err != nil {
		return p, err
	}
	if r.MaxTokens == nil {
		p.maxTokens = 16 // OpenAI's default for completions
	}
	switch {
	case r.Echo:
		return p, badRequest("echo", "", "echo is not supported")
	case r.BestOf != nil && *r.BestOf != 1:
		return p, badRequest("best_of", "", "best_of = %d: only 1 is supported", *r.BestOf)
	case r.Suffix != nil && *r.Suffix != "":
		return p, badRequest("suffix", "", "suffix is not supported")
	}
	raw := bytes.TrimSpace(r.Prompt)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return p, badRequest("prompt", "", "you must provide a prompt")
	}
	// A string, an array of one string, an array of token ids, or an
	// array of one array of ids.
	var text string
	if json.Unmarshal(raw, &text) == nil {
		p.prompt = text
		return p, nil
	}
	var texts []string
	if json.Unmarshal(raw, &texts) == nil {
		if len(texts) != 1 {
			return p, badRequest("prompt", "", "%d prompts: this server takes one prompt a request", len(texts))
		}
		p.prompt = texts[0]
		return p, nil
	}
	var ids []int64
	if json.Unmarshal(raw, &ids) != nil {
		var lists [][]int64
		if json.Unmarshal(raw, &lists) != nil {
			return p, badRequest("prompt", "", "prompt must be a string, an array of one string, or an array of token ids")
		}
		if len(lists) != 1 {
			return p, badRequest("prompt", "", "%d prompts: this server takes one prompt a request", len(lists))
		}
		ids = lists[0]
	}
	for i, id := range ids {
		if id < 0 || id > math.MaxInt32 {
			return p, badRequest("prompt", "", "token id %d at %d is out of range", id, i)
		}
		p.promptIDs = append(p.promptIDs, int32(id))
	}
	if len(p.promptIDs) == 0 {
		return p, badRequest("prompt", "", "an empty list of token ids")
	}
	return p, nil
}

// parseChat decodes and checks a /v1/chat/completions body.
func parseChat(b []byte) (params, *apiError) {
	var r chatRequest
	var p params
	if err := decodeStrict(b, &r); err != nil {
		return p, err
	}
	if err := r.check(&p); err != nil {
		return p, err
	}
	if r.MaxCompletionTokens != nil {
		if *r.MaxCompletionTokens < 1 {
			return p, badRequest("max_completion_tokens", "", "max_completion_tokens %d, want ≥ 1", *r.MaxCompletionTokens)
		}
		p.maxTokens = *r.MaxCompletionTokens
	}
	if t := bytes.TrimSpace(r.Tools); len(t) > 0 && !bytes.Equal(t, []byte("null")) && !bytes.Equal(t, []byte("[]")) {
		return p, badRequest("tools", "", "tools are not supported")
	}
	if r.ResponseFormat != nil && r.ResponseFormat.Type != "" && r.ResponseFormat.Type != "text" {
		return p, badRequest("response_format", "", "response_format %q is not supported (only text)", r.ResponseFormat.Type)
	}
	if len(r.Messages) == 0 {
		return p, badRequest("messages", "", "you must provide at least one message")
	}
	for i, m := range r.Messages {
		param := fmt.Sprintf("messages[%d]", i)
		var role chat.Role
		switch m.Role {
		case "system", "developer":
			role = chat.System
		case "user":
			role = chat.User
		case "assistant":
			role = chat.Assistant
		default:
			return p, badRequest(param+".role", "", "role %.40q is not supported (system, developer, user or assistant)", m.Role)
		}
		text, err := messageText(m.Content)
		if err != nil {
			return p, badRequest(param+".content", "", "%s", err)
		}
		p.messages = append(p.messages, chat.Message{Role: role, Content: text})
	}
	return p, nil
}

// messageText reads a message's content: a string, or an array of text
// parts, joined.
func messageText(raw json.RawMessage) (string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or an array of text parts")
	}
	var b bytes.Buffer
	for _, part := range parts {
		if part.Type != "text" {
			return "", fmt.Errorf("content part of type %.40q is not supported (only text)", part.Type)
		}
		b.WriteString(part.Text)
	}
	return b.String(), nil
}

// Responses.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type completionChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type chatDelta struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

type chatChoice struct {
	Index        int         `json:"index"`
	Message      *chatAnswer `json:"message,omitempty"`
	Delta        *chatDelta  `json:"delta,omitempty"`
	Logprobs     any         `json:"logprobs"`
	FinishReason *string     `json:"finish_reason"`
}

type chatAnswer struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *usage       `json:"usage,omitempty"`
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}
