package blobstore

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/braidml/braid/transport"
)

// The wire format of the package comment.
const (
	wireMagic   = "BLOB"
	wireVersion = 1

	requestLen = 4 + 1 + sha256.Size + 8 + 8 // 53
	headerLen  = 4 + 1 + 1 + 8               // 14, before the reason
	maxReason  = 256

	// maxFrame bounds both frames, so that a peer cannot make us allocate
	// more than this for one.
	maxFrame = 1 << 10
)

// Status is the status byte of a response.
type Status byte

// The statuses.
const (
	StatusOK          Status = 0 // the bytes follow
	StatusNotFound    Status = 1 // no such object
	StatusRefused     Status = 2 // the object is private to the serving node
	StatusBadRequest  Status = 3 // the request did not decode
	StatusBadRange    Status = 4 // offset/length outside the object
	StatusUnavailable Status = 5 // the server failed to read it, or is closing
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusNotFound:
		return "not found"
	case StatusRefused:
		return "refused (private)"
	case StatusBadRequest:
		return "bad request"
	case StatusBadRange:
		return "bad range"
	case StatusUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("status %d", byte(s))
}

// err is the sentinel a client wraps for a status other than OK.
func (s Status) err() error {
	switch s {
	case StatusNotFound:
		return ErrNotFound
	case StatusRefused:
		return ErrRefused
	case StatusBadRequest:
		return ErrBadRequest
	case StatusBadRange:
		return ErrBadRange
	case StatusUnavailable:
		return ErrUnavailable
	}
	return ErrBadResponse
}

// request asks for Length bytes of object Hash from Offset (Length 0: to
// the end).
type request struct {
	Hash   string // ValidHash
	Offset uint64
	Length uint64
}

// encode returns the request's frame payload. r.Hash must be valid.
func (r request) encode() []byte {
	b := make([]byte, 0, requestLen)
	b = append(b, wireMagic...)
	b = append(b, wireVersion)
	b, _ = hex.AppendDecode(b, []byte(r.Hash))
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	b = binary.BigEndian.AppendUint64(b, r.Length)
	return b
}

// decodeRequest decodes a request frame payload; anything malformed is an
// error wrapping ErrBadRequest that says what was wrong.
func decodeRequest(b []byte) (request, error) {
	if len(b) < 5 {
		return request{}, fmt.Errorf("%w: request of %d bytes", ErrBadRequest, len(b))
	}
	if string(b[:4]) != wireMagic {
		return request{}, fmt.Errorf("%w: magic %q, want %q", ErrBadRequest, b[:4], wireMagic)
	}
	if b[4] != wireVersion {
		return request{}, fmt.Errorf("%w: version %d, this node speaks %d", ErrBadRequest, b[4], wireVersion)
	}
	if len(b) != requestLen {
		return request{}, fmt.Errorf("%w: request of %d bytes, want %d", ErrBadRequest, len(b), requestLen)
	}
	return request{
		Hash:   hex.EncodeToString(b[5 : 5+sha256.Size]),
		Offset: binary.BigEndian.Uint64(b[5+sha256.Size:]),
		Length: binary.BigEndian.Uint64(b[5+sha256.Size+8:]),
	}, nil
}

// header is the response header.
type header struct {
	Status Status
	Size   uint64 // the object's total size (OK and bad range)
	Reason string // why, for statuses other than OK
}

// encode returns the header's frame payload; the reason is made valid
// UTF-8 and cut to maxReason bytes (on a rune boundary).
func (h header) encode() []byte {
	reason := strings.ToValidUTF8(h.Reason, "\uFFFD")
	if len(reason) > maxReason {
		reason = reason[:maxReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	b := make([]byte, 0, headerLen+len(reason))
	b = append(b, wireMagic...)
	b = append(b, wireVersion, byte(h.Status))
	b = binary.BigEndian.AppendUint64(b, h.Size)
	return append(b, reason...)
}

// decodeHeader decodes a response header payload; anything malformed is an
// error wrapping ErrBadResponse.
func decodeHeader(b []byte) (header, error) {
	if len(b) < headerLen {
		return header{}, fmt.Errorf("%w: header of %d bytes, want at least %d", ErrBadResponse, len(b), headerLen)
	}
	if string(b[:4]) != wireMagic {
		return header{}, fmt.Errorf("%w: magic %q, want %q", ErrBadResponse, b[:4], wireMagic)
	}
	if b[4] != wireVersion {
		return header{}, fmt.Errorf("%w: version %d, want %d", ErrBadResponse, b[4], wireVersion)
	}
	h := header{Status: Status(b[5]), Size: binary.BigEndian.Uint64(b[6:14])}
	if h.Status > StatusUnavailable {
		return header{}, fmt.Errorf("%w: unknown status %d", ErrBadResponse, b[5])
	}
	reason := b[headerLen:]
	switch {
	case len(reason) > maxReason:
		return header{}, fmt.Errorf("%w: reason of %d bytes, limit %d", ErrBadResponse, len(reason), maxReason)
	case !utf8.Valid(reason):
		return header{}, fmt.Errorf("%w: reason is not UTF-8", ErrBadResponse)
	case h.Status == StatusOK && len(reason) > 0:
		return header{}, fmt.Errorf("%w: reason with status ok", ErrBadResponse)
	case h.Size > maxObjectSize:
		return header{}, fmt.Errorf("%w: size %d beyond %d", ErrBadResponse, h.Size, int64(maxObjectSize))
	}
	h.Reason = string(reason)
	return h, nil
}

// maxObjectSize keeps sizes within int64 (and offsets within what a file
// can seek to).
const maxObjectSize = 1<<63 - 1

// readFrame reads one frame of at most maxFrame bytes.
func readFrame(r io.Reader) ([]byte, error) {
	return transport.ReadFrame(r, nil, maxFrame)
}
