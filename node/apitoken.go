package node

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/braidml/braid/internal/atomicfile"
)

// APITokenFile is the name, in a node's data directory, of the bearer token
// its API requires when none is configured: generated at the first start
// (32 random bytes in hex, mode 0600) and kept across restarts, so that
// the CLI run by the node's user finds it and nobody else can read it.
const APITokenFile = "api-token"

// ErrTokenFile is returned for a token file that is not a regular file of
// at most 1 KiB holding one token.
var ErrTokenFile = errors.New("node: not a token file")

// apiToken returns the token the API requires and the file it came from
// ("" when configured): cfg.HTTPToken if set, else DataDir/api-token,
// created if missing. created reports a new file.
func (c Config) apiToken() (token, path string, created bool, err error) {
	if c.HTTPToken != "" {
		return c.HTTPToken, "", false, nil
	}
	path = filepath.Join(c.DataDir, APITokenFile)
	token, err = ReadTokenFile(path)
	if err == nil {
		return token, path, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", "", false, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", false, fmt.Errorf("node: API token: %w", err)
	}
	token = hex.EncodeToString(b)
	if err := atomicfile.WriteBytes(path, []byte(token+"\n"), dataFilePerm); err != nil && !errors.Is(err, atomicfile.ErrSyncDir) {
		return "", "", false, fmt.Errorf("node: writing the API token: %w", err)
	}
	return token, path, true, nil
}

// ReadTokenFile reads a bearer token from path: a regular file (a link to
// one is followed, as secret mounts are links) of at most 1 KiB, whose content, surrounding white space removed, is the
// token. A missing file is an error that wraps fs.ErrNotExist.
func ReadTokenFile(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > 1<<10 {
		return "", fmt.Errorf("%w: %s (%v, %d bytes)", ErrTokenFile, path, st.Mode().Type(), st.Size())
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<10))
	if err != nil {
		return "", fmt.Errorf("token file %s: %w", path, err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" || strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("%w: %s does not hold one token", ErrTokenFile, path)
	}
	return token, nil
}
