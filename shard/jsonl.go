package shard

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"github.com/braidml/braid/internal/safefile"
)

// jsonlFile reads a JSONL file line by line, each line a document, streaming:
// a file of any size is read in bounded memory. Lines holding only
// whitespace are ignored; a line longer than MaxRecordBytes is a bad
// record (too_large), skipped without being held in memory.
func (r *reader) jsonlFile(f inputFile) bool {
	file, _, err := safefile.Open(f.path, math.MaxInt64) // read in bounded memory, line by line
	if err != nil {
		return r.add(document{err: fmt.Errorf("shard: input %w", err)})
	}
	defer file.Close()
	br := bufio.NewReaderSize(file, 256<<10)
	head, err := br.Peek(BinarySniffBytes)
	if err != nil && err != io.EOF && !errors.Is(err, bufio.ErrBufferFull) {
		return r.add(document{err: fmt.Errorf("shard: input %s: %w", f.path, err)})
	}
	switch {
	case len(head) == 0:
		return r.add(document{issue: &Issue{Path: f.path, Reason: ReasonEmpty}})
	case isBinary(head):
		r.bytes += f.size
		return r.add(document{issue: &Issue{Path: f.path, Reason: ReasonBinary, Detail: "a NUL byte in the first 8 KiB"}})
	}
	for lineNo := 1; ; lineNo++ {
		if r.ctx.Err() != nil {
			return false
		}
		line, n, tooLong, err := readLine(br, r.cfg.MaxRecordBytes, r.line[:0])
		r.line = line
		r.bytes += n
		r.read += n
		if err != nil && err != io.EOF {
			return r.add(document{err: fmt.Errorf("shard: input %s:%d: %w", f.path, lineNo, err)})
		}
		var ok bool
		switch {
		case tooLong:
			ok = r.add(document{issue: &Issue{Path: f.path, Line: lineNo, Reason: ReasonTooLarge,
				Detail: fmt.Sprintf("record longer than %d bytes", r.cfg.MaxRecordBytes)}})
		case len(bytes.TrimSpace(line)) == 0:
			ok = true
		default:
			ok = r.add(document{path: f.path, line: lineNo, raw: bytes.Clone(line)})
		}
		if !ok {
			return false
		}
		if err == io.EOF {
			return true
		}
	}
}

// readLine reads one line from br into buf (reused), without its line
// ending ("\n" or "\r\n"). n counts the bytes consumed, line ending
// included. A line longer than limit is consumed but not kept: tooLong is
// set and line is empty. err is io.EOF after the last line.
func readLine(br *bufio.Reader, limit int, buf []byte) (line []byte, n int64, tooLong bool, err error) {
	for {
		frag, err := br.ReadSlice('\n')
		n += int64(len(frag))
		if !tooLong {
			if len(buf)+len(frag) > limit+2 { // longer than limit even without "\r\n"
				tooLong, buf = true, buf[:0]
			} else {
				buf = append(buf, frag...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		buf = bytes.TrimSuffix(buf, []byte("\n"))
		buf = bytes.TrimSuffix(buf, []byte("\r"))
		if len(buf) > limit {
			tooLong, buf = true, buf[:0]
		}
		return buf, n, tooLong, err
	}
}

// recordText returns the text of the JSONL record in line: the string in
// its field. A line that is not UTF-8, not a JSON object, lacks the field
// or holds something else than a string there gives an Issue instead
// (without Path and Line, which the caller knows).
func recordText(line []byte, field string) ([]byte, *Issue) {
	if !utf8.Valid(line) {
		return nil, &Issue{Reason: ReasonInvalidUTF8, Detail: invalidUTF8Detail(line)}
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(line, &obj); err != nil || obj == nil {
		detail := "not a JSON object"
		var se *json.SyntaxError
		if errors.As(err, &se) {
			detail = fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)
		}
		return nil, &Issue{Reason: ReasonBadJSON, Detail: detail}
	}
	raw, ok := obj[field]
	if !ok {
		return nil, &Issue{Reason: ReasonMissingField, Detail: fmt.Sprintf("no field %q", field)}
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return nil, &Issue{Reason: ReasonNotString, Detail: fmt.Sprintf("field %q is %s, not a string", field, jsonKind(raw))}
	}
	if s == "" {
		return nil, &Issue{Reason: ReasonEmpty, Detail: fmt.Sprintf("field %q is empty", field)}
	}
	return []byte(s), nil
}

// jsonKind names the kind of a JSON value for error messages.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
