package coordinator

import (
	"bytes"
	"errors"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func openTestStore(t *testing.T, dir string) *boltStore {
	t.Helper()
	s, err := openBoltStore(filepath.Join(dir, storeFile), false, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBoltStoreLogs(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	if first, _ := s.FirstIndex(); first != 0 {
		t.Fatalf("empty store FirstIndex = %d", first)
	}
	if last, _ := s.LastIndex(); last != 0 {
		t.Fatalf("empty store LastIndex = %d", last)
	}
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty store = %v", err)
	}
	at := time.Unix(1700000000, 123456789)
	var logs []*raft.Log
	for i := uint64(1); i <= 10; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: 1 + i/5, Type: raft.LogCommand, Data: []byte{byte(i)}, AppendedAt: at})
	}
	logs[3].Extensions = []byte("ext")
	logs[4].Data = nil
	logs[5].AppendedAt = time.Time{}
	logs[6].Type = raft.LogConfiguration
	if err := s.StoreLogs(logs[:9]); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(logs[9]); err != nil {
		t.Fatal(err)
	}
	for _, want := range logs {
		var got raft.Log
		if err := s.GetLog(want.Index, &got); err != nil {
			t.Fatal(err)
		}
		if !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("entry %d: time %v, want %v", want.Index, got.AppendedAt, want.AppendedAt)
		}
		w := *want
		got.AppendedAt, w.AppendedAt = time.Time{}, time.Time{}
		if !reflect.DeepEqual(got, w) {
			t.Fatalf("entry %d: got %+v, want %+v", want.Index, got, w)
		}
	}
	// Compaction from the front, truncation at the back.
	if err := s.DeleteRange(1, 4); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRange(9, 10); err != nil {
		t.Fatal(err)
	}
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	if first != 5 || last != 8 {
		t.Fatalf("after deletes: first %d last %d, want 5 8", first, last)
	}
	if err := s.GetLog(4, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("deleted entry: %v", err)
	}
	// Durable: reopen and read again.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTestStore(t, dir)
	defer s.Close()
	if err := s.GetLog(7, &l); err != nil || l.Type != raft.LogConfiguration {
		t.Fatalf("after reopen: %+v, %v", l, err)
	}
}

func TestBoltStoreStable(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir)
	// raft checks the text of the "missing key" error.
	if _, err := s.Get([]byte("k")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get(missing) = %v, want \"not found\"", err)
	}
	if _, err := s.GetUint64([]byte("k")); err == nil || err.Error() != "not found" {
		t.Fatalf("GetUint64(missing) = %v, want \"not found\"", err)
	}
	if err := s.Set([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.SetUint64([]byte("n"), 42); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetUint64([]byte("k")); !errors.Is(err, ErrCorruptLog) {
		t.Fatalf("GetUint64 of a 1-byte value = %v", err)
	}
	s.Close()
	s = openTestStore(t, dir)
	defer s.Close()
	if v, err := s.Get([]byte("k")); err != nil || string(v) != "v" {
		t.Fatalf("Get = %q, %v", v, err)
	}
	if v, err := s.GetUint64([]byte("n")); err != nil || v != 42 {
		t.Fatalf("GetUint64 = %d, %v", v, err)
	}
}

func TestHasState(t *testing.T) {
	dir := t.TempDir()
	if has, err := HasState(dir); has || err != nil {
		t.Fatalf("empty dir: %v, %v", has, err)
	}
	if has, err := HasState(filepath.Join(dir, "missing")); has || err != nil {
		t.Fatalf("missing dir: %v, %v", has, err)
	}
	s := openTestStore(t, dir)
	s.Close()
	if has, err := HasState(dir); has || err != nil {
		t.Fatalf("empty store: %v, %v", has, err)
	}
	s = openTestStore(t, dir)
	if err := s.SetUint64(keyCurrentTerm, 3); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if has, err := HasState(dir); !has || err != nil {
		t.Fatalf("store with a term: %v, %v", has, err)
	}
	dir2 := t.TempDir()
	s = openTestStore(t, dir2)
	s.StoreLog(&raft.Log{Index: 1, Term: 1})
	s.Close()
	if has, err := HasState(dir2); !has || err != nil {
		t.Fatalf("store with a log entry: %v, %v", has, err)
	}
}

func TestDecodeLogRejects(t *testing.T) {
	good := encodeLog(&raft.Log{Index: 3, Term: 2, Data: []byte("abc"), Extensions: []byte("x"), AppendedAt: time.Unix(5, 0)})
	if _, err := decodeLog(good); err != nil {
		t.Fatal(err)
	}
	for i := range len(good) {
		if _, err := decodeLog(good[:i]); !errors.Is(err, ErrCorruptLog) {
			t.Errorf("truncated to %d bytes: %v", i, err)
		}
	}
	for _, b := range [][]byte{
		append(bytes.Clone(good), 0),         // trailing byte
		append([]byte{2}, good[1:]...),       // version
		append([]byte{1, 0x80}, good[2:]...), // unknown flag
	} {
		if _, err := decodeLog(b); !errors.Is(err, ErrCorruptLog) {
			t.Errorf("%x: %v", b, err)
		}
	}
}

// FuzzDecodeLog: decoding stored entries never panics, and what decodes
// re-encodes to the same bytes.
func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog(&raft.Log{Index: 1, Term: 1, Data: []byte("d")}))
	f.Add(encodeLog(&raft.Log{Index: 1 << 40, Term: 7, Type: raft.LogConfiguration, Extensions: []byte("e"), AppendedAt: time.Unix(0, -5)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := decodeLog(b)
		if err != nil {
			return
		}
		if again := encodeLog(&l); !bytes.Equal(again, b) {
			// Varints have several encodings; a decoded entry must at least
			// decode the same after re-encoding.
			l2, err := decodeLog(again)
			if err != nil || !reflect.DeepEqual(l, l2) {
				t.Fatalf("re-encode of %x: %x, %v", b, again, err)
			}
		}
	})
}
