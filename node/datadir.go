package node

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A node's data directory holds the Raft log, the object store (dataset
// shards, federated members' local shards among them, and checkpoints) and
// the API token: nothing in it is for other local users. The node creates
// directories 0700 and files 0600 (objects 0400), and at start narrows
// whatever is wider, so that a data directory created by other software
// (systemd's StateDirectory, a Docker volume: 0755) or by an older build
// becomes private too.
const (
	dataDirPerm  = 0o700
	dataFilePerm = 0o600
)

// makePrivateDir creates dir (mode 0700) if needed and removes the group and
// other permission bits from it and from everything below it. It never
// follows a symbolic link below dir (every entry is opened relative to its
// parent with O_NOFOLLOW, so an entry swapped for a link during the walk is
// skipped, not followed), opens nothing but regular files and directories,
// and leaves the owner's bits as they are. dir itself may be a link (an
// operator's choice of where the data lives).
func makePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, dataDirPerm); err != nil {
		return fmt.Errorf("node: data directory: %w", err)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("node: data directory %s: %w", dir, err)
	}
	if err := narrow(fd, dir); err != nil {
		return fmt.Errorf("node: making the data directory private: %w", err)
	}
	return nil
}

// narrow removes the group and other bits of the open file fd (named path,
// for errors) and, for a directory, of everything below it. Anything but a
// regular file or a directory (an entry may have been replaced since it was
// listed) is left alone. It closes fd.
func narrow(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: %w", path, err)
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFDIR && t != unix.S_IFREG {
		return unix.Close(fd)
	}
	if mode := st.Mode & 0o7777; mode&0o077 != 0 {
		if err := unix.Fchmod(fd, mode&^0o077); err != nil {
			unix.Close(fd)
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Close(fd)
	}
	d := os.NewFile(uintptr(fd), path) // closes fd
	defer d.Close()
	for {
		entries, err := d.ReadDir(256)
		for _, e := range entries {
			if t := e.Type(); t != 0 && !t.IsDir() { // links, sockets, FIFOs, devices
				continue
			}
			name := filepath.Join(path, e.Name())
			child, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			switch {
			case errors.Is(err, unix.ELOOP), errors.Is(err, unix.ENOENT):
				continue // became a link, or went away, since ReadDir
			case err != nil:
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := narrow(child, name); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
}
