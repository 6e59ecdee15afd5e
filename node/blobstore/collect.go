package blobstore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Touch sets object h's modification time, which Collect reads as when it
// was stored, to t: a caller about to name an object it already holds (an
// upload answered without its body, a dataset being registered) makes it
// young again, so that a Collect with an earlier cutoff leaves it alone.
// A missing object is ErrNotFound.
func (s *Store) Touch(h string, t time.Time) error {
	if err := checkHash(h); err != nil {
		return fmt.Errorf("blobstore: touch: %w", err)
	}
	s.installMu.RLock()
	defer s.installMu.RUnlock()
	if err := os.Chtimes(s.objectPath(h), time.Time{}, t); err != nil {
		return fmt.Errorf("blobstore: touch %s: %w", short(h), notFound(err))
	}
	return nil
}

// Collected is what one Collect did.
type Collected struct {
	// Objects and Bytes count the objects removed and their bytes.
	Objects int
	Bytes   int64
	// Partials and PartialBytes count the abandoned partial downloads
	// removed.
	Partials     int
	PartialBytes int64
	// Kept counts the bytes of objects that keep did not keep but that
	// were stored (or touched) at or after the cutoff, or that a Fetch was
	// downloading: what is left that nothing names.
	Kept int64
}

// Collect removes every object for which keep returns false and whose
// modification time (when it was stored, or last touched: see Touch) is
// before cutoff, and every partial download of such a hash not written to
// since cutoff. It never removes an object or partial of a hash that a
// Fetch of this store is downloading, nor an object installed or touched
// after Collect looked at it. Readers that have a removed object open keep
// reading it. Private marks stay (see Delete). keep is called without any
// lock of the store held, once or twice per hash. Collect stops at the
// first error other than an object that vanished meanwhile, returning what
// it did until then.
func (s *Store) Collect(keep func(h string) bool, cutoff time.Time) (Collected, error) {
	var c Collected
	for _, sub := range []string{objectsDir, partialDir} {
		entries, err := os.ReadDir(filepath.Join(s.dir, sub))
		if err != nil {
			return c, fmt.Errorf("blobstore: collect: %w", err)
		}
		for _, e := range entries {
			h, path := e.Name(), filepath.Join(s.dir, sub, e.Name())
			if sub == partialDir {
				h = strings.TrimSuffix(h, partialSuffix)
			}
			if !ValidHash(h) || !e.Type().IsRegular() || keep(h) {
				continue
			}
			removed, size, err := s.collectOne(h, path, cutoff)
			if err != nil {
				return c, fmt.Errorf("blobstore: collect %s: %w", short(h), err)
			}
			switch {
			case !removed && sub == objectsDir:
				c.Kept += size
			case removed && sub == objectsDir:
				c.Objects++
				c.Bytes += size
			case removed:
				c.Partials++
				c.PartialBytes += size
			}
		}
	}
	if c.Objects > 0 {
		syncDir(filepath.Join(s.dir, objectsDir))
	}
	return c, nil
}

// collectOne removes path, an object or partial download of h, if no
// Fetch is downloading h and it was last modified before cutoff. It
// returns the file's size whether or not it removed it (0 when it had
// vanished).
func (s *Store) collectOne(h, path string, cutoff time.Time) (removed bool, size int64, err error) {
	s.mu.RLock()
	_, busy := s.fetching[h]
	s.mu.RUnlock()
	s.installMu.Lock()
	defer s.installMu.Unlock()
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, err
	}
	if busy || !st.ModTime().Before(cutoff) {
		return false, st.Size(), nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, st.Size(), err
	}
	return true, st.Size(), nil
}
