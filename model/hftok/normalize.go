package hftok

import (
	"bytes"

	"golang.org/x/text/unicode/norm"
)

// A normalizer rewrites text before it is pre-tokenized. normalize returns
// p itself when nothing changes, else new memory; it never writes to p.
type normalizer interface {
	normalize(p []byte) []byte
}

// sequenceNorm is the Sequence normalizer: each one after the other.
type sequenceNorm []normalizer

func (s sequenceNorm) normalize(p []byte) []byte {
	for _, n := range s {
		p = n.normalize(p)
	}
	return p
}

// prependNorm is the Prepend normalizer: text that is not empty gets the
// prefix.
type prependNorm struct{ prefix []byte }

func (pn prependNorm) normalize(p []byte) []byte {
	if len(p) == 0 {
		return p
	}
	return append(append(make([]byte, 0, len(pn.prefix)+len(p)), pn.prefix...), p...)
}

// replaceNorm is the Replace normalizer: every match of the pattern becomes
// content.
type replaceNorm struct {
	pattern *pattern
	content []byte
}

func (rn replaceNorm) normalize(p []byte) []byte { return rn.pattern.replace(p, rn.content) }

// replace returns p with each match of the pattern replaced by content: p
// itself if there is none. A Regex pattern is matched against the valid
// UTF-8 runs of p one at a time.
func (pt *pattern) replace(p, content []byte) []byte {
	if pt.literal != nil {
		if len(pt.literal) == 0 || !bytes.Contains(p, pt.literal) {
			return p
		}
		return bytes.ReplaceAll(p, pt.literal, content)
	}
	var out []byte
	changed := false
	validRuns(p, func(_ int, run []byte, valid bool) {
		var matches [][2]int
		if valid {
			matches = pt.find(nil, run)
		}
		prev := 0
		for _, m := range matches {
			out = append(append(out, run[prev:m[0]]...), content...)
			prev = m[1]
			changed = true
		}
		out = append(out, run[prev:]...)
	})
	if !changed {
		return p
	}
	return out
}

// unicodeNorm is one of the NFC, NFD, NFKC and NFKD normalizers. Bytes that
// are not UTF-8 pass through unchanged.
type unicodeNorm struct{ form norm.Form }

func (un unicodeNorm) normalize(p []byte) []byte {
	if un.form.IsNormal(p) {
		return p
	}
	return un.form.Bytes(p)
}
