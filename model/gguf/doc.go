// Package gguf writes braid's models as GGUF version 3 files, the format
// llama.cpp, Ollama and the tools around them load.
//
// A GGUF file is a header, metadata as typed key-value pairs, a table of
// tensor descriptions (name, shape, type, offset) and the tensors' data,
// each aligned to 32 bytes (general.alignment). Encode writes any such
// file; Build describes a braid checkpoint as llama.cpp's
// convert_hf_to_gguf.py would for the same Hugging Face model: its tensor
// names (token_embd, blk.N.attn_q, ..., output_norm, output), shapes, the
// general.* and <architecture>.* keys, and the tokenizer.ggml.* keys of its
// tokenizer.
//
// Architectures: GPT-2 (gpt2), Llama and Mistral (both llama, with the
// query and key rows permuted as the converter permutes them, and Llama
// 3's rotary scaling as a rope_freqs tensor) and Qwen2 (qwen2). Tensor
// types: F32, F16, BF16 and Q8_0 for matrices; vectors (norms, biases) and
// GPT-2's position table stay F32 as the converter keeps them, and a Q8_0
// matrix whose rows are not a multiple of 32 values is written F16, as the
// converter falls back.
//
// Checked two ways: every test reads the files back with an independent
// reader (github.com/gpustack/gguf-parser-go), and, where llama.cpp is at
// hand (scripts/llamacpp_check.cpp; go test -run TestLlamaCpp -args
// -llamacpp PATH), llama.cpp itself loads them, computes the PyTorch
// fixtures' logits, tokenizes as Hugging Face does and generates braid's
// greedy text.
//
// Tokenizers llama.cpp cannot match whatever a file says: Qwen2's NFC
// normalization, a Metaspace tokenizer that adds no ▁ before text that
// starts with a space (Mistral's tokenizer.json; llama.cpp, like
// SentencePiece, always adds one), and the spaces around a non-special
// added token; TestLlamaCppTokenizes lists the texts.
//
// What it does not do: read GGUF files (the tests use an independent
// reader), k-quants or any other quantisation than Q8_0, or Mistral's
// sliding window: llama.cpp's llama architecture, which the converter
// writes Mistral as, attends to every earlier position, so a Mistral model
// with a sliding window computes the same there only for contexts within
// the window.
package gguf
