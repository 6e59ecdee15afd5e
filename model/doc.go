// Package model is braid's GPT-2-style language model: pre-LayerNorm blocks,
// learned positions, a tied input/output embedding, a 4× tanh-GELU MLP and
// causal multi-head attention, built on package kernels. The same Model
// also computes the Llama family (Config.Arch llama, mistral or qwen2;
// llama.go): RMSNorm, rotary positions, grouped-query attention (Mistral's
// with a sliding window, Qwen2's with q/k/v biases), a SwiGLU MLP and a tied
// or separate output head, read from and written to Hugging Face's files
// of each architecture.
//
// All parameters live in one flat float32 buffer (Model.Params) and all
// their gradients in another of the same layout (Model.Grads), with named
// views into both (Config.Layout), so that an all-reduce can reduce the
// gradient buffer as is and an optimizer can update the parameters in one
// pass. Activations for the largest batch are allocated once by New;
// Forward and Backward allocate nothing.
//
// LoRA adapters (lora.go, adapter.go) add a trainable low-rank update to
// the blocks' projections of a frozen model, in a flat buffer of their own
// (LoRA.Params, LoRA.Grads) with Hugging Face PEFT's tensor names, so that
// an adapter trained by braid loads in PEFT and the other way round. With
// an adapter attached (Model.AttachLoRA), Backward computes only what the
// adapter's gradient needs, and GradRanges describe the adapter's gradient
// buffer; MergeLoRA folds an adapter into a plain model.
//
// A LoRA run's frozen base of the Llama family can be held in bf16 instead
// (bf16base.go: NewFrozenBF16, HoldBaseBF16): its matrices as bf16 bits,
// widened exactly into a shared float32 scratch per use, Params and Grads
// nil; it computes what a float32 model of the bf16-rounded base computes.
//
// For inference, a KVCache (kvcache.go) keeps each layer's keys and values
// of up to Slots sequences, so that generation computes a prompt once and
// then one token a step, several sequences in one step; Generate uses it.
//
// A Model is not safe for concurrent use: one goroutine drives it, and the
// kernels spread each step over the CPU's cores.
//
// What this package does not do: optimisation (package train), data loading
// (package train, later shard), or distributed anything (package
// cudamodel computes both architectures on a GPU); nor, for the Llama
// family, rotary scaling other than Llama 3's, or Qwen2's per-layer sliding
// windows.
package model
