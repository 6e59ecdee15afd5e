// Package shard is braid's dataset format: text tokenised into fixed-length
// training sequences, stored as content-addressed, zstd-compressed shard
// files described by a manifest; plus the two pure functions that decide
// where shards live (Place) and which node trains on which sequence of a
// global batch (Assign).
//
// It does not move shards between nodes, keep datasets in Raft, or train:
// the node and coordinator packages do that with the values computed here.
// Everything in it is deterministic: the same inputs give byte-identical
// shard files, the same dataset id, the same placement and the same
// batches on every machine.
//
// # A dataset on disk
//
// A dataset is one directory:
//
//	DIR/manifest.json        the manifest (below)
//	DIR/<sha256 hex>.shard   one file per shard, named by the SHA-256 of
//	                         the whole file (64 lowercase hex digits)
//
// Prepare writes it. Each document (a text file, or one JSONL record; a
// text file over Config.CutAbove is cut into documents of about
// Config.DocumentBytes by CutDocuments, at blank lines or else into
// fixed-size pieces, so that a one-file corpus gets a held-out split) is
// tokenised, followed by the tokenizer's end-of-text id (EOT), and put in
// the train or the held-out split by a hash of its bytes (HeldOut). The
// documents of a split are concatenated, in input order, into one token
// stream s, and cut into sequences of T+1 tokens of which consecutive ones
// share one token: sequence i is s[i·T : i·T+T+1], so that its inputs are
// its first T tokens and its targets its last T. A stream of L tokens gives
// floor((L-1)/T) sequences; the tokens after the last whole sequence are
// dropped (Totals reports how many).
//
// Consecutive sequences go into the same shard until it holds
// Config.ShardBytes of payload (tokens, and the loss mask if any); a shard
// with N sequences stores the N·T+1 tokens they span, so the first token
// of a shard repeats the last of the one before it and every shard can be
// read on its own.
//
// # Chat data and the loss mask
//
// With Format chat or prompt-completion, each JSONL record is a
// conversation ({"messages": [{"role", "content"}, ...]}, or {"prompt",
// "completion"} read as a user message and the assistant's answer). It is
// rendered with Config.ChatTemplate (package model/chat: Llama 3's or
// ChatML) and tokenised with the template's control tokens as single ids,
// followed by an EOT; each token gets a flag: trained, for the assistant
// messages' content and the end-of-turn token after each, or not, for
// everything else (system and user turns, headers, the EOT). The split of
// such a record is decided by the hash of its messages' JSON encoding.
//
// Records are packed into the split's stream like documents, so a record
// may straddle two sequences: a trained token that is a target of a
// sequence which does not hold its record's start is predicted without the
// whole prompt (SourceStats.TrainedCut counts them). A record whose prompt
// (its tokens before the first trained one) is longer than a sequence is
// left out (ReasonPromptTooLong), as is a conversation without an assistant
// message (ReasonNoAnswer); both are counted.
//
// The flags are stored with the tokens as a loss mask (format version 2,
// Manifest.LossMask). Dataset.SequenceMask returns a sequence's flags
// beside Dataset.Sequence's tokens: the loss counts on target j when flag
// j+1 is set, and a trainer passes the other targets as −1. A dataset
// without a mask is version 1, as before: every target counts.
//
// # Shard file
//
// All integers are little-endian. A shard file is a header, then the
// payload:
//
//	offset  size  field
//	0       8     magic "BRDSHARD"
//	8       2     format version: 1, or 2 with a loss mask
//	10      1     token width w in bytes: 2 (uint16) when vocab ≤ 65536, else 4 (uint32)
//	11      1     n, length of the tokenizer name, 1..32
//	12      4     vocab V: every token id is < V
//	16      4     sequence length T, 1..MaxSeqLen
//	20      8     sequence count N, ≥ 1
//	28      8     C, length of the compressed payload in bytes
//	36      4     CRC-32C (Castagnoli) of the uncompressed payload
//	40      n     tokenizer name ("byte", "gpt2"): ASCII letters, digits, '_', '-', '.'
//	40+n    4     CRC-32C of bytes [0, 40+n): the header checksum
//	44+n    C     payload: one zstd frame that decompresses to (N·T+1)·w bytes,
//	              the N·T+1 tokens, each w bytes; in version 2 followed by
//	              the loss mask, ceil((N·T+1)/8) bytes: bit i%8 of byte i/8
//	              is 1 when the loss counts on token i as a target, the
//	              unused high bits of the last byte 0
//
// The file is exactly 44+n+C bytes long. The uncompressed payload is at most
// MaxPayloadBytes. A reader checks, in order: the header (magic, version,
// fields, header checksum), the file length, the SHA-256 of the file against
// its name, and then the payload (zstd, length, checksum, every token < V,
// the mask's unused bits).
//
// # Manifest
//
// manifest.json is a JSON object (schema in Manifest): the dataset's id and
// name, format version, whether it has a loss mask (loss_mask, version 2
// only), tokenizer, vocab, EOT, sequence length, held-out
// fraction, one entry per shard (hash, split, sequences, tokens, file bytes)
// in order — train shards first, then held-out ones, each in stream order —
// the totals per split, and statistics of the source (files, documents,
// bytes, tokens, and what was skipped, counted by reason).
//
// The id is the hex SHA-256 of the dataset's content: the compact JSON
// encoding (Go's encoding/json: fields in schema order, map keys sorted, no
// spaces) of the manifest with id and name set to empty strings. Two
// datasets with the same id hold the same shards in the same order; the
// name is only a label. ReadManifest recomputes the id and refuses a
// manifest whose id does not match. (Shard hashes cover the compressed
// bytes, so a different zstd encoder version can give another id for the
// same text.)
//
// # Sequence ids
//
// Global sequence ids number the sequences of one split across its shards in
// manifest order: the train split's ids are 0..Totals.Train.Sequences-1, the
// held-out split's separately 0..Totals.Heldout.Sequences-1.
// Dataset.Sequence returns a sequence by id; Assign hands out train ids.
//
// # Placement and sampling
//
// Place decides which r nodes hold each shard (weighted rendezvous hashing,
// capacity-aware); PlaceLocal keeps a federated dataset on its owner.
// GlobalBatch fixes global batch k of a data-epoch from (seed, epoch, k)
// alone, and Assign splits it among an epoch's members, preferring members
// that hold the sequences' shards. Both are pure functions of values the
// coordinator agrees on, so every node computes the same answer alone.
package shard
