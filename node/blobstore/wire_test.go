package blobstore

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// The byte layout of the package comment, written out by hand.
func TestWireLayout(t *testing.T) {
	h := Sum([]byte("abc")) // ba7816bf...
	req := request{Hash: h, Offset: 0x0102030405060708, Length: 9}
	want := "424c4f42" + "01" + h + "0102030405060708" + "0000000000000009"
	if got := hex.EncodeToString(req.encode()); got != want {
		t.Errorf("request\n got %s\nwant %s", got, want)
	}
	hdr := header{Status: StatusBadRange, Size: 300, Reason: "no"}
	want = "424c4f42" + "01" + "04" + "000000000000012c" + hex.EncodeToString([]byte("no"))
	if got := hex.EncodeToString(hdr.encode()); got != want {
		t.Errorf("header\n got %s\nwant %s", got, want)
	}
	if len(req.encode()) != requestLen || requestLen != 53 || headerLen != 14 {
		t.Errorf("requestLen %d, headerLen %d; the package comment says 53 and 14", requestLen, headerLen)
	}
}

func TestWireRoundTrip(t *testing.T) {
	for _, req := range []request{
		{Hash: Sum(nil)},
		{Hash: Sum([]byte("x")), Offset: 1 << 40, Length: 1},
		{Hash: strings.Repeat("f", 64), Offset: ^uint64(0), Length: ^uint64(0)},
	} {
		got, err := decodeRequest(req.encode())
		if err != nil || got != req {
			t.Errorf("request %+v decoded as %+v, %v", req, got, err)
		}
	}
	for _, hdr := range []header{
		{Status: StatusOK, Size: 0},
		{Status: StatusOK, Size: maxObjectSize},
		{Status: StatusRefused, Reason: "object abc is private to this node"},
		{Status: StatusUnavailable, Reason: strings.Repeat("é", 200)}, // cut to 256 bytes on a rune boundary
		{Status: StatusUnavailable, Reason: "bad path \xff"},          // made valid UTF-8
	} {
		got, err := decodeHeader(hdr.encode())
		if err != nil || got.Status != hdr.Status || got.Size != hdr.Size || len(got.Reason) > maxReason ||
			!strings.HasPrefix(strings.ToValidUTF8(hdr.Reason, "\uFFFD"), got.Reason) {
			t.Errorf("header %+v decoded as %+v, %v", hdr, got, err)
		}
	}
}

func TestWireRejects(t *testing.T) {
	good := request{Hash: Sum(nil)}.encode()
	mod := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, b := range map[string][]byte{
		"empty":       nil,
		"short":       good[:4],
		"truncated":   good[:requestLen-1],
		"long":        append(bytes.Clone(good), 0),
		"magic":       mod(func(b []byte) []byte { b[0] = 'X'; return b }),
		"version 0":   mod(func(b []byte) []byte { b[4] = 0; return b }),
		"version 2":   mod(func(b []byte) []byte { b[4] = 2; return b }),
		"header sent": header{Status: StatusOK}.encode(),
	} {
		if _, err := decodeRequest(b); !errors.Is(err, ErrBadRequest) {
			t.Errorf("request %s: %v, want ErrBadRequest", name, err)
		}
	}
	okHdr := header{Status: StatusOK, Size: 5}.encode()
	modh := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(okHdr)) }
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          okHdr[:13],
		"magic":          modh(func(b []byte) []byte { b[3] = 'b'; return b }),
		"version":        modh(func(b []byte) []byte { b[4] = 9; return b }),
		"status":         modh(func(b []byte) []byte { b[5] = 6; return b }),
		"size over 2^63": modh(func(b []byte) []byte { b[6] = 0x80; return b }),
		"reason with ok": append(bytes.Clone(okHdr), 'x'),
		"reason not utf8": func() []byte {
			b := header{Status: StatusNotFound}.encode()
			return append(b, 0xff)
		}(),
		"reason too long": append(header{Status: StatusNotFound}.encode(), strings.Repeat("x", maxReason+1)...),
	} {
		if _, err := decodeHeader(b); !errors.Is(err, ErrBadResponse) {
			t.Errorf("header %s: %v, want ErrBadResponse", name, err)
		}
	}
}

// The request decoder never panics; what it accepts encodes back to the
// same bytes.
func FuzzDecodeRequest(f *testing.F) {
	f.Add(request{Hash: Sum(nil), Offset: 7, Length: 0}.encode())
	f.Add(request{Hash: Sum([]byte("x")), Offset: ^uint64(0), Length: 1}.encode())
	f.Add([]byte("BLOB"))
	f.Add([]byte("BLOB\x02"))
	f.Add(header{Status: StatusOK}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := decodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		if !ValidHash(req.Hash) {
			t.Fatalf("decoded hash %q is not valid", req.Hash)
		}
		if !bytes.Equal(req.encode(), b) {
			t.Fatalf("%x decoded as %+v, which encodes as %x", b, req, req.encode())
		}
	})
}

// The response header decoder never panics; what it accepts encodes back to
// the same bytes.
func FuzzDecodeHeader(f *testing.F) {
	f.Add(header{Status: StatusOK, Size: 1 << 20}.encode())
	f.Add(header{Status: StatusRefused, Reason: "private"}.encode())
	f.Add(header{Status: StatusBadRange, Size: 9, Reason: "offset 10 beyond 9"}.encode())
	f.Add([]byte("BLOB\x01\x07"))
	f.Add(request{Hash: Sum(nil)}.encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		if h.Size > maxObjectSize || len(h.Reason) > maxReason {
			t.Fatalf("accepted %+v", h)
		}
		if !bytes.Equal(h.encode(), b) {
			t.Fatalf("%x decoded as %+v, which encodes as %x", b, h, h.encode())
		}
		_ = h.Status.String()
		_ = h.Status.err()
	})
}
