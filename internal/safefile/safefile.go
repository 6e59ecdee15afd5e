// Package safefile opens a file that a user named, for reading, once: it
// refuses anything but a regular file (a directory, a FIFO, a socket, a
// device such as /dev/zero) and a file larger than the caller's limit,
// before a byte is read, with an error that names the path and why.
//
// The open does not block (a FIFO without a writer would hang a plain
// open), and the checks are made on the descriptor that was opened
// (fstat), so a name swapped for another file between the check and the
// read cannot slip through: callers read what they checked. OpenNoFollow
// also refuses a symbolic link as the last component of the path, for
// directories whose files are never links (a prepared dataset), where a
// link swapped in by someone who can write there would otherwise make the
// reader publish a file of its choosing.
//
// What it does not do: resolve symbolic links in the directories above the
// file (the caller chose the path), or lock the file against writers (a
// writer of the same inode can still change its bytes; callers that care
// check a hash of what they read).
package safefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Errors, wrapped with the path and the detail; test with errors.Is.
var (
	// ErrNotRegular: the path names a directory, FIFO, socket or device.
	ErrNotRegular = errors.New("safefile: not a regular file")
	// ErrTooLarge: the file holds more bytes than the caller allows.
	ErrTooLarge = errors.New("safefile: file too large")
	// ErrSymlink: OpenNoFollow found a symbolic link.
	ErrSymlink = errors.New("safefile: a symbolic link, not followed")
)

// Open opens the regular file at path for reading and returns it with its
// size, which is at most maxBytes (ErrTooLarge otherwise); anything but a
// regular file is ErrNotRegular. Symbolic links are followed. The caller
// closes the file.
func Open(path string, maxBytes int64) (*os.File, int64, error) {
	return open(path, maxBytes, false)
}

// OpenNoFollow is Open, but a symbolic link as the path's last component
// is refused (ErrSymlink) instead of followed.
func OpenNoFollow(path string, maxBytes int64) (*os.File, int64, error) {
	return open(path, maxBytes, true)
}

func open(path string, maxBytes int64, noFollow bool) (*os.File, int64, error) {
	f, err := openNonBlocking(path, noFollow)
	if err != nil {
		if isSymlinkErr(err) && noFollow {
			return nil, 0, fmt.Errorf("%w: %s", ErrSymlink, path)
		}
		return nil, 0, err // *fs.PathError names the path
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s is %s", ErrNotRegular, path, kind(st.Mode()))
	}
	if st.Size() > maxBytes {
		f.Close()
		return nil, 0, fmt.Errorf("%w: %s holds %d bytes, more than the %d allowed", ErrTooLarge, path, st.Size(), maxBytes)
	}
	if err := clearNonBlocking(f); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("safefile: %s: %w", path, err)
	}
	return f, st.Size(), nil
}

// kind names a file type for messages.
func kind(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "a directory"
	case t&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeCharDevice != 0:
		return "a character device"
	case t&fs.ModeDevice != 0:
		return "a block device"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return fmt.Sprintf("of type %v", t)
	}
}

// ReadAll reads f from its current offset to its end, refusing
// (ErrTooLarge) a file that yields more than maxBytes: one that grew since
// it was opened is not read past the limit. size is the size Open
// returned: the buffer is allocated once for a file that did not change.
func ReadAll(f *os.File, size, maxBytes int64) ([]byte, error) {
	b := make([]byte, 0, min(size, maxBytes)+1) // +1: to see the end, or growth
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := f.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > maxBytes {
			return nil, fmt.Errorf("%w: %s grew past the %d bytes allowed while it was read", ErrTooLarge, f.Name(), maxBytes)
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return nil, fmt.Errorf("safefile: reading %s: %w", f.Name(), err)
		}
	}
}

// ReadFile opens path as Open does and reads all of it from that one
// descriptor.
func ReadFile(path string, maxBytes int64) ([]byte, error) {
	f, size, err := Open(path, maxBytes)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, size, maxBytes)
}

// ReadFileNoFollow is ReadFile through OpenNoFollow.
func ReadFileNoFollow(path string, maxBytes int64) ([]byte, error) {
	f, size, err := OpenNoFollow(path, maxBytes)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f, size, maxBytes)
}
