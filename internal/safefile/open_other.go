//go:build !unix

package safefile

import "os"

// openNonBlocking opens path read-only (no FIFOs to fear here; links are
// followed: O_NOFOLLOW has no portable equivalent).
func openNonBlocking(path string, noFollow bool) (*os.File, error) { return os.Open(path) }

func clearNonBlocking(*os.File) error { return nil }

func isSymlinkErr(error) bool { return false }
