package coordinator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	bolt "go.etcd.io/bbolt"
)

// Files under Deps.DataDir.
const (
	storeFile   = "raft.db"   // bbolt: the Raft log and stable store
	snapshotDir = "snapshots" // raft.FileSnapshotStore's directory
)

var (
	bucketLogs   = []byte("logs")
	bucketStable = []byte("stable")
	// keyCurrentTerm is the stable-store key raft keeps its term under
	// (raft's own unexported keyCurrentTerm).
	keyCurrentTerm = []byte("CurrentTerm")
)

// errKeyNotFound is what the stable store returns for a missing key. raft
// compares the error's text with "not found", so the text must stay as is.
var errKeyNotFound = errors.New("not found")

// maxLogEntrySize bounds one stored log entry; raft never writes bigger
// ones because commands are bounded by MaxCommandSize.
const maxLogEntrySize = 64 << 20

// boltStore is a raft.LogStore and raft.StableStore in one bbolt file.
// Every write is one fsynced bbolt transaction. It is safe for concurrent
// use.
type boltStore struct {
	db *bolt.DB
}

var (
	_ raft.LogStore          = (*boltStore)(nil)
	_ raft.StableStore       = (*boltStore)(nil)
	_ raft.MonotonicLogStore = (*boltStore)(nil)
)

// openBoltStore opens (creating if needed) the store at path. It waits at
// most lockTimeout for the file lock another process or Coordinator holds.
func openBoltStore(path string, readOnly bool, lockTimeout time.Duration) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      lockTimeout,
		ReadOnly:     readOnly,
		FreelistType: bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("coordinator: open %s: %w", path, err)
	}
	if !readOnly {
		err = db.Update(func(tx *bolt.Tx) error {
			if _, err := tx.CreateBucketIfNotExists(bucketLogs); err != nil {
				return err
			}
			_, err := tx.CreateBucketIfNotExists(bucketStable)
			return err
		})
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("coordinator: init %s: %w", path, err)
		}
	}
	return &boltStore{db: db}, nil
}

func (s *boltStore) Close() error { return s.db.Close() }

// IsMonotonic tells raft that indexes only grow (after a restore raft
// deletes the whole log rather than leaving gaps).
func (s *boltStore) IsMonotonic() bool { return true }

func indexKey(i uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], i)
	return k[:]
}

func (s *boltStore) edgeIndex(last bool) (uint64, error) {
	var idx uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		k, _ := c.First()
		if last {
			k, _ = c.Last()
		}
		if k == nil {
			return nil
		}
		if len(k) != 8 {
			return fmt.Errorf("%w: log key of %d bytes", ErrCorruptLog, len(k))
		}
		idx = binary.BigEndian.Uint64(k)
		return nil
	})
	return idx, err
}

// FirstIndex returns the first index written, 0 for no entries.
func (s *boltStore) FirstIndex() (uint64, error) { return s.edgeIndex(false) }

// LastIndex returns the last index written, 0 for no entries.
func (s *boltStore) LastIndex() (uint64, error) { return s.edgeIndex(true) }

// GetLog reads the entry at index into l, or returns raft.ErrLogNotFound.
func (s *boltStore) GetLog(index uint64, l *raft.Log) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		if b == nil {
			return raft.ErrLogNotFound
		}
		v := b.Get(indexKey(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		got, err := decodeLog(v)
		if err != nil {
			return err
		}
		if got.Index != index {
			return fmt.Errorf("%w: entry under index %d says %d", ErrCorruptLog, index, got.Index)
		}
		*l = got
		return nil
	})
}

// StoreLog stores one entry.
func (s *boltStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs stores entries in one transaction.
func (s *boltStore) StoreLogs(logs []*raft.Log) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		for _, l := range logs {
			if err := b.Put(indexKey(l.Index), encodeLog(l)); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange deletes the entries with indexes min..max inclusive.
func (s *boltStore) DeleteRange(min, max uint64) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketLogs)
		// Collect first: deleting under a moving cursor can skip keys.
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(indexKey(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set stores a stable value.
func (s *boltStore) Set(key, val []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketStable).Put(key, val)
	})
}

// Get returns a stable value, or an error whose text is "not found".
func (s *boltStore) Get(key []byte) ([]byte, error) {
	var out []byte
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketStable)
		if b == nil {
			return errKeyNotFound
		}
		v := b.Get(key)
		if v == nil {
			return errKeyNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetUint64 stores a stable uint64 (8 bytes, big endian).
func (s *boltStore) SetUint64(key []byte, val uint64) error { return s.Set(key, indexKey(val)) }

// GetUint64 returns a stable uint64, or an error whose text is "not found".
func (s *boltStore) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: stable key %q holds %d bytes, want 8", ErrCorruptLog, key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

// Log entry encoding, version 1:
//
//	byte    version (1)
//	byte    flags (bit 0: AppendedAt is set)
//	uvarint Index
//	uvarint Term
//	byte    Type
//	varint  AppendedAt in Unix nanoseconds (only with flag bit 0)
//	uvarint len(Data), Data
//	uvarint len(Extensions), Extensions
const logEncodingVersion = 1

func encodeLog(l *raft.Log) []byte {
	b := make([]byte, 0, 2+4*binary.MaxVarintLen64+1+len(l.Data)+len(l.Extensions))
	var flags byte
	if !l.AppendedAt.IsZero() {
		flags |= 1
	}
	b = append(b, logEncodingVersion, flags)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	if flags&1 != 0 {
		b = binary.AppendVarint(b, l.AppendedAt.UnixNano())
	}
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	return b
}

// decodeLog decodes an entry written by encodeLog. The returned slices are
// copies. Bad input yields an error wrapping ErrCorruptLog.
func decodeLog(b []byte) (raft.Log, error) {
	var l raft.Log
	bad := func(what string) (raft.Log, error) {
		return raft.Log{}, fmt.Errorf("%w: log entry: %s", ErrCorruptLog, what)
	}
	if len(b) > maxLogEntrySize {
		return bad("too large")
	}
	if len(b) < 2 {
		return bad("short header")
	}
	if b[0] != logEncodingVersion {
		return bad(fmt.Sprintf("version %d", b[0]))
	}
	flags := b[1]
	if flags&^1 != 0 {
		return bad(fmt.Sprintf("flags %#x", flags))
	}
	b = b[2:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(b)) {
			return nil, false
		}
		var out []byte
		if n > 0 {
			out = append([]byte(nil), b[:n]...)
		}
		b = b[n:]
		return out, true
	}
	var ok bool
	if l.Index, ok = uv(); !ok {
		return bad("index")
	}
	if l.Term, ok = uv(); !ok {
		return bad("term")
	}
	if len(b) < 1 {
		return bad("type")
	}
	l.Type = raft.LogType(b[0])
	b = b[1:]
	if flags&1 != 0 {
		ns, n := binary.Varint(b)
		if n <= 0 {
			return bad("appended-at time")
		}
		b = b[n:]
		l.AppendedAt = time.Unix(0, ns)
	}
	if l.Data, ok = bytesField(); !ok {
		return bad("data length")
	}
	if l.Extensions, ok = bytesField(); !ok {
		return bad("extensions length")
	}
	if len(b) != 0 {
		return bad(fmt.Sprintf("%d trailing bytes", len(b)))
	}
	return l, nil
}

// HasState reports whether dataDir holds Raft state: a current term, a log
// entry or a snapshot. The bootstrap-expect rule lets a cluster bootstrap
// only when none of the expected servers has state. It does not create
// anything. Call it before New on the same directory: a running Coordinator
// holds the store's lock (use (*Coordinator).HasState then), and HasState
// gives up after about a second waiting for it.
func HasState(dataDir string) (bool, error) {
	snaps, err := hasSnapshots(filepath.Join(dataDir, snapshotDir))
	if err != nil || snaps {
		return snaps, err
	}
	path := filepath.Join(dataDir, storeFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	s, err := openBoltStore(path, true, time.Second)
	if err != nil {
		return false, err
	}
	defer s.Close()
	return storeHasState(s)
}

func storeHasState(s *boltStore) (bool, error) {
	term, err := s.GetUint64(keyCurrentTerm)
	if err != nil && !errors.Is(err, errKeyNotFound) {
		return false, err
	}
	if term > 0 {
		return true, nil
	}
	last, err := s.LastIndex()
	return last > 0, err
}

// hasSnapshots reports whether dir holds a complete snapshot (a directory
// raft.FileSnapshotStore finished: with a meta.json, not ending in .tmp).
func hasSnapshots(dir string) (bool, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("coordinator: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() || filepath.Ext(e.Name()) == ".tmp" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "meta.json")); err == nil {
			return true, nil
		}
	}
	return false, nil
}
