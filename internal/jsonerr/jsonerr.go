// Package jsonerr says what is wrong with JSON that encoding/json would not
// decode, for errors about files a user named: the byte offset of a syntax
// error, the key of a value of the wrong type, never the bytes themselves,
// so that reading a file someone else chose tells them nothing of it.
package jsonerr

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Problem describes err, an error of json.Unmarshal, without quoting the
// input.
func Problem(err error) string {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Sprintf("a JSON syntax error at byte %d", se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return fmt.Sprintf("key %s holds a JSON %s, want %v", te.Field, te.Value, te.Type)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "the JSON ends too early"
	}
	return "not one JSON object"
}
