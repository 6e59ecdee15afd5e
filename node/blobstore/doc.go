// Package blobstore keeps content-addressed files on a node's local disk
// (dataset shards, model weights, checkpoints) and moves them between peers
// over transport streams.
//
// # The store
//
// An object is named by the SHA-256 of its bytes, written as 64 lowercase
// hex digits (ValidHash). A Store is one directory:
//
//	objects/<hash>           complete, verified objects (read-only files)
//	partial/<hash>.partial   downloads in progress, resumed by the next Fetch
//	private/<hash>           marker: the object is private (never served)
//	tmp/                     Put and Receive write here before the rename
//
// Everything a store writes is private to the user the process runs as:
// directories 0700, objects 0400, partial downloads and markers 0600. Open
// narrows the store's directories to 0700 when they exist wider; narrowing
// files left wider by other software is the caller's (node does it for its
// whole data directory at start).
//
// An object becomes visible (Has, Open, List, the Server) only by a rename
// into objects/ after its bytes were written to a temporary file, fsynced
// and found to match the name, so a reader or a crash sees all of an
// object or nothing. Every method that takes a hash rejects one that is
// not ValidHash (ErrBadHash) before any path is built from it.
//
// A private object belongs to a federated dataset whose bytes must not
// leave this node: MarkPrivate records it in a marker file (so it survives
// restarts) and from then on the Server refuses every request for it, and
// stops a transfer of it that is under way. Marking a hash before its
// object is stored is allowed, and is the way to close the window between
// Put and MarkPrivate.
//
// # The wire protocol
//
// One stream carries one request and one response; the protocol is
// whichever the stream was opened for (transport.ProtoShard for dataset
// shards, transport.ProtoBlob for weights and checkpoints — the format is
// the same). The client opens the stream and writes a request as one
// transport.WriteFrame frame: a 4-byte big-endian length (53 in version 1)
// and then the payload
//
//	offset size field
//	 0      4   magic "BLOB"
//	 4      1   version, 1
//	 5     32   the object's SHA-256, raw bytes (not hex)
//	37      8   offset: the first byte wanted, uint64 big-endian
//	45      8   length: how many bytes from offset, uint64 big-endian;
//	            0 means "to the end of the object"
//
// The server answers with a response header, also one WriteFrame frame: a
// 4-byte big-endian length (14 plus the length of the reason) and
//
//	offset size field
//	 0      4   magic "BLOB"
//	 4      1   version, 1
//	 5      1   status: 0 OK, 1 not found, 2 refused (private),
//	            3 bad request, 4 bad range, 5 unavailable
//	 6      8   the object's total size in bytes, uint64 big-endian (with
//	            OK and bad range; 0 with the other statuses)
//	14    0..256 reason: UTF-8 text saying what was wrong (empty with OK)
//
// With OK the header is followed by exactly the bytes asked for (from
// offset to the end, or length of them) and then the end of the stream.
// With any other status nothing follows and the server closes the stream.
// A range is bad when offset > size or offset+length > size. A request
// frame that does not decode (wrong length, magic or version) gets
// status 3 and the stream is closed; the server never panics on input.
// Both frames are limited to 1 KiB, which leaves room for a later version
// to append fields; a version-1 server rejects a request of any other
// length.
//
// # Transfers
//
// Server answers requests on the streams of one transport.Listener,
// counting the bytes it sends per object (BytesServed) so that tests and
// metrics can show that no byte of a private object left the node.
// Store.Fetch downloads an object from a list of sources, trying each in
// turn, resuming a partial download from the bytes already on disk,
// bounding every read by a deadline, and verifying the hash before the
// object becomes visible.
//
// # Collection
//
// Store.Collect removes the objects (and abandoned partial downloads) that
// the caller does not keep and that are older than a cutoff: an object's
// modification time is when it was installed, or last touched
// (Store.Touch). It never removes an object that a Fetch is downloading or
// that was installed or touched after Collect looked at it.
//
// What this package does not do: decide which peers hold what (placement
// is the coordinator's), retry forever (Fetch tries each source once, or
// twice when a resumed download proved wrong; the caller decides when to
// try again), decide which objects are still needed (Collect asks its
// caller), or share a directory between processes (one Store per directory
// per process: the per-hash download lock and the private set live in
// memory).
package blobstore
