//go:build unix

package cuda

import (
	"io/fs"
	"os"
	"syscall"
)

// ownedPrivately says whether fi belongs to this process's user and no
// one else may write to it.
func ownedPrivately(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid() && fi.Mode().Perm()&0o022 == 0
}
