package provenance

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/braidml/braid/internal/safefile"
)

// Options are what Verify checks a directory against.
type Options struct {
	// Roots are the cluster CA certificates (ca.pem: during a rotation a
	// bundle of two). A signed record with no roots fails: there is
	// nothing to chain its signer to.
	Roots []*x509.Certificate
	// AllowUnsigned accepts a record without provenance.sig (a
	// single-process `braid train` run), with a warning; otherwise an
	// unsigned record is a problem.
	AllowUnsigned bool
	// Revoked are certificate serials (pki.Serial's form) known to be
	// revoked; a signer among them fails. The cluster's list is in `braid
	// ca` / GET /v1/certs; Verify fetches nothing.
	Revoked []string
	// AllowUnrecorded are names of entries in the directory that the
	// record does not name and that Verify only warns of instead of
	// failing: files converted from the verified weights after the record
	// was made (`job export --format gguf` writes model.gguf), which the
	// record cannot name. They are not checked; the caller names each.
	AllowUnrecorded []string
	// Now is the time certificates are compared with for warnings (the
	// signature is checked at the record's export time); zero: time.Now.
	Now time.Time
}

// Report is what Verify found.
type Report struct {
	Record *Record
	// Signer and Serial name the signing certificate (empty: unsigned).
	Signer, Serial string
	// Matched are the files whose hashes matched the record.
	Matched []File
	// Problems name each thing that does not match: a file, a hash, the
	// signature, the chain. The directory verifies when there are none.
	Problems []string
	// Warnings are what a reader should know but does not fail the check.
	Warnings []string
}

// OK reports whether nothing failed.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// weightsExt are the extensions of files that hold weights: such a file
// in the directory that the record does not name is a problem for
// CheckFiles (it could be loaded instead of the recorded one).
var weightsExt = []string{".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".npz", ".h5", ".onnx"}

// MaxCardBytes bounds the README.md Verify reads to compare with the card
// it renders; a larger one cannot be it.
const MaxCardBytes = 1 << 20

// Verify checks directory dir against its provenance.json: the signature
// in provenance.sig over the record's exact bytes, the signer's chain to
// opt.Roots at the time the record says it was exported, the revoked
// serials, and the SHA-256 of every file the record names. Every problem
// found is listed in the report (Verify does not stop at the first). The
// error is for a directory that has no readable record at all.
func Verify(dir string, opt Options) (*Report, error) {
	raw, err := readBounded(filepath.Join(dir, RecordFile), MaxRecordBytes)
	if err != nil {
		return nil, fmt.Errorf("provenance: %w (export the model with `braid job export`, or train it with `braid train`, to have one)", err)
	}
	rec, err := Decode(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, RecordFile), err)
	}
	rep := &Report{Record: rec}
	if opt.Now.IsZero() {
		opt.Now = time.Now()
	}
	verifySignature(rep, dir, raw, opt)
	verifyFiles(rep, dir, opt.AllowUnrecorded)
	return rep, nil
}

// verifySignature checks provenance.sig.
func verifySignature(rep *Report, dir string, raw []byte, opt Options) {
	rec := rep.Record
	sb, err := readBounded(filepath.Join(dir, SignatureFile), MaxSignatureBytes)
	switch {
	case errors.Is(err, fs.ErrNotExist) && rec.Signer != "":
		rep.problem("%s is missing: the record says node %s signed it", SignatureFile, rec.Signer)
		return
	case errors.Is(err, fs.ErrNotExist) && opt.AllowUnsigned:
		rep.Warnings = append(rep.Warnings, "unsigned: the record has no signature, so anyone could have written it; the file hashes below are checked against it")
		return
	case errors.Is(err, fs.ErrNotExist):
		rep.problem("unsigned: %s has no %s (a single-process `braid train` record without --sign-key); accept it with --allow-unsigned", RecordFile, SignatureFile)
		return
	case err != nil:
		rep.problem("%s: %v", SignatureFile, err)
		return
	}
	sig, err := ParseSignature(sb)
	if err != nil {
		rep.problem("%s: %v", SignatureFile, err)
		return
	}
	leaf := sig.Chain[0]
	rep.Signer, rep.Serial = leaf.Subject.CommonName, serialText(leaf)
	if err := leaf.CheckSignature(sig.Algorithm, raw, sig.Value); err != nil {
		rep.problem("signature invalid: %s is not the record %s signed (it was changed after signing, or the signature is not %s's)", RecordFile, rep.Signer, rep.Signer)
	}
	if rec.Signer != rep.Signer {
		rep.problem("signer mismatch: the record names %q, the signature's certificate is %q's", rec.Signer, rep.Signer)
	}
	if slices.Contains(opt.Revoked, rep.Serial) {
		rep.problem("revoked: the certificate of %s (serial %s) that signed the record is revoked", rep.Signer, rep.Serial)
	}
	if len(opt.Roots) == 0 {
		rep.problem("unknown CA: no cluster CA to check %s's certificate against; give it with --ca (the ca.pem of `braid ca init`)", rep.Signer)
		return
	}
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range opt.Roots {
		roots.AddCert(c)
	}
	for _, c := range sig.Chain[1:] {
		inter.AddCert(c)
	}
	// The chain is checked as of the signing: a model outlives the
	// certificate of the node that exported it.
	at := rec.Exported
	if at.IsZero() {
		at = opt.Now
	}
	// Only a node certificate signs records: it carries digitalSignature
	// and the server and client authentication usages transport/pki
	// issues node certificates with. Another certificate the CA issued
	// (for some other use, without them) does not vouch for a record.
	if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) ||
		!slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		rep.problem("not a node certificate: the certificate of %s (serial %s) that signed the record lacks the digitalSignature key usage or the server and client authentication usages node certificates carry", rep.Signer, rep.Serial)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
	case errors.As(err, &unknown):
		rep.problem("unknown CA: the certificate of %s (serial %s, issued by %q) does not chain to the given CA (%s)", rep.Signer, rep.Serial,
			leaf.Issuer.CommonName, caNames(opt.Roots))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		rep.problem("expired: the certificate of %s (serial %s, valid %s to %s) was not valid when the record was signed (%s)", rep.Signer, rep.Serial,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339))
	default:
		rep.problem("certificate of %s (serial %s): %v", rep.Signer, rep.Serial, err)
	}
	if err == nil && opt.Now.After(leaf.NotAfter) {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("the certificate of %s has expired since signing (at %s); the signature was made while it was valid",
			rep.Signer, leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
}

func caNames(cas []*x509.Certificate) string {
	var names []string
	for _, c := range cas {
		names = append(names, fmt.Sprintf("%q serial %s", c.Subject.CommonName, serialText(c)))
	}
	return strings.Join(names, ", ")
}

// verifyFiles hashes every file the record names and refuses every other
// entry of dir (files, directories, links) but the record, its signature
// and the model card, which must be the card rendered from the record: a
// loader reads more than the weights (a tokenizer_config.json's chat
// template or auto_map, *.py, a pickle), and a reader trusts the card.
// Names in allow are warned of instead (not checked).
func verifyFiles(rep *Report, dir string, allow []string) {
	matched, problems := checkNamed(dir, rep.Record)
	rep.Matched = matched
	rep.Problems = append(rep.Problems, problems...)
	named := map[string]bool{RecordFile: true, SignatureFile: true}
	for _, f := range rep.Record.Files {
		named[f.Name] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		rep.problem("%s: %v", dir, err)
		return
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case named[name]:
		case name == CardFile:
			checkCard(rep, dir)
		case slices.Contains(allow, name):
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: not covered by the record, so not checked (allowed with --allow-unrecorded); "+
				"if it was converted from the weights, convert the verified weights again (`braid export --format gguf --model DIR`) to have one you can trust", name))
		case slices.Contains(weightsExt, strings.ToLower(filepath.Ext(name))):
			rep.problem("%s: a weights file the record does not name", name)
		case strings.EqualFold(filepath.Ext(name), ".gguf"):
			rep.problem("%s: a file the record does not name (a conversion made after it?); convert the verified weights again, or accept it unchecked with --allow-unrecorded %s", name, name)
		case e.IsDir():
			rep.problem("%s/: a directory the record does not name (a loader may read what it holds)", name)
		default:
			rep.problem("%s: a file the record does not name (a loader may read it with the model: a tokenizer config, code, a pickle)", name)
		}
	}
}

// checkCard compares dir's README.md with the card rendered from the
// record (Card is a function of the record alone).
func checkCard(rep *Report, dir string) {
	want := Card(rep.Record)
	got, err := safefile.ReadFileNoFollow(filepath.Join(dir, CardFile), max(MaxCardBytes, int64(len(want))))
	switch {
	case err != nil:
		rep.problem("%s: %v", CardFile, err)
	case !bytes.Equal(got, want):
		rep.problem("%s: not the model card rendered from %s (edited after export); delete it, or export again to have it rewritten", CardFile, RecordFile)
	}
}

// CheckFiles hashes every file rec names in dir and returns those that
// match, and a problem naming each that does not (missing, another hash)
// and each weights file in dir that rec does not name.
func CheckFiles(dir string, rec *Record) (matched []File, problems []string) {
	matched, problems = checkNamed(dir, rec)
	named := map[string]bool{}
	for _, f := range rec.Files {
		named[f.Name] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return matched, append(problems, fmt.Sprintf("%s: %v", dir, err))
	}
	for _, e := range entries {
		name := e.Name()
		if named[name] || !slices.Contains(weightsExt, strings.ToLower(filepath.Ext(name))) {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s: a weights file the record does not name", name))
	}
	return matched, problems
}

// checkNamed hashes every file rec names in dir and returns those that
// match, and a problem naming each that does not.
func checkNamed(dir string, rec *Record) (matched []File, problems []string) {
	for _, want := range rec.Files {
		got, err := hashRecorded(filepath.Join(dir, want.Name), want.Bytes)
		switch {
		case errors.Is(err, safefile.ErrTooLarge):
			problems = append(problems, fmt.Sprintf("%s: larger than the %d bytes recorded (sha256 %s)", want.Name, want.Bytes, want.SHA256))
		case errors.Is(err, fs.ErrNotExist):
			problems = append(problems, fmt.Sprintf("%s: missing (the record names it with sha256 %s)", want.Name, want.SHA256))
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", want.Name, err))
		case got.SHA256 != want.SHA256:
			problems = append(problems, fmt.Sprintf("%s: sha256 %s does not match the recorded %s (%d bytes here, %d recorded)",
				want.Name, got.SHA256, want.SHA256, got.Bytes, want.Bytes))
		default:
			matched = append(matched, got)
		}
	}
	return matched, problems
}

// hashRecorded hashes the file at path, inside the model directory, as
// HashFile does but through safefile.OpenNoFollow (a regular file, not a
// link, opened without blocking) and reading at most recorded+1 bytes: a
// file larger than the record says is refused (ErrTooLarge) by its size
// before a byte is read, or by the extra byte if it grew meanwhile.
func hashRecorded(path string, recorded int64) (File, error) {
	f, _, err := safefile.OpenNoFollow(path, recorded)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, recorded+1))
	if err != nil {
		return File{}, fmt.Errorf("provenance: hashing %s: %w", path, err)
	}
	if n > recorded {
		return File{}, fmt.Errorf("%w: %s grew past the %d bytes recorded while it was read", safefile.ErrTooLarge, path, recorded)
	}
	return File{Name: filepath.Base(path), SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: n}, nil
}

// readBounded reads path, a file inside the model directory, refusing
// anything but a regular file (a FIFO would block, a device never end) and
// a symbolic link (safefile.OpenNoFollow), and a file of more than max
// bytes, before reading it.
func readBounded(path string, max int64) ([]byte, error) {
	return safefile.ReadFileNoFollow(path, max)
}

// CAFile is the name of the cluster CA bundle in a PKI directory (as
// transport/pki writes it).
const CAFile = "ca.pem"

// ReadCAs reads the CA certificates of a PEM bundle: path is the file, or
// a PKI directory holding ca.pem (`braid ca init --dir`).
func ReadCAs(path string) ([]*x509.Certificate, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, CAFile)
	}
	b, err := safefile.ReadFile(path, 1<<20) // the user named it: a link is followed
	if err != nil {
		return nil, fmt.Errorf("provenance: the CA: %w", err)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("provenance: the CA %s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("provenance: %s holds no certificate (want the cluster's ca.pem)", path)
	}
	return out, nil
}
