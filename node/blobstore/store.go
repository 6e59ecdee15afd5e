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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/braidml/braid/internal/atomicfile"
)

// The subdirectories of a store (see the package comment).
const (
	objectsDir = "objects"
	partialDir = "partial"
	privateDir = "private"
	tmpDir     = "tmp"

	partialSuffix = ".partial"
)

// The modes of what a store writes: private to the user the process runs
// as (the shards of a federated member's local dataset and checkpoints must
// not be readable by other local users), and objects read-only besides,
// since an object's name is its content.
const (
	dirPerm     = 0o700
	objectPerm  = 0o400
	partialPerm = 0o600
	markerPerm  = 0o600
)

// ValidHash reports whether h names an object: exactly 64 lowercase hex
// digits (a SHA-256). Only such names are ever joined into a path.
func ValidHash(h string) bool {
	if len(h) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Sum returns the hash of b, as objects are named.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// short is the first 12 digits of a hash, for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func checkHash(h string) error {
	if !ValidHash(h) {
		return fmt.Errorf("%w: %.80q", ErrBadHash, h)
	}
	return nil
}

// Info describes a stored object.
type Info struct {
	Hash    string
	Size    int64
	Private bool
	ModTime time.Time // when it was stored
}

// Store is a content-addressed object store in one directory. All methods
// are safe for concurrent use; one Store per directory per process (see
// the package comment).
type Store struct {
	dir string
	now func() time.Time // dates installed objects; nil: the file system does

	mu       sync.RWMutex
	private  map[string]bool          // marked private (mirrors private/)
	fetching map[string]chan struct{} // hashes a Fetch is downloading; closed when it ends

	// installMu orders what names or dates an entry of objects/ (publish's
	// rename, Touch) against Collect's check-then-remove of that entry:
	// held shared by the former, exclusively by Collect, so that Collect
	// never removes an object installed or touched after it looked.
	installMu sync.RWMutex
}

// Open opens the store in dir, creating the directory and its
// subdirectories if needed (mode 0700; existing ones wider than that are
// narrowed to it, see the package comment). It removes what an interrupted Put or Receive
// left in tmp/ (partial downloads are kept, to be resumed) and loads the
// set of private objects.
func Open(dir string) (*Store, error) { return OpenWithClock(dir, nil) }

// OpenWithClock is Open with a clock that dates every object the store
// installs (its modification time, which Collect ages objects by); nil
// leaves that to the file system. Tests pass a clock they move forward.
func OpenWithClock(dir string, now func() time.Time) (*Store, error) {
	for _, sub := range []string{"", objectsDir, partialDir, privateDir, tmpDir} {
		if err := mkdirPrivate(filepath.Join(dir, sub)); err != nil {
			return nil, fmt.Errorf("blobstore: open %s: %w", dir, err)
		}
	}
	s := &Store{dir: dir, now: now, private: map[string]bool{}, fetching: map[string]chan struct{}{}}
	leftovers, err := os.ReadDir(filepath.Join(dir, tmpDir))
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: %w", dir, err)
	}
	for _, e := range leftovers {
		if err := os.RemoveAll(filepath.Join(dir, tmpDir, e.Name())); err != nil {
			return nil, fmt.Errorf("blobstore: open %s: clean tmp: %w", dir, err)
		}
	}
	// Privacy fails closed: a private/ that cannot be read is an error,
	// not an empty set.
	marks, err := os.ReadDir(filepath.Join(dir, privateDir))
	if err != nil {
		return nil, fmt.Errorf("blobstore: open %s: read private marks: %w", dir, err)
	}
	for _, e := range marks {
		if ValidHash(e.Name()) {
			s.private[e.Name()] = true
		}
	}
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) objectPath(h string) string { return filepath.Join(s.dir, objectsDir, h) }
func (s *Store) partialPath(h string) string {
	return filepath.Join(s.dir, partialDir, h+partialSuffix)
}
func (s *Store) markerPath(h string) string { return filepath.Join(s.dir, privateDir, h) }

// Put stores what r yields and returns its hash and size. The object
// becomes visible only once all of it is on disk (fsynced); storing bytes
// that are already stored is harmless.
func (s *Store) Put(r io.Reader) (hash string, size int64, err error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "put-*")
	if err != nil {
		return "", 0, fmt.Errorf("blobstore: put: %w", err)
	}
	hh := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, hh), r)
	if err != nil {
		discard(f)
		return "", 0, fmt.Errorf("blobstore: put: %w", err)
	}
	hash = hex.EncodeToString(hh.Sum(nil))
	if err := s.publish(f, hash); err != nil {
		return "", 0, fmt.Errorf("blobstore: put %s: %w", short(hash), err)
	}
	return hash, size, nil
}

// PutFile stores a copy of the file at path and returns its hash and size.
func (s *Store) PutFile(path string) (hash string, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("blobstore: put: %w", err)
	}
	defer f.Close()
	hash, size, err = s.Put(f)
	if err != nil {
		return "", 0, fmt.Errorf("%w (from %s)", err, path)
	}
	return hash, size, nil
}

// Receive stores what r yields as object want and returns its size. It
// is how bytes from outside the cluster (an upload) enter the store: they
// are written to a temporary file in tmp/ and hashed as they arrive, at
// most maxBytes of them (ErrTooLarge beyond), and the object is installed
// only when they hash to want (ErrHashMismatch otherwise). On any failure —
// a read error, too many bytes, a mismatch — the temporary file is removed
// and nothing is stored. Storing bytes that are already stored is harmless
// (callers that want to skip the transfer check Has first). Errors name the
// object, never its bytes.
func (s *Store) Receive(r io.Reader, want string, maxBytes int64) (size int64, err error) {
	if err := checkHash(want); err != nil {
		return 0, fmt.Errorf("blobstore: receive: %w", err)
	}
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "receive-*")
	if err != nil {
		return 0, fmt.Errorf("blobstore: receive %s: %w", short(want), err)
	}
	hh := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, hh), io.LimitReader(r, maxBytes+1))
	switch {
	case err != nil:
		discard(f)
		return 0, fmt.Errorf("blobstore: receive %s: after %d bytes: %w", short(want), size, err)
	case size > maxBytes:
		discard(f)
		return 0, fmt.Errorf("blobstore: receive %s: %w: more than the %d bytes allowed", short(want), ErrTooLarge, maxBytes)
	}
	if got := hex.EncodeToString(hh.Sum(nil)); got != want {
		discard(f)
		return 0, fmt.Errorf("blobstore: receive %s: %w: the %d bytes received hash to %s", short(want), ErrHashMismatch, size, short(got))
	}
	if err := s.publish(f, want); err != nil {
		return 0, fmt.Errorf("blobstore: receive %s: %w", short(want), err)
	}
	return size, nil
}

// publish makes the complete, verified file f (in tmp/ or partial/) the
// object h: fsync, read-only, rename into objects/, fsync the directory.
// It closes f, and removes it on failure.
func (s *Store) publish(f *os.File, h string) error {
	if err := f.Sync(); err != nil {
		discard(f)
		return err
	}
	if err := f.Chmod(objectPerm); err != nil {
		discard(f)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return err
	}
	if s.now != nil {
		t := s.now()
		if err := os.Chtimes(f.Name(), t, t); err != nil {
			os.Remove(f.Name())
			return err
		}
	}
	s.installMu.RLock()
	err := os.Rename(f.Name(), s.objectPath(h))
	s.installMu.RUnlock()
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	// Some file systems refuse to sync a directory; the object is in
	// place either way, so that is not worth failing the Put for.
	syncDir(filepath.Join(s.dir, objectsDir))
	return nil
}

// mkdirPrivate creates dir (and its parents) with mode 0700, and narrows dir
// to 0700 if it exists with group or other permission bits. A dir that is a
// symbolic link is refused rather than followed.
func mkdirPrivate(dir string) error {
	if err := os.MkdirAll(dir, dirPerm); err != nil {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s: not a directory (%v)", dir, st.Mode().Type())
	}
	if st.Mode().Perm()&0o077 != 0 {
		return os.Chmod(dir, st.Mode().Perm()&dirPerm)
	}
	return nil
}

// discard closes and removes an unfinished file.
func discard(f *os.File) {
	f.Close()
	os.Remove(f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Has reports whether object h is stored (false for a malformed hash).
func (s *Store) Has(h string) bool {
	if !ValidHash(h) {
		return false
	}
	_, err := os.Stat(s.objectPath(h))
	return err == nil
}

// Open opens object h for reading and returns it with its size. The caller
// closes it. A missing object is ErrNotFound.
func (s *Store) Open(h string) (*os.File, int64, error) {
	if err := checkHash(h); err != nil {
		return nil, 0, fmt.Errorf("blobstore: open: %w", err)
	}
	f, err := os.Open(s.objectPath(h))
	if err != nil {
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", short(h), notFound(err))
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("blobstore: open %s: %w", short(h), err)
	}
	return f, st.Size(), nil
}

// notFound turns fs.ErrNotExist into ErrNotFound (keeping the path error).
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%v)", ErrNotFound, err)
	}
	return err
}

// Path returns the file that holds object h, for readers that want a path
// (a model loader). The file must not be modified. A missing object is
// ErrNotFound.
func (s *Store) Path(h string) (string, error) {
	if err := checkHash(h); err != nil {
		return "", fmt.Errorf("blobstore: path: %w", err)
	}
	p := s.objectPath(h)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("blobstore: path %s: %w", short(h), notFound(err))
	}
	return p, nil
}

// Stat describes object h; a missing object is ErrNotFound.
func (s *Store) Stat(h string) (Info, error) {
	if err := checkHash(h); err != nil {
		return Info{}, fmt.Errorf("blobstore: stat: %w", err)
	}
	st, err := os.Stat(s.objectPath(h))
	if err != nil {
		return Info{}, fmt.Errorf("blobstore: stat %s: %w", short(h), notFound(err))
	}
	return Info{Hash: h, Size: st.Size(), Private: s.Private(h), ModTime: st.ModTime()}, nil
}

// List describes every stored object, sorted by hash. Files in objects/
// whose names are not hashes are ignored.
func (s *Store) List() ([]Info, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, objectsDir))
	if err != nil {
		return nil, fmt.Errorf("blobstore: list: %w", err)
	}
	var out []Info
	for _, e := range entries {
		h := e.Name()
		if !ValidHash(h) || !e.Type().IsRegular() {
			continue
		}
		st, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("blobstore: list: %w", err)
		}
		out = append(out, Info{Hash: h, Size: st.Size(), Private: s.Private(h), ModTime: st.ModTime()})
	}
	slices.SortFunc(out, func(a, b Info) int { return strings.Compare(a.Hash, b.Hash) })
	return out, nil
}

// Delete removes object h and any partial download of it; ErrNotFound if
// there was no object. A private mark stays (privacy is a property of the
// bytes: storing them again keeps them private). Readers that have the
// object open keep reading it.
func (s *Store) Delete(h string) error {
	if err := checkHash(h); err != nil {
		return fmt.Errorf("blobstore: delete: %w", err)
	}
	if err := os.Remove(s.partialPath(h)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blobstore: delete %s: %w", short(h), err)
	}
	if err := os.Remove(s.objectPath(h)); err != nil {
		return fmt.Errorf("blobstore: delete %s: %w", short(h), notFound(err))
	}
	syncDir(filepath.Join(s.dir, objectsDir))
	return nil
}

// MarkPrivate marks object h private: from the moment it is called, no
// Server serving this store sends a byte of it to any peer, and a transfer
// of it under way stops. The mark is persisted (a marker file, fsynced) and
// survives a restart. h need not be stored yet. If persisting fails the
// mark still holds in memory (privacy fails closed) and the error says so.
func (s *Store) MarkPrivate(h string) error {
	if err := checkHash(h); err != nil {
		return fmt.Errorf("blobstore: mark private: %w", err)
	}
	s.mu.Lock()
	s.private[h] = true
	s.mu.Unlock()
	if err := atomicfile.WriteBytes(s.markerPath(h), []byte("private\n"), markerPerm); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return fmt.Errorf("blobstore: mark %s private: %w (it is private until this process ends, but the mark is not on disk)", short(h), err)
	}
	return nil
}

// Private reports whether h is marked private.
func (s *Store) Private(h string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.private[h]
}

// Partial reports how many bytes of a download of h are on disk, waiting to
// be resumed.
func (s *Store) Partial(h string) (size int64, ok bool) {
	if !ValidHash(h) {
		return 0, false
	}
	st, err := os.Stat(s.partialPath(h))
	if err != nil {
		return 0, false
	}
	return st.Size(), true
}

// lockDownload makes the caller the only Fetch of h in this process,
// waiting for another to finish or for ctx to end. The caller calls the
// returned function when done.
func (s *Store) lockDownload(ctx context.Context, h string) (unlock func(), err error) {
	for {
		s.mu.Lock()
		busy, ok := s.fetching[h]
		if !ok {
			done := make(chan struct{})
			s.fetching[h] = done
			s.mu.Unlock()
			return func() {
				s.mu.Lock()
				delete(s.fetching, h)
				s.mu.Unlock()
				close(done)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-busy:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// hashFile feeds the first n bytes of f (from its start) to hh.
func hashFile(hh hash.Hash, f *os.File, n int64) error {
	got, err := io.Copy(hh, io.NewSectionReader(f, 0, n))
	if err == nil && got != n {
		err = fmt.Errorf("%s: %d bytes, want %d", f.Name(), got, n)
	}
	return err
}
