// Package train is one worker's training engine: it reads a text corpus,
// draws batches with a seeded sampler, runs the model's forward and backward
// passes, clips the global gradient norm and applies AdamW with a warmup +
// cosine learning-rate schedule, and evaluates held-out loss.
//
// Today it trains in a single process. The distributed run will reduce the
// model's flat gradient buffer between Backward and the optimizer step; the
// optimizer is deterministic, so every replica that applies it to the same
// bytes gets the same bytes.
//
// What it does not do: tokenised dataset shards (package shard), networking,
// or any process management.
package train
