package blobstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/braidml/braid/transport"
)

// Source is a peer to fetch from.
type Source struct {
	Peer transport.PeerID
	Addr string
}

func (s Source) String() string { return fmt.Sprintf("%s at %s", s.Peer, s.Addr) }

// DefaultTimeout is FetchOptions.Timeout when it is zero.
const DefaultTimeout = 10 * time.Second

// SizeUnknown, as Fetch's size, takes the size the source announces (the
// hash still guards the content).
const SizeUnknown = -1

// fetchChunk is how many bytes Fetch gathers from the stream before it
// writes them to disk.
const fetchChunk = 256 << 10

// FetchOptions tune Store.Fetch. The zero value is the default.
type FetchOptions struct {
	// Timeout bounds every wait on a source: the dial, sending the
	// request, and each read of the response (so a source that stalls
	// mid-transfer is given up after Timeout without data, not after the
	// whole transfer's duration). 0 means DefaultTimeout.
	Timeout time.Duration
	// Lane is the transport.DialOptions.Lane of the streams Fetch opens.
	Lane int
	// Progress, when set, is called after each chunk written to disk, on
	// Fetch's goroutine; it must not block.
	Progress func(Progress)
	// Logger receives the failures of sources that Fetch recovers from by
	// trying the next. Nil means slog.Default().
	Logger *slog.Logger
}

// Progress reports how a Fetch is going.
type Progress struct {
	Hash     string
	Source   Source // the source being read
	Done     int64  // bytes of the object on disk, resumed ones included
	Total    int64  // the object's size
	Received int64  // bytes this Fetch received over the wire, all sources together
}

// SourceError is why one source failed.
type SourceError struct {
	Source Source
	Err    error
}

func (e SourceError) Error() string { return fmt.Sprintf("%s: %v", e.Source, e.Err) }
func (e SourceError) Unwrap() error { return e.Err }

// FetchError is what Fetch returns when no source delivered the object: one
// SourceError per source tried, in order. errors.Is sees through it to each
// source's error (ErrRefused, ErrHashMismatch, context.Canceled, ...).
type FetchError struct {
	Hash     string
	Failures []SourceError
}

func (e *FetchError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "blobstore: fetch %s: ", short(e.Hash))
	for i, f := range e.Failures {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.Error())
	}
	return b.String()
}

func (e *FetchError) Unwrap() []error {
	errs := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		errs[i] = f
	}
	return errs
}

// Fetch downloads object h of size bytes (or SizeUnknown) into the store
// over streams of protocol proto opened with tr, unless it is stored
// already. It tries the sources in order and stops at the first that
// delivers; a source that is unreachable, refuses, lacks the object,
// stalls for longer than opts.Timeout, or serves bytes that do not hash to
// h is skipped. The error, a *FetchError, names every source tried and
// why it failed.
//
// Bytes received are kept in partial/<h>.partial, so that a download cut
// short (by a failing source, ctx, or a crash) resumes where it stopped:
// the next source, or the next Fetch, is asked for the rest only. When a
// resumed download does not hash to h, the partial is discarded and that
// source is asked once more, from the start. The object becomes visible
// only after its hash was verified and it was fsynced.
//
// Fetch is safe for concurrent use. Fetches of one hash in one Store are
// serialised: one that waited for another returns nil if the other stored
// the object, and otherwise tries the sources itself. ctx ends the Fetch
// at once, keeping what was received.
func (s *Store) Fetch(ctx context.Context, tr transport.Transport, proto transport.Protocol, sources []Source, h string, size int64, opts FetchOptions) error {
	if err := checkHash(h); err != nil {
		return fmt.Errorf("blobstore: fetch: %w", err)
	}
	if size < SizeUnknown {
		return fmt.Errorf("blobstore: fetch %s: size %d, want >= 0 or SizeUnknown", short(h), size)
	}
	if tr == nil {
		return fmt.Errorf("blobstore: fetch %s: nil transport", short(h))
	}
	if len(sources) == 0 {
		return fmt.Errorf("blobstore: fetch %s: %w", short(h), ErrNoSources)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Timeout < 0 {
		return fmt.Errorf("blobstore: fetch %s: FetchOptions.Timeout %v, want >= 0", short(h), opts.Timeout)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if done, err := s.stored(h, size); done || err != nil {
		return err
	}
	unlock, err := s.lockDownload(ctx, h)
	if err != nil {
		return fmt.Errorf("blobstore: fetch %s: waiting for another fetch of it: %w", short(h), err)
	}
	defer unlock()
	if done, err := s.stored(h, size); done || err != nil {
		return err
	}

	f := &fetch{store: s, ctx: ctx, tr: tr, proto: proto, hash: h, size: size, opts: opts}
	fe := &FetchError{Hash: h}
	for _, src := range sources {
		err := f.from(src)
		if err == nil {
			return nil
		}
		fe.Failures = append(fe.Failures, SourceError{Source: src, Err: err})
		if ctx.Err() != nil {
			break
		}
		// A source that does not hold the object yet is routine while a
		// dataset's replicas are being made (a placed holder is asked
		// before its own copy arrives): the next source is tried, and the
		// caller hears of it if all fail. Other failures are worth a warning.
		level := slog.LevelWarn
		if errors.Is(err, ErrNotFound) {
			level = slog.LevelDebug
		}
		opts.Logger.Log(ctx, level, "blobstore: source failed", "proto", string(proto), "hash", short(h), "peer", string(src.Peer), "addr", src.Addr, "err", err)
	}
	return fe
}

// stored reports whether h is stored already, with an error when its size
// is not the one expected.
func (s *Store) stored(h string, size int64) (bool, error) {
	info, err := s.Stat(h)
	if err != nil {
		return false, nil
	}
	if size != SizeUnknown && info.Size != size {
		return true, fmt.Errorf("blobstore: fetch %s: %w: stored object has %d bytes, caller expects %d", short(h), ErrSizeMismatch, info.Size, size)
	}
	return true, nil
}

// fetch is one Store.Fetch in progress.
type fetch struct {
	store    *Store
	ctx      context.Context
	tr       transport.Transport
	proto    transport.Protocol
	hash     string
	size     int64 // or SizeUnknown
	opts     FetchOptions
	received int64 // over the wire, all attempts
	buf      []byte
}

// from fetches the object from one source: one attempt, and a second from
// the start when the first resumed a partial download and then found the
// hash (or the range) wrong, which may be the old bytes' fault.
func (f *fetch) from(src Source) error {
	resumed, err := f.attempt(src)
	if err != nil && resumed > 0 && (errors.Is(err, ErrHashMismatch) || errors.Is(err, ErrBadRange)) {
		f.opts.Logger.Warn("blobstore: resumed download failed, starting over", "hash", short(f.hash), "peer", string(src.Peer), "resumed_at", resumed, "err", err)
		_, err = f.attempt(src)
	}
	return err
}

// attempt asks src for the bytes the partial download lacks and appends
// them; with the object complete and verified, it publishes it. It returns
// the offset it resumed from. The partial download is discarded when it
// proves wrong (hash mismatch, or longer than the object); otherwise it is
// kept, with what arrived, for the next attempt.
func (f *fetch) attempt(src Source) (resumed int64, err error) {
	part, hh, offset, err := f.openPartial()
	if err != nil {
		return 0, err
	}
	published := false
	defer func() {
		if published {
			return
		}
		// Keep what arrived for the next attempt; an empty partial is
		// not worth keeping (nor is one already discarded).
		info, err := part.Stat()
		part.Close()
		if err == nil && info.Size() == 0 {
			os.Remove(part.Name())
		}
	}()

	dctx, cancel := context.WithTimeout(f.ctx, f.opts.Timeout)
	st, err := f.tr.Dial(dctx, src.Peer, src.Addr, f.proto, transport.DialOptions{Lane: f.opts.Lane})
	cancel()
	if err != nil {
		if f.ctx.Err() != nil {
			return offset, f.ctx.Err()
		}
		return offset, fmt.Errorf("dial: %w", err)
	}
	defer st.Close()
	// Cancelling ctx closes the stream, which ends any wait on it (a
	// deadline set in the past could be overwritten by the next read's).
	stop := context.AfterFunc(f.ctx, func() { st.Close() })
	defer stop()

	st.SetWriteDeadline(time.Now().Add(f.opts.Timeout))
	if err := transport.WriteFrame(st, request{Hash: f.hash, Offset: uint64(offset)}.encode()); err != nil {
		return offset, f.streamErr("send request", err)
	}
	st.SetReadDeadline(time.Now().Add(f.opts.Timeout))
	frame, err := readFrame(st)
	if err != nil {
		return offset, f.streamErr("read response", err)
	}
	hdr, err := decodeHeader(frame)
	if err != nil {
		return offset, err
	}
	total := int64(hdr.Size) // with OK and bad range
	if (hdr.Status == StatusOK || hdr.Status == StatusBadRange) && f.size != SizeUnknown && total != f.size {
		return offset, fmt.Errorf("%w: peer has %d bytes of %s, want %d", ErrSizeMismatch, total, short(f.hash), f.size)
	}
	if hdr.Status != StatusOK {
		// A bad range means the partial download is longer than the
		// object (whose size we did not know): it cannot be right.
		if hdr.Status == StatusBadRange && offset > 0 {
			f.discard(part)
		}
		return offset, fmt.Errorf("%w (asked for %s from byte %d; peer says: %s)", hdr.Status.err(), short(f.hash), offset, hdr.Reason)
	}

	// Read the rest in chunks, each read bounded by the timeout; what
	// arrived is on disk before an error returns.
	done := offset
	for done < total {
		n, rerr := f.fill(st, f.buf[:min(int64(len(f.buf)), total-done)])
		if n > 0 {
			if _, err := part.Write(f.buf[:n]); err != nil {
				return offset, fmt.Errorf("write %s: %w", part.Name(), err)
			}
			hh.Write(f.buf[:n])
			done += int64(n)
			f.received += int64(n)
			if f.opts.Progress != nil {
				f.opts.Progress(Progress{Hash: f.hash, Source: src, Done: done, Total: total, Received: f.received})
			}
		}
		// A Read may return the last bytes together with io.EOF.
		if rerr != nil && done < total {
			if errors.Is(rerr, io.EOF) {
				return offset, fmt.Errorf("%w: stream ended after %d of %d bytes", ErrBadResponse, done, total)
			}
			return offset, f.streamErr(fmt.Sprintf("read byte %d of %d", done, total), rerr)
		}
	}
	if got := hex.EncodeToString(hh.Sum(nil)); got != f.hash {
		f.discard(part)
		if offset > 0 {
			return offset, fmt.Errorf("%w: %d bytes (%d resumed from disk, %d from this peer) hash to %s", ErrHashMismatch, total, offset, total-offset, short(got))
		}
		return offset, fmt.Errorf("%w: the %d bytes this peer sent hash to %s", ErrHashMismatch, total, short(got))
	}
	published = true
	if err := f.store.publish(part, f.hash); err != nil {
		return offset, fmt.Errorf("store %s: %w", short(f.hash), err)
	}
	return offset, nil
}

// openPartial opens the partial download (creating it) for appending, and
// returns it with a hash of the bytes already in it and their count. A
// partial longer than the expected size is emptied first.
func (f *fetch) openPartial() (*os.File, hash.Hash, int64, error) {
	if f.buf == nil {
		f.buf = make([]byte, fetchChunk)
	}
	path := f.store.partialPath(f.hash)
	part, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, partialPerm)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open partial download: %w", err)
	}
	st, err := part.Stat()
	if err != nil {
		part.Close()
		return nil, nil, 0, fmt.Errorf("open partial download: %w", err)
	}
	offset := st.Size()
	if f.size != SizeUnknown && offset > f.size {
		if err := part.Truncate(0); err != nil {
			part.Close()
			return nil, nil, 0, fmt.Errorf("empty partial download %s: %w", path, err)
		}
		offset = 0
	}
	hh := sha256.New()
	if err := hashFile(hh, part, offset); err != nil {
		part.Close()
		return nil, nil, 0, fmt.Errorf("read partial download: %w", err)
	}
	return part, hh, offset, nil
}

// discard closes and removes a partial download that proved wrong.
func (f *fetch) discard(part *os.File) {
	part.Truncate(0)
	if err := os.Remove(part.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		f.opts.Logger.Warn("blobstore: remove partial download", "path", part.Name(), "err", err)
	}
}

// fill reads into b until it is full, each read bounded by the timeout.
func (f *fetch) fill(st transport.Stream, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		st.SetReadDeadline(time.Now().Add(f.opts.Timeout))
		k, err := st.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// streamErr says what went wrong on a stream during step: ctx ended, the
// peer stalled past the timeout, or the stream failed.
func (f *fetch) streamErr(step string, err error) error {
	switch {
	case f.ctx.Err() != nil:
		return fmt.Errorf("%s: %w", step, f.ctx.Err())
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Errorf("%s: %w: nothing for %v", step, ErrStalled, f.opts.Timeout)
	}
	return fmt.Errorf("%s: %w", step, err)
}
