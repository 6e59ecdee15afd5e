package shard

import (
	"bytes"
	"unicode/utf8"
)

// Cutting a large text file into documents. The held-out split is chosen
// per document, by hash, so a corpus that is one large file (a novel, a
// glossary, a dump of one site) would otherwise be one document, wholly in
// one split: no held-out text at all, or no training text. CutDocuments
// cuts such a file into documents of about a target size, so that its
// held-out part is about the held-out fraction of its text.

// CutMethod says how a file was cut into documents.
type CutMethod string

// The methods.
const (
	// CutParagraphs: at blank lines, whole paragraphs grouped until a
	// document reaches the target size. A paragraph longer than twice the
	// target is cut as CutFixed cuts.
	CutParagraphs CutMethod = "paragraphs"
	// CutFixed: text without blank lines, cut into pieces of about the
	// target size, each at the last line end in its second half, or else
	// at a character boundary.
	CutFixed CutMethod = "fixed"
)

// CutDocuments cuts text into consecutive documents of about target bytes
// (at least 4, the longest UTF-8 sequence): at blank lines when the text has any (CutParagraphs),
// otherwise into fixed-size pieces (CutFixed). The documents are slices of
// text; concatenated in order they are text, byte for byte, so nothing is
// lost or added. A document is at most 2·target bytes, but for the last,
// which may take a short rest of up to target/4 more. The result depends
// only on text and target. A cut never splits a UTF-8 sequence.
func CutDocuments(text []byte, target int) ([][]byte, CutMethod) {
	target = max(target, utf8.UTFMax)
	ends := paragraphStarts(text)
	method := CutFixed
	if len(ends) > 0 {
		method = CutParagraphs
	}
	var cuts []int
	start, prev := 0, 0
	for _, b := range append(ends, len(text)) {
		if b-start > 2*target && prev > start { // keep documents ≤ 2·target: cut before this paragraph
			cuts = append(cuts, prev)
			start = prev
		}
		for b-start > 2*target { // a paragraph (or text) longer than 2·target
			c := fixedCut(text, start, target)
			cuts = append(cuts, c)
			start = c
		}
		if b-start >= target {
			cuts = append(cuts, b)
			start = b
		}
		prev = b
	}
	if start < len(text) { // the rest, shorter than target
		if n := len(cuts); n > 0 && len(text)-start <= target/4 {
			cuts[n-1] = len(text) // too short to stand alone: joins the last document
		} else {
			cuts = append(cuts, len(text))
		}
	}
	docs := make([][]byte, 0, len(cuts))
	start = 0
	for _, c := range cuts {
		docs = append(docs, text[start:c:c])
		start = c
	}
	return docs, method
}

// paragraphStarts returns the offsets of the lines that start a paragraph
// after one or more blank lines (empty, or only white space), the first
// paragraph excluded.
func paragraphStarts(text []byte) []int {
	var starts []int
	seenText, inBlank := false, false
	for pos := 0; pos < len(text); {
		end := len(text)
		if nl := bytes.IndexByte(text[pos:], '\n'); nl >= 0 {
			end = pos + nl + 1
		}
		if len(bytes.TrimSpace(text[pos:end])) == 0 {
			inBlank = seenText
		} else {
			if inBlank {
				starts = append(starts, pos)
			}
			seenText, inBlank = true, false
		}
		pos = end
	}
	return starts
}

// fixedCut returns where a fixed-size piece that starts at start ends:
// after the last line end in the second half of the target size, or at
// the character boundary at or before start+target. It needs
// start+target < len(text) and target ≥ utf8.UTFMax, so that there is a
// boundary after start.
func fixedCut(text []byte, start, target int) int {
	end := start + target
	if i := bytes.LastIndexByte(text[start+target/2:end], '\n'); i >= 0 {
		return start + target/2 + i + 1
	}
	for end > start+1 && !utf8.RuneStart(text[end]) {
		end--
	}
	return end
}

// countCut counts document u, cut from a larger file.
func (s *SourceStats) countCut(cfg *Config, u *document) {
	if s.Cut == nil {
		s.Cut = &CutStats{Above: cfg.CutAbove, DocumentBytes: cfg.DocumentBytes}
	}
	s.Cut.Documents++
	if !u.firstCut {
		return
	}
	if u.cut == CutParagraphs {
		s.Cut.Paragraphs++
	} else {
		s.Cut.Fixed++
	}
}
