// Package kernels holds braid's float32 compute: the matrix multiply behind every
// linear layer, LayerNorm, tanh-GELU, causal multi-head self-attention,
// softmax cross-entropy, token and position embedding, residual add, AdamW and
// global gradient-norm clipping, each with its backward pass; and for the
// Llama family RMSNorm, rotary position embeddings, SwiGLU and
// grouped-query attention with an optional sliding window.
//
// Shapes follow GPT-2 conventions and are noted on every function as
// (B, T, C): batch, time, channels. All buffers are row-major float32 slices
// owned by the caller; kernels never allocate on the hot path and never keep a
// reference to a slice after they return.
//
// Backward kernels accumulate: they add into their gradient outputs (d*) rather
// than overwrite them, so gradient accumulation across micro-batches and the
// residual stream's fan-in need no extra buffers. The caller zeroes gradient
// buffers when a new accumulation starts.
//
// Each kernel has a deliberately simple reference (the Naive* functions in
// reference.go and gemm_reference.go) that the optimised code is tested
// against, and both are tested against PyTorch fixtures in testdata. The matrix multiply dispatches
// at run time to an AVX-512 or AVX2/FMA assembly micro-kernel, or to a
// pure-Go one; SetImpl forces a path so every one is tested on one machine.
//
// Work is spread over a fixed pool of goroutines (see Threads). Kernels panic
// with a "kernels: " message on programmer errors such as inconsistent shapes;
// they do no I/O and never see untrusted input.
//
// What this package does not do: autograd, float16 arithmetic or GPU code.
package kernels
