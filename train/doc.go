// Package train is one worker's training engine.
//
// Two ways in:
//
//   - Trainer (trainer.go) trains in a single process on a text corpus read
//     with LoadCorpus: a seeded sampler of windows, forward and backward,
//     global-norm clipping, AdamW with a warmup + cosine schedule, held-out
//     evaluation, checkpoints that resume bitwise (`braid train`).
//   - Worker (worker.go) is one data-parallel worker of a cluster job on a
//     prepared dataset (package shard): for its part of each global batch it
//     accumulates gradients over micro-batches, hands them to a Reducer
//     bucket by bucket while backward still runs (the node passes a ring
//     all-reduce), and applies the same AdamW update as every other worker,
//     so that replicas stay bitwise identical. It keeps the reduced gradient
//     of its last step and can snapshot and restore its whole state, which is
//     how a worker that missed a step, or joined late, catches up.
//
// Both can train a LoRA adapter instead of the whole model: the Trainer
// when the model it is given has one attached, the Worker in LoRA mode
// (JobConfig.LoRARank). Then only the adapter's buffer is optimised,
// reduced, checkpointed and snapshotted; the base weights stay frozen and
// are named by their hash.
//
// Step numbers count updates, from 1: "step n" is the n-th update, and
// after it n steps are done (StepStats.Step, StepResult.Step, Worker.Done,
// Optimizer.Step, a checkpoint "at step n"). Indexes start at 0: step n
// uses global batch n-1 and the learning rate Schedule.At(n-1).
//
// What it does not do: networking, membership or process management: the
// reducer is an interface, and the node decides who trains which part.
package train
