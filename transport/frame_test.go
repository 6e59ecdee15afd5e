package transport

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	for _, p := range []Protocol{ProtoRaft, ProtoRing, "a", "x.y-z_0123456789abcdefghijklmnop"} {
		var b bytes.Buffer
		if err := WriteStreamHeader(&b, p); err != nil {
			t.Fatalf("%q: %v", p, err)
		}
		got, err := ReadStreamHeader(&b)
		if err != nil || got != p {
			t.Fatalf("%q: read %q, %v", p, got, err)
		}
	}
	for _, p := range []Protocol{"", "UPPER", "has space", "x/y", Protocol(bytes.Repeat([]byte("a"), 33))} {
		if err := WriteStreamHeader(io.Discard, p); !errors.Is(err, ErrBadProtocol) {
			t.Errorf("%q: %v, want ErrBadProtocol", p, err)
		}
	}
	for name, raw := range map[string]string{
		"wrong magic": "HTTP/1.1", "zero length": "BRD1\x00", "too long": "BRD1\x21" + string(bytes.Repeat([]byte("a"), 33)),
		"bad char": "BRD1\x03a b", "truncated": "BRD1\x05ab", "empty": "",
	} {
		if _, err := ReadStreamHeader(bytes.NewReader([]byte(raw))); !errors.Is(err, ErrBadFrame) {
			t.Errorf("%s: %v, want ErrBadFrame", name, err)
		}
	}
}

func TestFrames(t *testing.T) {
	var b bytes.Buffer
	for _, m := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 1000)} {
		if err := WriteFrame(&b, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{0, 1, 2000} {
		got, err := ReadFrame(&b, nil, 4096)
		if err != nil || len(got) != want {
			t.Fatalf("frame: %d bytes, %v; want %d", len(got), err, want)
		}
	}
	if _, err := ReadFrame(&b, nil, 4096); err != io.EOF {
		t.Errorf("after the last frame: %v, want io.EOF", err)
	}
	WriteFrame(&b, make([]byte, 100))
	if _, err := ReadFrame(&b, nil, 99); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1, 2}), nil, 100); !errors.Is(err, ErrBadFrame) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0}), nil, 100); !errors.Is(err, ErrBadFrame) {
		t.Errorf("truncated length: %v", err)
	}
}

func TestWriteFramedMatchesWriteFrame(t *testing.T) {
	for _, m := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("ab"), 1000)} {
		var a, b bytes.Buffer
		WriteFrame(&a, m)
		buf := append(make([]byte, FramePrefix), m...)
		if err := WriteFramed(&b, buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Fatalf("WriteFramed of %d bytes wrote %x, WriteFrame %x", len(m), b.Bytes(), a.Bytes())
		}
	}
	if err := WriteFramed(io.Discard, []byte{1, 2}); !errors.Is(err, ErrBadFrame) {
		t.Errorf("buffer without room for the prefix: %v", err)
	}
}

// FuzzReadFrames: any bytes give frames within the limit or an error, never
// a panic or an allocation above the limit.
func FuzzReadFrames(f *testing.F) {
	var b bytes.Buffer
	WriteStreamHeader(&b, ProtoRing)
	WriteFrame(&b, []byte("hello"))
	f.Add(b.Bytes())
	f.Add([]byte("BRD1\x04raft\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		if _, err := ReadStreamHeader(r); err != nil {
			return
		}
		for {
			m, err := ReadFrame(r, nil, 1024)
			if err != nil {
				return
			}
			if len(m) > 1024 {
				t.Fatalf("frame of %d bytes above the limit", len(m))
			}
		}
	})
}
