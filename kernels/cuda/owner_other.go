//go:build !unix

package cuda

import "io/fs"

// ownedPrivately is false where ownership cannot be read: no disk cache.
func ownedPrivately(fs.FileInfo) bool { return false }
