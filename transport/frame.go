package transport

import (
	"encoding/binary"
	"fmt"
	"io"
)

// The stream header opens every stream, on every implementation:
//
//	"BRD1" | len(protocol) (1 byte) | protocol (1..32 bytes)
//
// and the accepting side answers with one status byte: StatusOK, or
// StatusNotListening when it has no listener for the protocol (then it
// closes the stream).
const (
	streamMagic = "BRD1"

	StatusOK           byte = 0
	StatusNotListening byte = 1
)

// WriteStreamHeader writes the header that opens a stream for p.
func WriteStreamHeader(w io.Writer, p Protocol) error {
	if !ValidProtocol(p) {
		return fmt.Errorf("%w: %q", ErrBadProtocol, p)
	}
	b := make([]byte, 0, len(streamMagic)+1+len(p))
	b = append(b, streamMagic...)
	b = append(b, byte(len(p)))
	b = append(b, p...)
	_, err := w.Write(b)
	return err
}

// ReadStreamHeader reads and validates a stream header. Anything else (a
// wrong magic, a bad length, a name outside the protocol alphabet) is
// ErrBadFrame; the caller closes the stream.
func ReadStreamHeader(r io.Reader) (Protocol, error) {
	var head [5]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return "", fmt.Errorf("%w: stream header: %v", ErrBadFrame, err)
	}
	if string(head[:4]) != streamMagic {
		return "", fmt.Errorf("%w: stream header magic %q, want %q", ErrBadFrame, head[:4], streamMagic)
	}
	n := int(head[4])
	if n < 1 || n > 32 {
		return "", fmt.Errorf("%w: protocol name of %d bytes", ErrBadFrame, n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return "", fmt.Errorf("%w: protocol name: %v", ErrBadFrame, err)
	}
	p := Protocol(name)
	if !ValidProtocol(p) {
		return "", fmt.Errorf("%w: protocol name %q", ErrBadFrame, name)
	}
	return p, nil
}

// DefaultMaxFrame bounds ReadFrame when the caller has no tighter limit.
const DefaultMaxFrame = 64 << 20

// WriteFrame writes one length-prefixed message: a 4-byte big-endian length,
// then the payload, in a single Write, so that frames from concurrent
// writers on one stream never interleave (provided the stream's Write is
// atomic, as net.Conn's is documented to be safe for concurrent use).
func WriteFrame(w io.Writer, payload []byte) error {
	if uint64(len(payload)) > 1<<32-1 {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(payload))
	}
	b := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint32(b, uint32(len(payload)))
	copy(b[4:], payload)
	_, err := w.Write(b)
	return err
}

// FramePrefix is the length prefix in front of every frame's payload.
const FramePrefix = 4

// WriteFramed writes b[FramePrefix:] as one frame, exactly as WriteFrame
// would, but fills the length into b[:FramePrefix] instead of copying the
// payload into a new buffer: the zero-copy form for bulk senders that
// reserve the prefix when they build a message.
func WriteFramed(w io.Writer, b []byte) error {
	if len(b) < FramePrefix {
		return fmt.Errorf("%w: buffer of %d bytes has no room for the length prefix", ErrBadFrame, len(b))
	}
	if uint64(len(b)-FramePrefix) > 1<<32-1 {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, len(b)-FramePrefix)
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-FramePrefix))
	_, err := w.Write(b)
	return err
}

// ReadFrame reads one message written by WriteFrame into dst (grown if
// needed) and returns it. A length above max is ErrFrameTooLarge, checked
// before anything is allocated; a stream that ends inside a frame is
// ErrBadFrame (a clean end before a frame is io.EOF).
func ReadFrame(r io.Reader, dst []byte, max int) ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%w: truncated length", ErrBadFrame)
		}
		return nil, err
	}
	n := binary.BigEndian.Uint32(head[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrFrameTooLarge, n, max)
	}
	if cap(dst) < int(n) {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	if _, err := io.ReadFull(r, dst); err != nil {
		return nil, fmt.Errorf("%w: frame of %d bytes: %v", ErrBadFrame, n, err)
	}
	return dst, nil
}
