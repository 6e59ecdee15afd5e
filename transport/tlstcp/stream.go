package tlstcp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/braidml/braid/transport"
)

// errStreamClosed is what Read and Write return after Close.
var errStreamClosed = fmt.Errorf("tlstcp: use of closed stream: %w (%w)", transport.ErrClosed, net.ErrClosed)

// stream is one TLS connection as a transport.Stream (a net.Conn). Read and
// Write may run concurrently with each other and with Close; Close
// unblocks them. A Write that timed out leaves the stream unable to write
// (TLS cannot tell how much of a record went out); reads go on.
type stream struct {
	tc    *tls.Conn
	sock  *sockWriter // under tc
	peer  transport.PeerID
	proto transport.Protocol

	untrack func() // drops the stream from its Transport's set; set before use

	writeMu sync.Mutex // one Write (or CloseWrite) at a time: a Write is several TLS writes

	mu          sync.Mutex
	closed      bool
	writeClosed bool
}

var _ transport.Stream = (*stream)(nil)

func newStream(tc *tls.Conn, sock *sockWriter, peer transport.PeerID, p transport.Protocol) *stream {
	return &stream{tc: tc, sock: sock, peer: peer, proto: p, untrack: func() {}}
}

func (s *stream) Peer() transport.PeerID            { return s.peer }
func (s *stream) Protocol() transport.Protocol      { return s.proto }
func (s *stream) LocalAddr() net.Addr               { return s.sock.LocalAddr() }
func (s *stream) RemoteAddr() net.Addr              { return s.sock.RemoteAddr() }
func (s *stream) SetReadDeadline(t time.Time) error { return s.tc.SetReadDeadline(t) }

func (s *stream) SetDeadline(t time.Time) error      { return s.tc.SetDeadline(t) }
func (s *stream) SetWriteDeadline(t time.Time) error { return s.tc.SetWriteDeadline(t) }

func (s *stream) Read(b []byte) (int, error) {
	n, err := s.tc.Read(b)
	if err != nil {
		err = s.mapErr(err, false)
	}
	return n, err
}

// maxRecord is the most plaintext one TLS record carries.
const maxRecord = 16 << 10

// Write writes b a record at a time, so that a write deadline that passes
// ends it between records (see sockWriter).
func (s *stream) Write(b []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	closed, writeClosed := s.closed, s.writeClosed
	s.mu.Unlock()
	switch {
	case closed:
		return 0, errStreamClosed
	case writeClosed:
		return 0, fmt.Errorf("tlstcp: write after CloseWrite: %w", io.ErrClosedPipe)
	}
	// The records of this Write go out in batches (sockWriter.setBatch).
	s.sock.setBatch(true)
	n, err := s.writeRecords(b)
	if ferr := s.sock.setBatch(false); err == nil && ferr != nil {
		err = s.mapErr(ferr, true)
	}
	if err == nil && s.sock.takeTimeout() {
		err = os.ErrDeadlineExceeded
	}
	return n, err
}

// writeRecords hands b to TLS a record at a time, and stops when the write
// deadline passes.
func (s *stream) writeRecords(b []byte) (int, error) {
	n := 0
	for {
		if err := s.sock.waitFlush(); err != nil {
			return n, s.mapErr(err, true)
		}
		if n == len(b) {
			return n, nil
		}
		if s.sock.expired() {
			return n, os.ErrDeadlineExceeded
		}
		m, err := s.tc.Write(b[n:min(len(b), n+maxRecord)])
		n += m
		if err != nil {
			return n, s.mapErr(err, true)
		}
		if s.sock.takeTimeout() {
			return n, os.ErrDeadlineExceeded
		}
	}
}

// mapErr turns the TLS and socket errors into the ones transport
// documents: after Close, net.ErrClosed and transport.ErrClosed; writing to
// a stream the peer closed, io.ErrClosedPipe; a connection that died,
// transport.ErrUnreachable. io.EOF and deadline errors pass unchanged.
func (s *stream) mapErr(err error, writing bool) error {
	if err == io.EOF || errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return errStreamClosed
	}
	if writing && isPeerGone(err) {
		return fmt.Errorf("tlstcp: %s closed the %s stream: %w (%w)", s.peer, s.proto, io.ErrClosedPipe, err)
	}
	return fmt.Errorf("tlstcp: %s stream with %s: %w: %w", s.proto, s.peer, transport.ErrUnreachable, err)
}

// CloseWrite sends TLS close_notify and a TCP FIN after the data written
// so far; the peer reads it to the end, then io.EOF. Reads go on.
func (s *stream) CloseWrite() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.mu.Lock()
	if s.closed || s.writeClosed {
		s.mu.Unlock()
		return nil
	}
	s.writeClosed = true
	s.mu.Unlock()
	if err := s.tc.CloseWrite(); err != nil {
		return s.mapErr(err, true)
	}
	return nil
}

// Close ends both directions: the data already written is delivered, then
// io.EOF, unless a Write is blocked at that moment (the connection is then
// cut). Reads and Writes under way return errors.
func (s *stream) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.untrack()
	if !s.writeMu.TryLock() {
		// A Write is under way, perhaps blocked on a peer that does not
		// read: cut the connection (no close_notify), which unblocks it.
		s.sock.Conn.Close()
		return nil
	}
	s.writeMu.Unlock()
	// tls.Conn.Close sends close_notify (bounded by its own 5 s deadline)
	// unless a Write is in flight, then closes the socket, which unblocks
	// Reads and Writes.
	s.tc.Close()
	return nil
}

// isPeerGone reports whether a write failed because the peer closed or
// reset the connection.
func isPeerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}
