package memnet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
)

// Bytes that do not decode break the stream with ErrBadFrame: memnet really
// decodes what it carries, so an encoding bug cannot pass through it.
func TestBadBytesBreakTheStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n := New(1)
	defer n.Close()
	a, _ := n.Node("a")
	b, _ := n.Node("b")
	l, _ := b.Listen(transport.ProtoRaft)

	// inject puts raw bytes on the wire from s to its peer.
	inject := func(s *stream, raw []byte) {
		s.c.mu.Lock()
		s.out().push(n.topology(), raw, false)
		s.c.wake()
		s.c.mu.Unlock()
	}

	for name, raw := range map[string][]byte{
		"length beyond the bytes": {0, 0, 0, 9, 'x'},
		"bytes after the frame":   {0, 0, 0, 1, 'x', 'y'},
		"truncated length":        {0, 0},
		"frame above the limit":   {0, 0x10, 0, 0},
		"empty segment":           {},
	} {
		t.Run(name, func(t *testing.T) {
			ds, err := a.Dial(ctx, "b", Address("b"), transport.ProtoRaft, transport.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			as, err := l.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			inject(ds.(*stream), raw)
			if _, err := as.Read(make([]byte, 8)); !errors.Is(err, transport.ErrBadFrame) && !errors.Is(err, transport.ErrFrameTooLarge) {
				t.Errorf("read of %x: %v, want ErrBadFrame or ErrFrameTooLarge", raw, err)
			}
			if _, err := ds.Write([]byte("x")); err == nil {
				t.Errorf("write on the broken stream succeeded")
			}
			ds.Close()
			as.Close()
		})
	}

	t.Run("bad stream header", func(t *testing.T) {
		remote, seq, err := n.connect(a, "b", Address("b"))
		if err != nil {
			t.Fatal(err)
		}
		ds, as := newStream(a, remote, seq, transport.ProtoRaft)
		if !a.track(ds) || !remote.handshake(as) {
			t.Fatal("endpoint closed")
		}
		inject(ds, []byte("GET / HTTP/1.1\r\n"))
		ds.c.mu.Lock()
		_, err = ds.next(ctx, nil, true)
		ds.c.mu.Unlock()
		if !errors.Is(err, transport.ErrBadFrame) {
			t.Errorf("answer to a bad header: %v, want ErrBadFrame", err)
		}
		ds.Close()
	})

	t.Run("bad status", func(t *testing.T) {
		remote, seq, err := n.connect(a, "b", Address("b"))
		if err != nil {
			t.Fatal(err)
		}
		ds, as := newStream(a, remote, seq, transport.ProtoRaft)
		if !a.track(ds) || !b.track(as) {
			t.Fatal("endpoint closed")
		}
		// No handshake goroutine: the test answers for b, wrongly.
		inject(as, []byte{7})
		_, err = a.finishDial(ctx, ds, "b", Address("b"), transport.ProtoRaft)
		if !errors.Is(err, transport.ErrBadFrame) {
			t.Errorf("dial answered with status 7: %v, want ErrBadFrame", err)
		}
		as.Close()
	})
}
