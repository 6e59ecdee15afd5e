package blobstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/node/blobstore"
	"github.com/braidml/braid/transport"
)

// These tests speak the wire protocol by hand, from the package comment,
// rather than through Fetch.

// dialRaw opens a ProtoShard stream from one node to another.
func dialRaw(t *testing.T, n *testNet, from, to *testNode) transport.Stream {
	t.Helper()
	s, err := from.tr.Dial(n.ctx, to.id, to.tr.Addr(), transport.ProtoShard, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.SetDeadline(time.Now().Add(10 * time.Second))
	return s
}

// rawRequest is a version-1 request payload, built from the documented
// layout.
func rawRequest(h string, offset, length uint64) []byte {
	b := []byte("BLOB\x01")
	raw, _ := hex.DecodeString(h)
	b = append(b, raw...)
	b = binary.BigEndian.AppendUint64(b, offset)
	return binary.BigEndian.AppendUint64(b, length)
}

// rawAnswer reads a response header frame.
func rawAnswer(t *testing.T, s transport.Stream) (status byte, size uint64, reason string) {
	t.Helper()
	b, err := transport.ReadFrame(s, nil, 1024)
	if err != nil {
		t.Fatalf("read response header: %v", err)
	}
	if len(b) < 14 || string(b[:5]) != "BLOB\x01" {
		t.Fatalf("response header %q", b)
	}
	return b[5], binary.BigEndian.Uint64(b[6:14]), string(b[14:])
}

// requireEOF reads the rest of s and fails unless it is exactly want.
func requireEOF(t *testing.T, s transport.Stream, want []byte) {
	t.Helper()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read to the end: %v (after %d bytes)", err, len(got))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("body of %d bytes, want %d", len(got), len(want))
	}
}

// Malformed requests get status 3 (bad request) and the stream closed; the
// server goes on serving.
func TestServerBadRequests(t *testing.T) {
	n := newTestNet(t, 20)
	a, c := n.addServer("a"), n.addClient("c")
	obj := randomBytes(20, 1000)
	h := a.put(t, obj)
	good := rawRequest(h, 0, 0)

	for _, tc := range []struct {
		name   string
		send   []byte // written raw, then CloseWrite
		reason string
	}{
		{"wrong magic", frame(append([]byte("BLOC"), good[4:]...)), "magic"},
		{"version 2", frame(append([]byte("BLOB\x02"), good[5:]...)), "version 2"},
		{"short request", frame(good[:20]), "20 bytes"},
		{"long request", frame(append(good, 0)), "54 bytes"},
		{"empty frame", frame(nil), "0 bytes"},
		{"huge frame length", []byte{0x7f, 0xff, 0xff, 0xff, 'B'}, "limit"},
		{"truncated frame", frame(good)[:30], "frame of 53 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dialRaw(t, n, c, a)
			if _, err := s.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			s.CloseWrite()
			status, size, reason := rawAnswer(t, s)
			if status != 3 || size != 0 || !strings.Contains(reason, tc.reason) {
				t.Errorf("status %d, size %d, reason %q; want 3 (bad request), 0, mentioning %q", status, size, reason, tc.reason)
			}
			requireEOF(t, s, nil)
		})
	}

	// A stream that ends without a request gets no answer.
	s := dialRaw(t, n, c, a)
	s.CloseWrite()
	requireEOF(t, s, nil)

	// Ranges: the part asked for, exactly; outside the object, status 4
	// with the object's size.
	for _, tc := range []struct {
		offset, length uint64
		status         byte
	}{
		{0, 0, 0}, {999, 0, 0}, {1000, 0, 0}, {10, 20, 0}, {0, 1000, 0},
		{1001, 0, 4}, {10, 991, 4}, {1 << 63, 1 << 63, 4}, {^uint64(0), 1, 4},
	} {
		s := dialRaw(t, n, c, a)
		transport.WriteFrame(s, rawRequest(h, tc.offset, tc.length))
		status, size, reason := rawAnswer(t, s)
		if status != tc.status || size != 1000 {
			t.Fatalf("offset %d length %d: status %d size %d (%s), want %d and 1000", tc.offset, tc.length, status, size, reason, tc.status)
		}
		var want []byte
		if status == 0 {
			end := uint64(1000)
			if tc.length > 0 {
				end = tc.offset + tc.length
			}
			want = obj[tc.offset:end]
		}
		requireEOF(t, s, want)
	}

	st := a.srv.Stats()
	if st.BadRequest != 7 || st.BadRange != 4 || st.OK != 5 {
		t.Errorf("stats %+v, want 7 bad requests, 4 bad ranges, 5 ok", st)
	}
	// Still serving.
	if err := c.fetch(n.ctx, h, 1000, blobstore.FetchOptions{}, a); err != nil {
		t.Fatal(err)
	}
}

func frame(payload []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(payload))), payload...)
}

// A client that sends nothing is dropped after RequestTimeout; one that
// stops reading is dropped after WriteTimeout, and its transfer counted as
// aborted.
func TestServerTimeouts(t *testing.T) {
	n := newTestNet(t, 21)
	a := n.addServer("a", func(c *blobstore.ServerConfig) {
		c.RequestTimeout = 200 * time.Millisecond
		c.WriteTimeout = 50 * time.Millisecond
	})
	c := n.addClient("c")
	h := a.put(t, randomBytes(21, 4<<20))

	lazy := dialRaw(t, n, c, a)
	transport.WriteFrame(lazy, rawRequest(h, 0, 0))
	line := a.log.waitFor(n.ctx, "transfer cut short", "peer=c")
	t.Logf("server: %s", line)

	silent := dialRaw(t, n, c, a)
	requireEOF(t, silent, nil) // the server closed it
	if st := a.srv.Stats(); st.Aborted != 1 || st.BytesServed >= 4<<20 {
		t.Errorf("stats %+v, want 1 aborted and less than the object served", st)
	}
}

// Cancelling Serve's context closes the streams it is serving (a client
// that stopped reading included) and Serve returns.
func TestServeStopsOnCancel(t *testing.T) {
	n := newTestNet(t, 22)
	a, c := n.addClient("a"), n.addClient("c")
	h := a.put(t, randomBytes(22, 4<<20))
	srv, err := blobstore.NewServer(a.store, blobstore.DefaultServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.tr.Listen(transport.ProtoShard)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(n.ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()

	lazy := dialRaw(t, n, c, a)
	transport.WriteFrame(lazy, rawRequest(h, 0, 0))
	if status, _, _ := rawAnswer(t, lazy); status != 0 {
		t.Fatalf("status %d", status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if st := srv.Stats(); st.Active != 0 || st.Aborted != 1 {
		t.Errorf("stats after Serve returned: %+v, want nothing active and 1 aborted", st)
	}
	// The client reads what was in flight, then the end.
	if _, err := io.Copy(io.Discard, lazy); err != nil && !errors.Is(err, transport.ErrUnreachable) {
		t.Errorf("client after the server stopped: %v", err)
	}
}

func TestServerConfigValidate(t *testing.T) {
	for name, f := range map[string]func(*blobstore.ServerConfig){
		"RequestTimeout": func(c *blobstore.ServerConfig) { c.RequestTimeout = 0 },
		"WriteTimeout":   func(c *blobstore.ServerConfig) { c.WriteTimeout = -1 },
		"MaxStreams":     func(c *blobstore.ServerConfig) { c.MaxStreams = 0 },
		"ChunkSize":      func(c *blobstore.ServerConfig) { c.ChunkSize = 1 << 30 },
	} {
		cfg := blobstore.DefaultServerConfig()
		f(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "ServerConfig."+name) {
			t.Errorf("%s out of bounds: %v, want an error naming it", name, err)
		}
	}
	if err := blobstore.DefaultServerConfig().Validate(); err != nil {
		t.Errorf("DefaultServerConfig: %v", err)
	}
}
