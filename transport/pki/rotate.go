package pki

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Rotation of the cluster CA and of the gossip key, in stages that nodes
// follow one at a time (each stage: copy the files to every node, then
// SIGHUP it, which reloads them without a restart):
//
//	CA:     RotateCA (ca.pem: new CA + old CA; new ca-key.pem)
//	        → re-issue every node's certificate (Issue signs with the new CA)
//	        → DropOldCAs (ca.pem: the new CA only)
//	gossip: AddGossipKey (a new key last: accepted, not used)
//	        → PromoteGossipKey (the new key first: used)
//	        → DropGossipKeys (the new key only)
//
// At every stage every node accepts what every other node sends, so the
// cluster and its jobs keep running through the change (docs/SECURITY.md).

// OldCAKeyFile is where RotateCA moves the previous CA's key.
const OldCAKeyFile = "ca-key.old.pem"

// RotateCA creates a new CA in dir (which must hold one): the new key
// replaces ca-key.pem (the old one is moved to ca-key.old.pem, 0600), and
// ca.pem becomes a bundle of the new CA certificate followed by every CA
// certificate it held, so that nodes given it trust certificates of either
// CA. Issue signs with the new CA from now on. It refuses while
// ca-key.old.pem exists (a rotation is under way: finish it with
// DropOldCAs first).
func RotateCA(dir string) error {
	oldKeyPath := filepath.Join(dir, OldCAKeyFile)
	if _, err := os.Lstat(oldKeyPath); err == nil {
		return fmt.Errorf("%w: %s (a CA rotation is under way; finish it with DropOldCAs / `braid ca rotate --finish`)", ErrExists, oldKeyPath)
	}
	if _, _, err := loadCA(dir); err != nil {
		return err
	}
	caPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	oldBundle, err := os.ReadFile(caPath)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	oldKey, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	keyPEM, certPEM, err := makeCA("braid cluster CA " + time.Now().UTC().Format("2006-01-02T15:04:05Z"))
	if err != nil {
		return err
	}
	// The old key is saved first: a crash before ca.pem is rewritten
	// leaves a ca-key.pem that does not match ca.pem's first certificate,
	// which loadCA reports, and ca-key.old.pem to recover from.
	if err := writeFileAtomic(oldKeyPath, oldKey, 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(caPath, append(certPEM, oldBundle...), 0o644)
}

// DropOldCAs ends a CA rotation: ca.pem keeps only its first CA
// certificate (the one ca-key.pem belongs to), and ca-key.old.pem is
// removed. Give the new ca.pem to a node only once every node has a
// certificate of the new CA.
func DropOldCAs(dir string) error {
	ca, _, err := loadCA(dir)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw})
	if err := writeFileAtomic(filepath.Join(dir, CAFile), certPEM, 0o644); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dir, OldCAKeyFile)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// AddGossipKey appends a fresh random key to dir/gossip.key: nodes given
// the file accept gossip under it but still send under the first key.
func AddGossipKey(dir string) error {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) {
		k := make([]byte, GossipKeySize)
		if _, err := rand.Read(k); err != nil {
			return nil, fmt.Errorf("pki: generate gossip key: %w", err)
		}
		return append(keys, k), nil
	})
}

// PromoteGossipKey moves the last key of dir/gossip.key first: nodes given
// the file send under it (and still accept the others).
func PromoteGossipKey(dir string) error {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) {
		if len(keys) < 2 {
			return nil, fmt.Errorf("%w: one key only, nothing to promote (add one first)", ErrBadKey)
		}
		last := keys[len(keys)-1]
		return append([][]byte{last}, keys[:len(keys)-1]...), nil
	})
}

// DropGossipKeys keeps only the first key of dir/gossip.key.
func DropGossipKeys(dir string) error {
	return editGossipKeys(dir, func(keys [][]byte) ([][]byte, error) { return keys[:1], nil })
}

func editGossipKeys(dir string, edit func([][]byte) ([][]byte, error)) error {
	keys, err := LoadGossipKeys(dir)
	if err != nil {
		return err
	}
	if keys, err = edit(keys); err != nil {
		return err
	}
	if len(keys) > MaxGossipKeys {
		return fmt.Errorf("%w: %d keys, at most %d", ErrBadKey, len(keys), MaxGossipKeys)
	}
	var b bytes.Buffer
	for _, k := range keys {
		b.WriteString(base64.StdEncoding.EncodeToString(k))
		b.WriteByte('\n')
	}
	return writeFileAtomic(filepath.Join(dir, GossipKeyFile), b.Bytes(), 0o600)
}
