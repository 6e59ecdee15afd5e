// Package provenance is the record of where a model came from, written
// beside its weights: provenance.json (Record), a detached signature
// (provenance.sig, made by the exporting node's cluster certificate) and a
// human-readable model card (README.md, Hugging Face's layout).
//
// The record is built by its writer (package node from the replicated
// state for `braid job export`, cmd/braid for a single-process `braid
// train`); this package only defines its form, writes and reads the files,
// signs the exact bytes of provenance.json and verifies a directory against
// them: the signature, the signer's chain to a cluster CA, and the SHA-256
// of every file the record names.
//
// What it does not do: decide what goes into a record, fetch anything
// (revoked serials are the caller's to give), or hold private keys beyond a
// crypto.Signer it is handed. It imports only the standard library.
package provenance
