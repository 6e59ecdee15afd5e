// Package serve is braid's OpenAI-compatible inference endpoint: a model on
// the CPU behind /v1/models, /v1/completions and /v1/chat/completions (with
// server-sent events for stream: true), as `braid serve` runs it.
//
// Two parts. An Engine owns the model and its KV cache (model.KVCache) and
// one goroutine, the scheduler, that advances every admitted request by
// one step at a time together — a chunk of the prompt for a request that
// was just admitted, one token for each of the others — so that concurrent
// requests share each step's matrix multiplies (continuous batching). A
// request waits in a bounded queue for one of the cache's slots; when the
// queue is full, Submit refuses it at once (ErrBusy, HTTP 429) instead of
// letting waits grow without bound. A request whose context ends (its
// client went away) leaves its slot at the next step.
//
// A Server is the HTTP side: it checks the bearer token and the Host
// header as the node's API does (internal/httpauth), decodes and checks
// requests, renders chat messages in the model's template (model/chat),
// and answers every refusal with a 4xx in OpenAI's error shape
// ({"error": {"message", "type", "param", "code"}}). It bounds what a
// client holds: Config.MaxConns connections at once, IdleTimeout between
// requests, and WriteTimeout for each write of a response, so that a
// client that stops reading a stream is cut off and its request dropped.
//
// What it does not do: more than one choice a request (n > 1), log
// probabilities, echo, penalties, logit bias, tools or structured output
// (each is refused by name), several models or adapters at once, the GPU,
// or TLS (put it behind a TLS proxy, or keep it on loopback).
package serve
