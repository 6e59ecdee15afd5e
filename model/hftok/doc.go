// Package hftok reads a Hugging Face tokenizer.json (with the
// tokenizer_config.json beside it) and tokenises text exactly as Hugging
// Face's tokenizers library does for the two kinds of BPE tokenizer that
// current open models ship:
//
//   - byte-level BPE, as GPT-2, Llama 3 and Qwen2 have it: a ByteLevel
//     pre-tokenizer, alone or after a Split by a regular expression,
//     merges given as "a b" strings or as [a, b] pairs, ignore_merges, and
//     the ByteLevel decoder;
//   - SentencePiece-style BPE, as Llama 2 and Mistral have it: the
//     normalizers Prepend("▁") and Replace(" ", "▁") or the Metaspace
//     pre-tokenizer, byte_fallback to <0xNN> tokens, and the decoders
//     Replace, ByteFallback, Fuse, Strip and Metaspace.
//
// Added tokens (<|begin_of_text|>, <|im_start|>, <s>, ...) are matched
// before the model, longest first, as Hugging Face's AddedVocabulary does;
// Encode leaves special ones as text and EncodeSpecial turns them into
// their ids. tokenizer_config.json supplies bos_token, eos_token,
// add_bos_token, add_eos_token and the chat template, which Specials and
// ChatTemplate expose for the code that frames sequences and formats chats.
//
// A *Tokenizer satisfies model.Tokenizer; model.LoadTokenizer returns one
// for a model directory that has a tokenizer.json. This package does not
// import package model, so that model can import it.
//
// Where the two differ, Encode and Decode keep braid's contract rather than
// Hugging Face's: they take and give bytes, so text that is not valid UTF-8
// (which Hugging Face cannot take at all) encodes and decodes losslessly
// where the vocabulary covers every byte, and Decode gives the bytes of
// tokens that hold part of a character instead of U+FFFD.
//
// What this package does not do: Unigram, WordPiece and WordLevel models,
// the BERT normalizers and pre-tokenizers, lowercasing, BPE dropout,
// continuing_subword_prefix and end_of_word_suffix, truncation, padding and
// pairs of sequences, and transformers' clean_up_tokenization_spaces
// (which would break Decode(Encode(x)) == x). Each of them is reported by
// Parse as an error that names it. It does not format chats or frame
// sequences either: it only exposes what that needs.
package hftok
