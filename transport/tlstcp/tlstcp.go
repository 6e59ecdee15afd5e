// Package tlstcp is braid's bulk transport: every stream is a TCP
// connection of its own, under TLS 1.3 with the same mutual authentication
// as transport/quic (the node's certificate, the cluster CA, ALPN, the
// revocation set), so a peer is who its certificate says on either
// transport.
//
// Why a second transport: on one connection QUIC (quic-go) moves about a
// third of what TLS over TCP moves on the same cores, because it seals,
// sends and receives every 1.4 kB datagram on its own in user space, while
// the kernel segments and coalesces TCP in 64 kB units and TLS seals 16 kB
// records (docs/BENCHMARKS.md, "Transport"). Ring all-reduce traffic is a
// few long-lived bulk streams, which is what TCP is best at; QUIC keeps
// what it is better at (many small multiplexed streams, no head-of-line
// blocking between them, connection migration). transport.Route puts the
// two behind one transport.Transport.
//
// The TCP listener binds the same host and port number as the node's QUIC
// socket, so peers need no second address: a firewall must pass both TCP
// and UDP on that port.
//
// What it does not do: multiplex streams on a connection (one connection
// per stream, so lanes are always separate), resume TLS sessions (each
// stream's handshake checks the certificate as it is now), or retry.
package tlstcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
)

// Config configures a Transport. Start from DefaultConfig.
type Config struct {
	// ListenAddr is the TCP "host:port" to listen on; port 0 picks a free
	// port (see Transport.Addr).
	ListenAddr string
	// AdvertiseAddr, when set, is what Transport.Addr reports.
	AdvertiseAddr string
	// Creds are this node's certificate, key and cluster CA.
	Creds pki.Credentials
	// HandshakeTimeout bounds a connection's TCP connect and TLS handshake.
	HandshakeTimeout time.Duration
	// HeaderTimeout is how long an accepted connection may take to send
	// its stream header after the handshake.
	HeaderTimeout time.Duration
	// KeepAlive is the TCP keep-alive period: how a connection to a peer
	// that vanished without a trace is noticed when nothing is written.
	KeepAlive time.Duration
	// MaxPending bounds the accepted connections still in their handshake
	// or header; further ones are closed at once.
	MaxPending int
	// Logger receives problems that have no caller to return them to. Nil
	// means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig has a 10 s handshake and header timeout, 5 s TCP
// keep-alives and 256 pending connections. ListenAddr and Creds must be
// set.
func DefaultConfig() Config {
	return Config{HandshakeTimeout: 10 * time.Second, HeaderTimeout: 10 * time.Second,
		KeepAlive: 5 * time.Second, MaxPending: 256}
}

// Validate names the first field that is wrong.
func (c Config) Validate() error {
	switch {
	case c.ListenAddr == "":
		return errors.New("tlstcp: Config.ListenAddr is empty")
	case c.Creds == nil:
		return errors.New("tlstcp: Config.Creds is nil (load them with pki.LoadNode)")
	case c.HandshakeTimeout <= 0:
		return fmt.Errorf("tlstcp: Config.HandshakeTimeout %v, want > 0", c.HandshakeTimeout)
	case c.HeaderTimeout <= 0:
		return fmt.Errorf("tlstcp: Config.HeaderTimeout %v, want > 0", c.HeaderTimeout)
	case c.KeepAlive < 0:
		return fmt.Errorf("tlstcp: Config.KeepAlive %v, want ≥ 0", c.KeepAlive)
	case c.MaxPending < 1:
		return fmt.Errorf("tlstcp: Config.MaxPending %d, want ≥ 1", c.MaxPending)
	}
	return nil
}

// Transport is a node's TLS-over-TCP endpoint. All methods are safe for
// concurrent use.
type Transport struct {
	cfg  Config
	self transport.PeerID
	addr string
	log  *slog.Logger
	ln   net.Listener
	srv  *tls.Config // the credentials' server configuration, asked once

	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine this Transport starts

	mu        sync.Mutex
	closed    bool
	pending   int // accepted connections before their header
	listeners transport.Listeners
	streams   map[*stream]struct{} // open streams, dialled and accepted
}

var _ transport.Transport = (*Transport)(nil)

// New listens on cfg.ListenAddr and starts accepting connections.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lc := net.ListenConfig{KeepAlive: cfg.KeepAlive}
	ln, err := lc.Listen(context.Background(), "tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("tlstcp: %w", err)
	}
	t := &Transport{cfg: cfg, self: cfg.Creds.Self(), addr: cfg.AdvertiseAddr, log: cfg.Logger, ln: ln,
		srv: cfg.Creds.ServerConfig(), streams: map[*stream]struct{}{}}
	if t.addr == "" {
		t.addr = ln.Addr().String()
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log = t.log.With("node", string(t.self))
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Go(t.acceptConns)
	return t, nil
}

// Self is this node's PeerID, the CommonName of its certificate.
func (t *Transport) Self() transport.PeerID { return t.self }

// Addr is Config.AdvertiseAddr, or else the address the listener is bound
// to.
func (t *Transport) Addr() string { return t.addr }

// Dial connects to addr, which must authenticate as peer, and opens a
// stream for p on a connection of its own (opt.Lane is therefore moot).
//
// Errors name the peer and the address and wrap: ErrWrongPeer when the
// certificate at addr is not peer's; ErrNotListening; ctx's error;
// ErrClosed after Close; ErrUnreachable for everything else, including a
// handshake the peer refused, with the TLS or network error wrapped too.
func (t *Transport) Dial(ctx context.Context, peer transport.PeerID, addr string, p transport.Protocol, opt transport.DialOptions) (transport.Stream, error) {
	if !transport.ValidProtocol(p) {
		return nil, fmt.Errorf("%w: %q", transport.ErrBadProtocol, p)
	}
	if peer == "" {
		return nil, fmt.Errorf("%w: dial %s with an empty PeerID", transport.ErrWrongPeer, addr)
	}
	fail := func(err error) error {
		switch {
		case errors.Is(err, transport.ErrWrongPeer), errors.Is(err, transport.ErrNotListening), errors.Is(err, transport.ErrBadFrame):
		case ctx.Err() != nil:
			err = ctx.Err()
		case t.ctx.Err() != nil:
			err = transport.ErrClosed
		default:
			err = fmt.Errorf("%w: %w", transport.ErrUnreachable, err)
		}
		return fmt.Errorf("tlstcp: dial %s at %s for %s: %w", peer, addr, p, err)
	}
	if t.ctx.Err() != nil {
		return nil, fail(transport.ErrClosed)
	}
	// The dial ends with ctx, with Close, or after the handshake timeout;
	// the header exchange with ctx or Close.
	dctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	d := net.Dialer{KeepAlive: t.cfg.KeepAlive}
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fail(err)
	}
	sock := newSockWriter(raw)
	tc := tls.Client(sock, t.cfg.Creds.ClientConfig(peer))
	if err := tc.HandshakeContext(dctx); err != nil {
		raw.Close()
		return nil, fail(err)
	}
	// ClientConfig already checked the name during the handshake; check the
	// connection's recorded identity too, so nothing rests on one place.
	got, err := t.cfg.Creds.PeerIdentity(tc.ConnectionState())
	if err == nil && got != peer {
		err = fmt.Errorf("%w: connected to %q", transport.ErrWrongPeer, got)
	}
	if err != nil {
		raw.Close()
		return nil, fail(err)
	}
	s := newStream(tc, sock, peer, p)
	if !t.track(s) {
		raw.Close()
		return nil, fail(transport.ErrClosed)
	}
	xstop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	var status [1]byte
	err = transport.WriteStreamHeader(tc, p)
	if err == nil {
		_, err = io.ReadFull(tc, status[:])
	}
	if !xstop() || err != nil {
		s.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fail(err)
	}
	switch status[0] {
	case transport.StatusOK:
		return s, nil
	case transport.StatusNotListening:
		s.Close()
		return nil, fail(transport.ErrNotListening)
	default:
		s.Close()
		return nil, fail(fmt.Errorf("%w: status byte %d", transport.ErrBadFrame, status[0]))
	}
}

// track records s as open, unless the Transport is closed.
func (t *Transport) track(s *stream) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.streams[s] = struct{}{}
	s.untrack = func() {
		t.mu.Lock()
		delete(t.streams, s)
		t.mu.Unlock()
	}
	return true
}

// acceptConns accepts connections until Close; each one's handshake and
// header run on a goroutine of their own, at most MaxPending at once.
func (t *Transport) acceptConns() {
	for {
		raw, err := t.ln.Accept()
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors, for a moment: back off instead of spinning.
				select {
				case <-time.After(50 * time.Millisecond):
				case <-t.ctx.Done():
					return
				}
				continue
			}
			t.log.Warn("tlstcp: accept", "err", err)
			continue
		}
		t.mu.Lock()
		full := t.pending >= t.cfg.MaxPending
		if !full {
			t.pending++
		}
		t.mu.Unlock()
		if full {
			t.log.Warn("tlstcp: too many connections in their handshake; closed one", "remote", raw.RemoteAddr().String())
			raw.Close()
			continue
		}
		t.wg.Go(func() {
			t.serveConn(raw)
			t.mu.Lock()
			t.pending--
			t.mu.Unlock()
		})
	}
}

// serveConn does the handshake and reads the stream header of one accepted
// connection, then hands the stream to the protocol's listener or answers
// StatusNotListening.
func (t *Transport) serveConn(raw net.Conn) {
	sock := newSockWriter(raw)
	tc := tls.Server(sock, t.srv)
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if t.ctx.Err() == nil {
			t.log.Warn("tlstcp: refused connection", "remote", raw.RemoteAddr().String(), "err", err)
		}
		raw.Close()
		return
	}
	// The TLS stack verified the chain; a certificate that passes but
	// names no node is refused here.
	peer, err := t.cfg.Creds.PeerIdentity(tc.ConnectionState())
	if err != nil {
		t.log.Warn("tlstcp: refused connection", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	raw.SetReadDeadline(time.Now().Add(t.cfg.HeaderTimeout))
	p, err := transport.ReadStreamHeader(tc)
	if err != nil {
		if t.ctx.Err() == nil {
			t.log.Warn("tlstcp: bad stream header, connection closed", "peer", string(peer), "remote", raw.RemoteAddr().String(), "err", err)
		}
		raw.Close()
		return
	}
	raw.SetReadDeadline(time.Time{})
	s := newStream(tc, sock, peer, p)
	if !t.track(s) {
		raw.Close()
		return
	}
	l := t.listeners.Get(p)
	if l == nil {
		tc.Write([]byte{transport.StatusNotListening})
		s.Close()
		return
	}
	if _, err := tc.Write([]byte{transport.StatusOK}); err != nil {
		s.Close()
		return
	}
	select {
	case l.In() <- s:
	case <-l.Done():
		s.Close()
	case <-t.ctx.Done():
		s.Close()
	}
}

// Revalidate checks the peer of every open stream against the credentials
// as they are now (Credentials.PeerIdentity) and closes each one whose
// certificate no longer passes: revoked, of a CA no longer trusted,
// expired, or naming another node. It returns the peers cut off, with
// repeats, in no particular order.
func (t *Transport) Revalidate() []transport.PeerID {
	t.mu.Lock()
	open := make([]*stream, 0, len(t.streams))
	for s := range t.streams {
		open = append(open, s)
	}
	t.mu.Unlock()
	var cut []transport.PeerID
	for _, s := range open {
		got, err := t.cfg.Creds.PeerIdentity(s.tc.ConnectionState())
		if err == nil && got == s.peer {
			continue
		}
		t.log.Warn("tlstcp: closing a stream whose peer's certificate is no longer accepted", "peer", string(s.peer),
			"protocol", string(s.proto), "err", err)
		cut = append(cut, s.peer)
		s.Close()
	}
	return cut
}

// Listen registers the listener for p.
func (t *Transport) Listen(p transport.Protocol) (transport.Listener, error) {
	l, err := t.listeners.Listen(p, t.self)
	if err != nil {
		return nil, err // not a nil *Queue in a non-nil Listener
	}
	return l, nil
}

// Close closes the listener, every protocol listener and every stream, and
// waits for every goroutine the Transport started. Later calls return nil.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	open := make([]*stream, 0, len(t.streams))
	for s := range t.streams {
		open = append(open, s)
	}
	t.mu.Unlock()
	t.cancel()
	err := t.ln.Close()
	t.listeners.Close()
	for _, s := range open {
		s.Close()
	}
	t.wg.Wait()
	if err != nil {
		return fmt.Errorf("tlstcp: close: %w", err)
	}
	return nil
}
