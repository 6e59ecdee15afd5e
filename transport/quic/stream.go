package quic

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/braidml/braid/transport"
)

// errStreamClosed is what Read and Write return after Close.
var errStreamClosed = fmt.Errorf("quic: use of closed stream: %w (%w)", transport.ErrClosed, net.ErrClosed)

// stream is a QUIC stream as a transport.Stream (a net.Conn). Read and Write
// may run concurrently with each other and with Close; Close unblocks them.
type stream struct {
	qs    *quicgo.Stream
	conn  *quicgo.Conn
	peer  transport.PeerID
	proto transport.Protocol

	mu          sync.Mutex
	closed      bool // Close was called
	writeClosed bool // the send side was closed or cancelled
	writing     int  // Writes in progress
}

var _ transport.Stream = (*stream)(nil)

func newStream(qs *quicgo.Stream, conn *quicgo.Conn, peer transport.PeerID, p transport.Protocol) *stream {
	return &stream{qs: qs, conn: conn, peer: peer, proto: p}
}

func (s *stream) Peer() transport.PeerID        { return s.peer }
func (s *stream) Protocol() transport.Protocol  { return s.proto }
func (s *stream) LocalAddr() net.Addr           { return s.conn.LocalAddr() }
func (s *stream) RemoteAddr() net.Addr          { return s.conn.RemoteAddr() }
func (s *stream) SetDeadline(t time.Time) error { return s.qs.SetDeadline(t) }
func (s *stream) SetReadDeadline(t time.Time) error {
	return s.qs.SetReadDeadline(t)
}
func (s *stream) SetWriteDeadline(t time.Time) error {
	return s.qs.SetWriteDeadline(t)
}

func (s *stream) Read(b []byte) (int, error) {
	n, err := s.qs.Read(b)
	if err != nil {
		err = s.mapErr(err, false)
	}
	return n, err
}

func (s *stream) Write(b []byte) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errStreamClosed
	}
	s.writing++
	s.mu.Unlock()
	n, err := s.qs.Write(b)
	s.mu.Lock()
	s.writing--
	s.mu.Unlock()
	if err != nil {
		err = s.mapErr(err, true)
	}
	return n, err
}

// mapErr turns quic-go's errors into the ones transport documents: after
// Close, net.ErrClosed and transport.ErrClosed; writing to a stream the
// peer closed (or after CloseWrite), io.ErrClosedPipe; a stream the peer
// reset or a connection that died, transport.ErrUnreachable. io.EOF and
// deadline errors (net.Error with Timeout) pass unchanged.
func (s *stream) mapErr(err error, writing bool) error {
	if err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	if s.isClosed() {
		return errStreamClosed
	}
	var (
		se  *quicgo.StreamError
		app *quicgo.ApplicationError
	)
	switch {
	case writing && errors.Is(err, quicgo.ErrStreamClosed):
		return fmt.Errorf("quic: write after CloseWrite: %w", io.ErrClosedPipe)
	case writing && errors.As(err, &se):
		// STOP_SENDING from the peer, or our own reset by CloseWrite.
		return fmt.Errorf("quic: %s closed the %s stream: %w (%w)", s.peer, s.proto, io.ErrClosedPipe, err)
	case errors.As(err, &se):
		return fmt.Errorf("quic: %s reset the %s stream: %w: %w", s.peer, s.proto, transport.ErrUnreachable, err)
	case errors.As(err, &app) && !app.Remote:
		return fmt.Errorf("quic: %s stream with %s: %w (%w)", s.proto, s.peer, transport.ErrClosed, err)
	}
	return fmt.Errorf("quic: %s stream with %s: %w: %w", s.proto, s.peer, transport.ErrUnreachable, err)
}

// CloseWrite sends FIN after the data written so far; the peer reads it to
// the end, then io.EOF. Reads go on.
func (s *stream) CloseWrite() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeWriteLocked()
}

// Close ends both directions: the data already written is still delivered
// (FIN follows it) unless a Write is blocked at that moment, in which case
// the send side is reset; the receive side stops (the peer's writes fail).
func (s *stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.qs.CancelRead(streamClosed)
	return s.closeWriteLocked()
}

func (s *stream) closeWriteLocked() error {
	if s.writeClosed {
		return nil
	}
	s.writeClosed = true
	if s.writing > 0 {
		// quic-go's Close must not run concurrently with Write, and
		// would not unblock it: reset the send side instead.
		s.qs.CancelWrite(streamClosed)
		return nil
	}
	s.qs.Close()
	return nil
}

func (s *stream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}
