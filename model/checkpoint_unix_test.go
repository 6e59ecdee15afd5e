//go:build unix

package model_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/braidml/braid/model"
)

// A checkpoint directory whose files are not regular files (a link to
// /dev/zero as the weights, a FIFO as the config) is refused before a byte
// is read, naming the file; nothing hangs or fills memory.
func TestLoadCheckpointRefusesSpecialFiles(t *testing.T) {
	m, _ := model.New(model.Config{Vocab: 300, Context: 4, Dim: 8, Layers: 1, Heads: 2}, 1, 4)
	good := t.TempDir()
	if err := model.SaveCheckpoint(good, m.Config, model.ByteTokenizer{}, m.Params); err != nil {
		t.Fatal(err)
	}
	zero := t.TempDir()
	os.Link(filepath.Join(good, model.ConfigFile), filepath.Join(zero, model.ConfigFile))
	if err := os.Symlink("/dev/zero", filepath.Join(zero, model.WeightsFile)); err != nil {
		t.Skip("no symlinks here")
	}
	fifo := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(fifo, model.ConfigFile), 0o600); err != nil {
		t.Skip("no FIFOs here")
	}
	notJSON := t.TempDir()
	os.WriteFile(filepath.Join(notJSON, model.ConfigFile), []byte("root:x:0:0:secret"), 0o600)
	for dir, want := range map[string]string{
		zero:    filepath.Join(zero, model.WeightsFile) + " is a character device",
		fifo:    filepath.Join(fifo, model.ConfigFile) + " is a FIFO",
		notJSON: "syntax error at byte 1",
	} {
		_, err := model.LoadCheckpoint(dir)
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "root") {
			t.Errorf("LoadCheckpoint(%s): %v, want an error saying %q and quoting nothing", dir, err, want)
		}
	}
}
