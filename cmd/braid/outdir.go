package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// How commands treat the directories they write (train --out and
// --merged, job export --out and --merged, data prepare --out): a
// directory that does not exist, or is empty, is written; one that holds
// anything is written only with --overwrite, so that no command replaces
// the result of another run without being asked to. train and job export
// then replace the files of the names they write and leave the others;
// data prepare, whose output is one dataset, replaces the dataset
// directory as a whole once the new one is complete.

// overwriteFlag is --overwrite; usage says what it replaces.
func overwriteFlag(usage string) cli.Flag {
	return &cli.BoolFlag{Name: "overwrite", Usage: usage}
}

// checkOutDir refuses to write into the directory given with --name when
// it is a file, or a directory that is not empty and --overwrite is not
// given. An unset flag passes.
func checkOutDir(c *cli.Context, name string) error {
	dir := c.String(name)
	if dir == "" {
		return nil
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		if st, serr := os.Stat(dir); serr == nil && !st.IsDir() {
			return fmt.Errorf("--%s %s is a file, not a directory", name, dir)
		}
		return fmt.Errorf("--%s: %w", name, err)
	case len(entries) == 0 || c.Bool("overwrite"):
		return nil
	}
	return fmt.Errorf("--%s %s is not empty (it holds %s): give --overwrite to write into it, or choose another directory", name, dir, someNames(entries))
}

// someNames writes the first names of entries: "a, b, c and 4 more".
func someNames(entries []fs.DirEntry) string {
	const shown = 3
	var names []string
	for _, e := range entries[:min(shown, len(entries))] {
		names = append(names, e.Name())
	}
	s := strings.Join(names, ", ")
	if n := len(entries) - shown; n > 0 {
		s += fmt.Sprintf(" and %d more", n)
	}
	return s
}

// sameDir says whether a and b name the same existing directory.
func sameDir(a, b string) bool {
	sa, err := os.Stat(a)
	if err != nil {
		return false
	}
	sb, err := os.Stat(b)
	return err == nil && os.SameFile(sa, sb)
}

// wholeOutDir is checkOutDir for a command that writes the directory of
// --name whole (with marker in it): it returns the directory to write and
// finish, to call with the command's error when it is written. With
// --overwrite over a directory that is not empty these are replaceDir's.
func wholeOutDir(c *cli.Context, name, marker string) (write string, finish func(error) error, err error) {
	dir := c.String(name)
	if err := checkOutDir(c, name); err != nil {
		return "", nil, err
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		return replaceDir(name, dir, marker)
	}
	return dir, func(err error) error { return err }, nil
}

// replaceDir prepares to replace dir, a directory that is not empty and
// holds marker (the file that shows it is what the command writes: a
// dataset's manifest.json), with one written whole elsewhere: it returns
// an empty directory beside dir to write instead, and finish, which moves
// the written directory into dir's place and removes the old one when its
// argument is nil, or removes the written one and returns the error.
// dir is left as it was until finish swaps the two.
func replaceDir(flag, dir, marker string) (write string, finish func(error) error, err error) {
	if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
		return "", nil, fmt.Errorf("--%s %s holds no %s: --overwrite replaces only a directory this command wrote", flag, dir, marker)
	}
	clean := filepath.Clean(dir)
	parent, base := filepath.Dir(clean), filepath.Base(clean)
	tmp, err := os.MkdirTemp(parent, "."+base+".new-*")
	if err != nil {
		return "", nil, fmt.Errorf("--%s: %w", flag, err)
	}
	finish = func(err error) error {
		if err != nil {
			os.RemoveAll(tmp)
			return err
		}
		old := filepath.Join(parent, "."+base+".old-"+strconv.FormatInt(time.Now().UnixNano(), 36))
		if err := os.Rename(clean, old); err != nil {
			os.RemoveAll(tmp)
			return fmt.Errorf("--%s: moving the old %s aside: %w", flag, dir, err)
		}
		if err := os.Rename(tmp, clean); err != nil {
			os.Rename(old, clean)
			os.RemoveAll(tmp)
			return fmt.Errorf("--%s: moving the new %s into place: %w", flag, dir, err)
		}
		return os.RemoveAll(old)
	}
	return tmp, finish, nil
}
