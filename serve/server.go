package serve

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"github.com/braidml/braid/internal/httpauth"
	"github.com/braidml/braid/model/chat"
)

// Config is how a Server listens and what it serves.
type Config struct {
	// Addr is host:port to listen on; keep it on loopback unless a TLS
	// proxy stands in front (the server speaks plain HTTP).
	Addr string
	// Token is the bearer token every request must carry, as
	// "Authorization: Bearer TOKEN" (OpenAI clients send their API key
	// so). Required.
	Token string
	// Hosts are names, besides the listen address, loopback and
	// localhost, that requests may carry in their Host header.
	Hosts []string
	// ModelName is the model's id in /v1/models, which requests must name.
	ModelName string
	// Chat renders and tokenises chat messages; nil: the model has no chat
	// template and /v1/chat/completions refuses requests.
	Chat *chat.Encoder
	// Seed seeds the sampling of requests that give no seed of their own.
	Seed uint64
	// MaxBodyBytes bounds a request's body; 0 means 1 MiB.
	MaxBodyBytes int64
	// Log, when set, gets a line per request that ends in an error.
	Log *slog.Logger
	// MaxConns bounds the connections open at once (idle keep-alive ones
	// included); more wait to be accepted. 0 means 256.
	MaxConns int
	// WriteTimeout bounds each write of a response (each event of a
	// stream, not the whole stream): a client that stops reading is cut
	// off after it, and its request cancelled. 0 means 30 s.
	WriteTimeout time.Duration
	// IdleTimeout bounds a keep-alive connection between requests. 0
	// means 2 min.
	IdleTimeout time.Duration
}

// ErrToken is returned by Start without a bearer token.
var ErrToken = errors.New("serve: the endpoint needs a bearer token")

// A Server answers OpenAI's API for one Engine.
type Server struct {
	cfg     Config
	e       *Engine
	hosts   httpauth.Hosts
	ln      net.Listener
	srv     *http.Server
	created int64
	served  chan struct{} // closed when Serve returns

	seedMu sync.Mutex
	seeds  *mrand.Rand // guarded by seedMu
}

// Start listens on cfg.Addr and serves e there until Close. The engine
// stays the caller's to close, after the server.
func Start(cfg Config, e *Engine) (*Server, error) {
	if cfg.Token == "" {
		return nil, fmt.Errorf("%w (give --token-file or BRAID_SERVE_TOKEN)", ErrToken)
	}
	if cfg.ModelName == "" {
		return nil, fmt.Errorf("serve: no model name")
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return startOn(cfg, e, ln)
}

// startOn serves e on ln (a TCP listener), which it closes on error.
func startOn(cfg Config, e *Engine, ln net.Listener) (*Server, error) {
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = 256
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 2 * time.Minute
	}
	if cfg.MaxConns < 0 || cfg.WriteTimeout < 0 || cfg.IdleTimeout < 0 {
		ln.Close()
		return nil, fmt.Errorf("serve: MaxConns %d, WriteTimeout %v, IdleTimeout %v: want ≥ 0", cfg.MaxConns, cfg.WriteTimeout, cfg.IdleTimeout)
	}
	hosts, err := httpauth.AllowedHosts(ln.Addr().(*net.TCPAddr).IP, cfg.Hosts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &Server{cfg: cfg, e: e, hosts: hosts, ln: ln, created: time.Now().Unix(),
		served: make(chan struct{}), seeds: mrand.New(mrand.NewPCG(cfg.Seed, 0x73657276))}
	// No http.Server WriteTimeout: it would bound the whole response, and
	// a streamed completion writes for as long as it generates. Instead
	// each write gets its own deadline (deadlineWriter): a client that
	// stops reading fails the next write within WriteTimeout, the handler
	// returns and the engine drops the request. A client that goes away is
	// cut off by the request's context when its connection closes.
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		IdleTimeout: cfg.IdleTimeout, MaxHeaderBytes: 64 << 10}
	limited := netutil.LimitListener(ln, cfg.MaxConns)
	go func() {
		defer close(s.served)
		s.srv.Serve(limited)
	}()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops accepting requests and waits, until ctx ends, for those in
// flight.
func (s *Server) Close(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.served
	return err
}

// Handler is the server's HTTP handler: the Host and token checks, then
// the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/models", s.models)
	mux.HandleFunc("GET /v1/models/{id}", s.modelByID)
	mux.HandleFunc("POST /v1/completions", s.completions)
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: 404, Message: fmt.Sprintf("no endpoint %s %.100q (this server has GET /v1/models, POST /v1/completions and POST /v1/chat/completions)", r.Method, r.URL.Path), Type: "invalid_request_error"})
	})
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := newDeadlineWriter(rw, s.cfg.WriteTimeout)
		if !s.hosts.Allow(r) {
			writeError(w, &apiError{status: http.StatusMisdirectedRequest, Message: fmt.Sprintf("this server does not answer to the host name %.100q", r.Host), Type: "invalid_request_error"})
			return
		}
		if !httpauth.BearerOK(r, s.cfg.Token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="braid"`)
			code := "invalid_api_key"
			writeError(w, &apiError{status: 401, Message: "missing or wrong bearer token: give the token braid serve was started with as the API key", Type: "invalid_request_error", Code: &code})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (s *Server) modelObject() modelObject {
	return modelObject{ID: s.cfg.ModelName, Object: "model", Created: s.created, OwnedBy: "braid"}
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, 200, modelList{Object: "list", Data: []modelObject{s.modelObject()}})
}

func (s *Server) modelByID(w http.ResponseWriter, r *http.Request) {
	if r.PathValue("id") != s.cfg.ModelName {
		writeError(w, s.unknownModel(r.PathValue("id")))
		return
	}
	writeJSON(w, 200, s.modelObject())
}

func (s *Server) unknownModel(name string) *apiError {
	code := "model_not_found"
	return &apiError{status: 404, Message: fmt.Sprintf("the model %.100q does not exist here; this server serves %q", name, s.cfg.ModelName),
		Type: "invalid_request_error", Code: &code}
}

// body reads r's body, up to MaxBodyBytes.
func (s *Server) body(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, &apiError{status: 413, Message: fmt.Sprintf("the request body is larger than %d bytes", s.cfg.MaxBodyBytes), Type: "invalid_request_error"}
		}
		return nil, badRequest("", "", "reading the request body: %v", err)
	}
	return b, nil
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	b, aerr := s.body(w, r)
	if aerr == nil {
		var p params
		if p, aerr = parseCompletion(b); aerr == nil {
			aerr = s.run(w, r, p, false)
		}
	}
	if aerr != nil {
		writeError(w, aerr)
	}
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	b, aerr := s.body(w, r)
	if aerr == nil {
		var p params
		if p, aerr = parseChat(b); aerr == nil {
			aerr = s.run(w, r, p, true)
		}
	}
	if aerr != nil {
		writeError(w, aerr)
	}
}

// request turns checked params into an engine request: the prompt's ids,
// the tokens to generate and how to sample them.
func (s *Server) request(p params, isChat bool) (Request, *apiError) {
	if p.model != s.cfg.ModelName {
		return Request{}, s.unknownModel(p.model)
	}
	tok := s.e.Tokenizer()
	req := Request{StopText: p.stop}
	if isChat {
		if s.cfg.Chat == nil {
			return req, badRequest("messages", "", "the model %q has no chat template (start braid serve with --chat-template, or use /v1/completions)", s.cfg.ModelName)
		}
		segs, err := s.cfg.Chat.Template().Prompt(p.messages)
		if err != nil {
			return req, badRequest("messages", "", "%v", err)
		}
		if req.Prompt, _, err = s.cfg.Chat.Encode(nil, nil, segs); err != nil {
			return req, badRequest("messages", "", "%v", err)
		}
		req.Sample.Stop = []int32{s.cfg.Chat.EndOfTurn()}
	} else if p.promptIDs != nil {
		for i, id := range p.promptIDs {
			if int(id) >= tok.Vocab() {
				return req, badRequest("prompt", "", "token id %d at %d is outside the vocabulary [0, %d)", id, i, tok.Vocab())
			}
		}
		req.Prompt = p.promptIDs
	} else {
		req.Prompt = tok.Encode(nil, []byte(p.prompt))
		if len(req.Prompt) == 0 {
			req.Prompt = []int32{tok.EOT()} // an empty prompt starts a document
		}
	}
	n, maxCtx := len(req.Prompt), s.e.MaxContext()
	maxTokens := p.maxTokens
	if maxTokens == 0 {
		maxTokens = maxCtx - n
	}
	// maxTokens > maxCtx-n, not n+maxTokens > maxCtx: max_tokens is the
	// client's, and near MaxInt the sum wraps negative.
	if n >= maxCtx || maxTokens > maxCtx-n {
		code := "context_length_exceeded"
		asked := fmt.Sprintf("%d", n+max(maxTokens, 1))
		if maxTokens > maxCtx {
			asked = "more than that"
		}
		return req, &apiError{status: 400, Message: fmt.Sprintf("this model's maximum context length is %d tokens, but %s were asked for (%d in the prompt, %d for the completion); shorten the prompt or lower max_tokens",
			maxCtx, asked, n, max(maxTokens, 1)), Type: "invalid_request_error", Param: ptr("messages"), Code: &code}
	}
	req.Sample.MaxTokens = maxTokens
	req.Sample.Temperature = p.temperature
	req.Sample.TopP = p.topP
	req.Sample.StopAtEOT = true
	if p.seed != nil {
		req.Sample.Seed = uint64(*p.seed)
	} else {
		s.seedMu.Lock()
		req.Sample.Seed = s.seeds.Uint64()
		s.seedMu.Unlock()
	}
	return req, nil
}

// run generates the completion for p and writes it, whole or streamed.
func (s *Server) run(w http.ResponseWriter, r *http.Request, p params, isChat bool) *apiError {
	req, aerr := s.request(p, isChat)
	if aerr != nil {
		if !isChat && aerr.Param != nil && *aerr.Param == "messages" {
			aerr.Param = ptr("prompt")
		}
		return aerr
	}
	events, err := s.e.Submit(r.Context(), req)
	switch {
	case errors.Is(err, ErrBusy):
		w.Header().Set("Retry-After", "1")
		return &apiError{status: 429, Message: "the server is busy (every sequence slot is taken and the queue is full); retry shortly", Type: "server_busy", Code: ptr("server_busy")}
	case errors.Is(err, ErrClosed):
		return &apiError{status: 503, Message: "the server is shutting down", Type: "server_error"}
	case err != nil:
		return badRequest("", "", "%v", err)
	}
	id, created := newID(isChat), time.Now().Unix()
	if p.stream {
		s.stream(w, r, p, isChat, id, created, events)
		return nil
	}
	var text []byte
	for {
		var ev Event
		select {
		case ev = <-events:
		case <-r.Context().Done():
			return nil // the client is gone; the engine drops the request
		}
		text = append(text, ev.Text...)
		if !ev.Done {
			continue
		}
		if aerr := s.failed(ev); aerr != nil {
			return aerr
		}
		fin := string(ev.Finish)
		u := &usage{PromptTokens: ev.PromptTokens, CompletionTokens: ev.CompletionTokens, TotalTokens: ev.PromptTokens + ev.CompletionTokens}
		if isChat {
			writeJSON(w, 200, chatCompletion{ID: id, Object: "chat.completion", Created: created, Model: s.cfg.ModelName,
				Choices: []chatChoice{{Message: &chatAnswer{Role: "assistant", Content: string(text)}, FinishReason: &fin}}, Usage: u})
		} else {
			writeJSON(w, 200, completion{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ModelName,
				Choices: []completionChoice{{Text: string(text), FinishReason: &fin}}, Usage: u})
		}
		return nil
	}
}

// failed is the error to answer for a last event that is not a normal end.
func (s *Server) failed(ev Event) *apiError {
	switch ev.Finish {
	case FinishStop, FinishLength:
		return nil
	case FinishClosed:
		return &apiError{status: 503, Message: "the server is shutting down", Type: "server_error"}
	}
	if s.cfg.Log != nil {
		s.cfg.Log.Error("generation failed", "finish", ev.Finish, "err", ev.Err)
	}
	return &apiError{status: 500, Message: fmt.Sprintf("generation failed (%s): %v", ev.Finish, ev.Err), Type: "server_error"}
}

// stream writes the completion as server-sent events: a chunk per piece
// of text, one with the finish reason, one with the usage if asked for,
// then [DONE].
func (s *Server) stream(w http.ResponseWriter, r *http.Request, p params, isChat bool, id string, created int64, events <-chan Event) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(200)
	send := func(v any) bool {
		b, _ := json.Marshal(v)
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	chunk := func(text string, first bool, fin *string) any {
		if isChat {
			d := &chatDelta{Content: text}
			if first {
				d.Role = "assistant"
			}
			return chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.ModelName,
				Choices: []chatChoice{{Delta: d, FinishReason: fin}}}
		}
		return completion{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ModelName,
			Choices: []completionChoice{{Text: text, FinishReason: fin}}}
	}
	if isChat && !send(chunk("", true, nil)) {
		return
	}
	for {
		var ev Event
		select {
		case ev = <-events:
		case <-r.Context().Done():
			return
		}
		if ev.Text != "" && !send(chunk(ev.Text, false, nil)) {
			return
		}
		if !ev.Done {
			continue
		}
		if aerr := s.failed(ev); aerr != nil {
			send(map[string]any{"error": aerr})
			return
		}
		fin := string(ev.Finish)
		if !send(chunk("", false, &fin)) {
			return
		}
		if p.includeUsage {
			u := &usage{PromptTokens: ev.PromptTokens, CompletionTokens: ev.CompletionTokens, TotalTokens: ev.PromptTokens + ev.CompletionTokens}
			var v any = completion{ID: id, Object: "text_completion", Created: created, Model: s.cfg.ModelName, Choices: []completionChoice{}, Usage: u}
			if isChat {
				v = chatCompletion{ID: id, Object: "chat.completion.chunk", Created: created, Model: s.cfg.ModelName, Choices: []chatChoice{}, Usage: u}
			}
			if !send(v) {
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
		rc.Flush()
		return
	}
}

// newID is a response id as OpenAI shapes them.
func newID(isChat bool) string {
	b := make([]byte, 12)
	rand.Read(b)
	if isChat {
		return "chatcmpl-" + hex.EncodeToString(b)
	}
	return "cmpl-" + hex.EncodeToString(b)
}

func ptr(s string) *string { return &s }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, map[string]*apiError{"error": e})
}

// deadlineWriter sets the connection's write deadline to now+d before
// each write and flush, so that every write of a response is bounded but
// a stream as a whole is not. The deadline of the request before on the
// same connection is cleared when it is made.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func newDeadlineWriter(w http.ResponseWriter, d time.Duration) *deadlineWriter {
	dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}
	dw.rc.SetWriteDeadline(time.Time{}) // a keep-alive connection keeps the last request's
	return dw
}

func (w *deadlineWriter) arm() { w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *deadlineWriter) WriteHeader(code int) {
	w.arm()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(b)
}

// Flush is http.Flusher's; FlushError returns what the flush met.
func (w *deadlineWriter) Flush() { w.FlushError() }

// FlushError is for http.ResponseController.
func (w *deadlineWriter) FlushError() error {
	w.arm()
	return w.rc.Flush()
}

// Unwrap is for http.ResponseController.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
