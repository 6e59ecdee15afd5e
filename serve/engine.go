package serve

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/braidml/braid/model"
)

// Errors of Submit.
var (
	// ErrBusy: every slot is taken and the queue is full; try again later.
	ErrBusy = errors.New("serve: busy: every sequence slot is taken and the queue is full")
	// ErrContextLength: the prompt and the tokens asked for do not fit the
	// context of a sequence.
	ErrContextLength = errors.New("serve: prompt and completion longer than the context")
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("serve: engine closed")
)

// EngineConfig is how an Engine batches and queues requests.
type EngineConfig struct {
	// MaxBatch is how many sequences are decoded together: the KV cache's
	// slots, each holding MaxContext tokens.
	MaxBatch int
	// MaxQueue is how many requests may wait for a slot; Submit refuses
	// more with ErrBusy.
	MaxQueue int
	// MaxContext is the most tokens of a sequence (prompt and completion);
	// 0 means the model's context.
	MaxContext int
	// StepRows is the most tokens one step computes over all sequences: a
	// long prompt is computed in chunks of up to StepRows tokens, between
	// which the other sequences go on decoding.
	StepRows int
	// OnFinish, when set, is called on the scheduler's goroutine each time
	// a request ends, with why (a Finish value); it must not block. For
	// logs and metrics.
	OnFinish func(Finish)
}

// DefaultEngineConfig batches 4 sequences, queues 16 more, and computes up
// to 256 tokens a step.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{MaxBatch: 4, MaxQueue: 16, StepRows: 256}
}

// Validate checks each field against its bounds.
func (c EngineConfig) Validate() error {
	switch {
	case c.MaxBatch < 1 || c.MaxBatch > 1024:
		return fmt.Errorf("serve: max batch %d, want 1..1024", c.MaxBatch)
	case c.MaxQueue < 0:
		return fmt.Errorf("serve: max queue %d, want ≥ 0", c.MaxQueue)
	case c.MaxContext < 0:
		return fmt.Errorf("serve: max context %d, want ≥ 0 (0: the model's)", c.MaxContext)
	case c.StepRows < c.MaxBatch:
		return fmt.Errorf("serve: %d tokens a step, want at least max batch (%d)", c.StepRows, c.MaxBatch)
	}
	return nil
}

// Finish is why a request ended.
type Finish string

// The reasons, as OpenAI's finish_reason names the first two.
const (
	FinishStop      Finish = "stop"      // end-of-text, a stop token or a stop string
	FinishLength    Finish = "length"    // MaxTokens generated
	FinishCancelled Finish = "cancelled" // the request's context ended
	FinishClosed    Finish = "closed"    // the engine was closed
	FinishError     Finish = "error"     // the model failed (Event.Err)
)

// Request is one completion to generate.
type Request struct {
	// Prompt is the ids to continue, at least one.
	Prompt []int32
	// Sample says how: MaxTokens (≥ 1), Temperature, TopK, TopP, Seed,
	// StopAtEOT and Stop ids, as for model.Generate.
	Sample model.SampleOptions
	// StopText ends the completion before the first of these strings
	// appears in its text; the string is not returned.
	StopText []string
}

// Event is a piece of a completion's text; the last one has Done set, and
// says why it ended and the token counts.
type Event struct {
	Text             string
	Done             bool
	Finish           Finish
	PromptTokens     int
	CompletionTokens int
	Err              error // with FinishError
}

// An Engine generates completions for concurrent requests with one model,
// batching them (see the package comment). Its methods are safe for
// concurrent use.
type Engine struct {
	cfg   EngineConfig
	m     *model.Model
	tok   model.Tokenizer
	kv    *model.KVCache
	queue chan *sequence
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
	steps atomic.Int64 // model steps run
	rows  atomic.Int64 // tokens computed by them
}

// Stats are counts since the engine started.
type Stats struct {
	Steps int64 // model steps, each over every admitted request
	Rows  int64 // tokens the steps computed, prompts included
}

// Stats returns the engine's counts so far.
func (e *Engine) Stats() Stats { return Stats{Steps: e.steps.Load(), Rows: e.rows.Load()} }

// sequence is a request on its way through the scheduler.
type sequence struct {
	ctx     context.Context
	req     Request
	events  chan Event // buffered for every event the request can produce
	slot    int
	fed     int     // prompt tokens in the cache
	ids     []int32 // tokens generated, a stop token excluded
	next    int32   // the last token sampled, to feed at the next step
	sampler *model.Sampler
	logits  []float32
	sent    int // bytes of the completion's text sent
	stopLen int // longest stop string, in bytes
	// stopToken: the last token sampled was end-of-text or a stop id
	stopToken bool
}

// NewEngine starts an engine for m (whose parameters and attached adapter
// it reads; nothing else may use m until Close) and its tokenizer tok.
func NewEngine(m *model.Model, tok model.Tokenizer, cfg EngineConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tok.Vocab() > m.Config.Vocab {
		return nil, fmt.Errorf("serve: a tokenizer of %d ids for a model of %d", tok.Vocab(), m.Config.Vocab)
	}
	if cfg.MaxContext == 0 || cfg.MaxContext > m.Config.Context {
		cfg.MaxContext = m.Config.Context
	}
	kv, err := m.NewKVCache(cfg.MaxBatch, cfg.MaxContext, cfg.StepRows)
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, m: m, tok: tok, kv: kv, queue: make(chan *sequence, cfg.MaxQueue),
		stop: make(chan struct{}), done: make(chan struct{})}
	go e.run()
	return e, nil
}

// MaxContext is the most tokens of a sequence, prompt and completion.
func (e *Engine) MaxContext() int { return e.cfg.MaxContext }

// Tokenizer is the engine's tokenizer.
func (e *Engine) Tokenizer() model.Tokenizer { return e.tok }

// Submit queues req and returns the channel its events arrive on, the last
// with Done set. It does not block: with every slot taken and the queue
// full it returns ErrBusy. When ctx ends, the request stops at the next
// step (Finish cancelled). It returns ErrContextLength when the prompt and
// MaxTokens exceed MaxContext, and an error for options model.Generate
// would refuse.
func (e *Engine) Submit(ctx context.Context, req Request) (<-chan Event, error) {
	if len(req.Prompt) == 0 {
		return nil, fmt.Errorf("serve: an empty prompt")
	}
	if req.Sample.MaxTokens < 1 {
		return nil, fmt.Errorf("serve: max tokens %d, want ≥ 1", req.Sample.MaxTokens)
	}
	// Compared without adding: MaxTokens is the caller's and the sum could
	// wrap (then make(chan) below would panic on a huge buffer).
	if req.Sample.MaxTokens > e.cfg.MaxContext || len(req.Prompt) > e.cfg.MaxContext-req.Sample.MaxTokens {
		return nil, fmt.Errorf("%w: %d prompt tokens and %d to generate, more than %d", ErrContextLength, len(req.Prompt), req.Sample.MaxTokens, e.cfg.MaxContext)
	}
	for i, t := range req.Prompt {
		if t < 0 || int(t) >= e.tok.Vocab() {
			return nil, fmt.Errorf("serve: prompt token %d at %d is outside the vocabulary [0, %d)", t, i, e.tok.Vocab())
		}
	}
	if err := req.Sample.Check(); err != nil {
		return nil, err
	}
	s := &sequence{ctx: ctx, req: req, events: make(chan Event, req.Sample.MaxTokens+2),
		sampler: model.NewSampler(e.tok.Vocab(), req.Sample), logits: make([]float32, e.m.Config.Vocab)}
	for _, st := range req.StopText {
		s.stopLen = max(s.stopLen, len(st))
	}
	select {
	case <-e.stop:
		return nil, ErrClosed
	default:
	}
	select {
	case e.queue <- s:
		return s.events, nil
	default:
		return nil, ErrBusy
	}
}

// Close stops the scheduler; requests admitted or queued end with Finish
// closed. It waits for the scheduler to return.
func (e *Engine) Close() {
	e.once.Do(func() { close(e.stop) })
	<-e.done
}

// run is the scheduler: admit queued requests to free slots, drop those
// whose context ended, run one step for all the rest, sample and report.
func (e *Engine) run() {
	defer close(e.done)
	active := make([]*sequence, 0, e.cfg.MaxBatch)
	free := make([]int, 0, e.cfg.MaxBatch)
	for i := e.cfg.MaxBatch - 1; i >= 0; i-- {
		free = append(free, i)
	}
	var chunks []model.KVChunk
	var dst [][]float32
	var stepSeqs []*sequence
	for {
		// Admit: block for work only when there is nothing to do.
		for len(free) > 0 {
			var s *sequence
			if len(active) == 0 {
				select {
				case s = <-e.queue:
				case <-e.stop:
					e.closeAll(active)
					return
				}
			} else {
				select {
				case s = <-e.queue:
				case <-e.stop:
					e.closeAll(active)
					return
				default:
				}
			}
			if s == nil {
				break
			}
			if s.ctx.Err() != nil {
				e.finish(s, FinishCancelled, nil)
				continue
			}
			s.slot, free = free[len(free)-1], free[:len(free)-1]
			e.kv.Reset(s.slot)
			active = append(active, s)
		}
		// Drop the requests whose clients went away.
		active = slices.DeleteFunc(active, func(s *sequence) bool {
			if s.ctx.Err() == nil {
				return false
			}
			e.finish(s, FinishCancelled, nil)
			free = append(free, s.slot)
			return true
		})
		if len(active) == 0 {
			continue
		}
		// One step: a token for each decoding sequence, then prompt
		// chunks in the rows left.
		chunks, dst, stepSeqs = chunks[:0], dst[:0], stepSeqs[:0]
		rows := e.cfg.StepRows
		for _, s := range active {
			if s.fed == len(s.req.Prompt) {
				chunks = append(chunks, model.KVChunk{Slot: s.slot, Tokens: []int32{s.next}})
				dst = append(dst, s.logits)
				stepSeqs = append(stepSeqs, s)
				rows--
			}
		}
		for _, s := range active {
			if s.fed < len(s.req.Prompt) && rows > 0 {
				n := min(rows, len(s.req.Prompt)-s.fed)
				chunks = append(chunks, model.KVChunk{Slot: s.slot, Tokens: s.req.Prompt[s.fed : s.fed+n]})
				var d []float32
				if s.fed+n == len(s.req.Prompt) {
					d = s.logits
				}
				dst = append(dst, d)
				stepSeqs = append(stepSeqs, s)
				s.fed += n
				rows -= n
			}
		}
		e.steps.Add(1)
		e.rows.Add(int64(e.cfg.StepRows - rows))
		if err := e.kv.Step(chunks, dst); err != nil {
			for _, s := range active {
				e.finish(s, FinishError, err)
				free = append(free, s.slot)
			}
			active = active[:0]
			continue
		}
		for i, s := range stepSeqs {
			if dst[i] == nil {
				continue // a prompt chunk before the last
			}
			if f, done := e.advance(s); done {
				e.finish(s, f, nil)
				free = append(free, s.slot)
				active = slices.DeleteFunc(active, func(a *sequence) bool { return a == s })
			}
		}
	}
}

// advance samples s's next token from its logits, sends the text that is
// safe to send, and reports whether s is done and why.
func (e *Engine) advance(s *sequence) (Finish, bool) {
	next := s.sampler.Pick(s.logits[:e.tok.Vocab()])
	opt := s.req.Sample
	if next == e.tok.EOT() && opt.StopAtEOT || slices.Contains(opt.Stop, next) {
		s.stopToken = true
		e.flush(s, len(e.text(s)))
		return FinishStop, true
	}
	s.ids = append(s.ids, next)
	s.next = next
	text := e.text(s)
	// A stop string ends the text before it; the search starts where one
	// could begin that was not complete at the last token.
	from := max(0, s.sent-s.stopLen)
	cut := -1
	for _, st := range s.req.StopText {
		if i := strings.Index(text[from:], st); i >= 0 && (cut < 0 || from+i < cut) {
			cut = from + i
		}
	}
	if cut >= 0 {
		e.flush(s, cut)
		return FinishStop, true
	}
	if len(s.ids) >= opt.MaxTokens {
		e.flush(s, len(text))
		return FinishLength, true
	}
	e.flush(s, safeEnd(text, s.sent, s.req.StopText))
	return "", false
}

// text is s's completion so far.
func (e *Engine) text(s *sequence) string { return string(e.tok.Decode(nil, s.ids)) }

// flush sends s's text from what was sent up to end, if any.
func (e *Engine) flush(s *sequence, end int) {
	if end <= s.sent {
		return
	}
	text := e.text(s)
	s.events <- Event{Text: text[s.sent:end]}
	s.sent = end
}

// safeEnd is how much of text may be sent: not a suffix that may be the
// start of a stop string, nor an incomplete UTF-8 character at the end (a
// token may end inside one), and never less than sent.
func safeEnd(text string, sent int, stops []string) int {
	end := len(text)
	for _, st := range stops {
		for k := min(len(st)-1, len(text)); k > 0; k-- {
			if strings.HasSuffix(text, st[:k]) {
				end = min(end, len(text)-k)
				break
			}
		}
	}
	// Back off over an incomplete character: at most 3 bytes.
	for i := end - 1; i >= 0 && i >= end-3; i-- {
		if utf8.RuneStart(text[i]) {
			if !utf8.FullRuneInString(text[i:end]) {
				end = i
			}
			break
		}
	}
	return max(end, sent)
}

// finish sends s's last event.
func (e *Engine) finish(s *sequence, f Finish, err error) {
	n := len(s.ids)
	if s.stopToken {
		n++ // sampled, not returned
	}
	s.events <- Event{Done: true, Finish: f, PromptTokens: len(s.req.Prompt), CompletionTokens: n, Err: err}
	if e.cfg.OnFinish != nil {
		e.cfg.OnFinish(f)
	}
}

// closeAll ends the admitted and queued requests with FinishClosed.
func (e *Engine) closeAll(active []*sequence) {
	for _, s := range active {
		e.finish(s, FinishClosed, nil)
	}
	for {
		select {
		case s := <-e.queue:
			e.finish(s, FinishClosed, nil)
		default:
			return
		}
	}
}
