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
	"github.com/braidml/braid/model/chat"
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
	obj, is := parseRecord(line)
	if is != nil {
		return nil, is
	}
	s, is := stringField(obj, field)
	if is != nil {
		return nil, is
	}
	if s == "" {
		return nil, &Issue{Reason: ReasonEmpty, Detail: fmt.Sprintf("field %q is empty", field)}
	}
	return []byte(s), nil
}

// recordMessages returns the conversation of a chat record (its
// "messages") or of a prompt-completion record (a user message, the
// prompt, and the assistant's, the completion), or an Issue as
// recordText does: ReasonBadMessages for a conversation that is not a
// list of messages with known roles and string contents, ReasonNoAnswer
// for one without an assistant message, ReasonEmpty for none at all or
// an empty completion.
func recordMessages(line []byte, f Format) ([]chat.Message, *Issue) {
	obj, is := parseRecord(line)
	if is != nil {
		return nil, is
	}
	if f == FormatPromptCompletion {
		prompt, is := stringField(obj, "prompt")
		if is != nil {
			return nil, is
		}
		completion, is := stringField(obj, "completion")
		if is != nil {
			return nil, is
		}
		if completion == "" {
			return nil, &Issue{Reason: ReasonEmpty, Detail: `field "completion" is empty`}
		}
		return []chat.Message{{Role: chat.User, Content: prompt}, {Role: chat.Assistant, Content: completion}}, nil
	}
	raw, ok := obj["messages"]
	if !ok {
		return nil, &Issue{Reason: ReasonMissingField, Detail: `no field "messages"`}
	}
	var list []json.RawMessage
	if len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &list) != nil {
		return nil, &Issue{Reason: ReasonBadMessages, Detail: fmt.Sprintf(`field "messages" is %s, not an array`, jsonKind(raw))}
	}
	if len(list) == 0 {
		return nil, &Issue{Reason: ReasonEmpty, Detail: `field "messages" is empty`}
	}
	msgs := make([]chat.Message, len(list))
	answered := false
	for i, m := range list {
		bad := func(detail string) *Issue {
			return &Issue{Reason: ReasonBadMessages, Detail: fmt.Sprintf("messages[%d]: %s", i, detail)}
		}
		var fields map[string]json.RawMessage
		if len(m) == 0 || m[0] != '{' || json.Unmarshal(m, &fields) != nil {
			return nil, bad(fmt.Sprintf("%s, not an object", jsonKind(m)))
		}
		role, is := stringField(fields, "role")
		if is != nil {
			return nil, bad(is.Detail)
		}
		content, is := stringField(fields, "content")
		if is != nil {
			return nil, bad(is.Detail)
		}
		switch r := chat.Role(role); r {
		case chat.System, chat.User, chat.Assistant:
			msgs[i] = chat.Message{Role: r, Content: content}
			answered = answered || r == chat.Assistant
		default:
			return nil, bad(fmt.Sprintf("role %.32q (supported: system, user, assistant)", role))
		}
	}
	if !answered {
		return nil, &Issue{Reason: ReasonNoAnswer, Detail: fmt.Sprintf("%d messages, none from the assistant", len(msgs))}
	}
	return msgs, nil
}

// parseRecord decodes a JSONL line into its fields, or gives an Issue for
// a line that is not UTF-8 or not a JSON object.
func parseRecord(line []byte) (map[string]json.RawMessage, *Issue) {
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
	return obj, nil
}

// stringField returns the string in obj's field, or an Issue if there is
// no such field (ReasonMissingField) or it is not a string
// (ReasonNotString).
func stringField(obj map[string]json.RawMessage, field string) (string, *Issue) {
	raw, ok := obj[field]
	if !ok {
		return "", &Issue{Reason: ReasonMissingField, Detail: fmt.Sprintf("no field %q", field)}
	}
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", &Issue{Reason: ReasonNotString, Detail: fmt.Sprintf("field %q is %s, not a string", field, jsonKind(raw))}
	}
	return s, nil
}

// jsonKind names the kind of a JSON value for error messages.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '"':
		return "a string"
	case '[':
		return "an array"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}
