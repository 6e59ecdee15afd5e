package blobstore

import "errors"

// Errors. Functions wrap them with the hash (short form), the peer and the
// path involved; test with errors.Is.
var (
	// ErrBadHash: a hash that is not 64 lowercase hex digits.
	ErrBadHash = errors.New("blobstore: malformed hash (want 64 lowercase hex digits)")
	// ErrNotFound: the store (or the peer asked) has no such object.
	ErrNotFound = errors.New("blobstore: object not found")
	// ErrHashMismatch: bytes whose SHA-256 is not the hash they were
	// stored or served under.
	ErrHashMismatch = errors.New("blobstore: content does not match its hash")
	// ErrSizeMismatch: an object whose size is not the size the caller
	// expected.
	ErrSizeMismatch = errors.New("blobstore: size mismatch")
	// ErrTooLarge: more bytes than the receiver accepts for one object.
	ErrTooLarge = errors.New("blobstore: object too large")
	// ErrRefused: the peer refused the object because it is private there.
	ErrRefused = errors.New("blobstore: refused: object is private")
	// ErrBadRequest: the peer could not decode our request (or a request
	// we received did not decode).
	ErrBadRequest = errors.New("blobstore: bad request")
	// ErrBadRange: the range asked for lies outside the object.
	ErrBadRange = errors.New("blobstore: range outside the object")
	// ErrUnavailable: the peer has the object but could not serve it (a
	// disk error, or it is shutting down).
	ErrUnavailable = errors.New("blobstore: peer could not serve the object")
	// ErrBadResponse: a response header that does not decode, or a stream
	// that ends before the bytes it announced.
	ErrBadResponse = errors.New("blobstore: malformed or truncated response")
	// ErrStalled: a peer sent nothing for longer than the read timeout.
	ErrStalled = errors.New("blobstore: peer stalled")
	// ErrNoSources: Fetch was given no source to try.
	ErrNoSources = errors.New("blobstore: no sources")
)
