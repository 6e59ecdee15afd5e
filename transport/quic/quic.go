// Package quic implements transport.Transport over QUIC (quic-go) with
// mutual TLS 1.3: the only transport braid uses in production, and the only
// package that imports quic-go.
//
// A node has one UDP socket (Config.ListenAddr) on which it both accepts and
// dials connections. Every connection is authenticated both ways with
// certificates of the cluster CA (package transport/pki); a peer without one
// never gets past the handshake, and a peer's PeerID is the CommonName of its
// verified certificate. A node keeps up to Config.Lanes connections to each
// peer address, dialled on first use and reused; each Dial opens one QUIC
// stream on the connection of its lane and exchanges the stream header of
// package transport. Dialled connections carry only the streams this node
// opens; streams a peer opens arrive on connections it dialled.
//
// A node derives its QUIC stateless-reset key from its private key, so a node
// that crashed and restarts on the same address makes its peers drop the
// connections to its previous life at their next packet, and they redial.
//
// Throughput: quic-go does crypto and packet handling in Go, roughly one
// core's worth per connection; bulk traffic should spread over lanes
// (transport/transportbench measures it).
//
// What this package does not do: retries beyond redialling a connection found
// dead, peer discovery, or address resolution other than the system
// resolver's. Connections do not migrate, and 0-RTT is off (every handshake
// verifies certificates).
package quic

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	quicgo "github.com/quic-go/quic-go"

	"github.com/braidml/braid/transport"
)

// Error codes sent to peers in CONNECTION_CLOSE and RESET_STREAM /
// STOP_SENDING frames.
const (
	connShutdown  quicgo.ApplicationErrorCode = 0 // node closing
	connWrongPeer quicgo.ApplicationErrorCode = 1 // certificate names another node
	connRefused   quicgo.ApplicationErrorCode = 2 // identity not acceptable

	streamClosed    quicgo.StreamErrorCode = 0 // Close: no more reading
	streamBadHeader quicgo.StreamErrorCode = 1 // malformed or late stream header
	streamDropped   quicgo.StreamErrorCode = 2 // listener closed before Accept
)

// Transport is a node's QUIC endpoint. It implements transport.Transport;
// all methods are safe for concurrent use.
type Transport struct {
	cfg      Config
	self     transport.PeerID
	addr     string
	log      *slog.Logger
	udp      *net.UDPConn
	qt       *quicgo.Transport
	ql       *quicgo.Listener
	dialConf *quicgo.Config

	ctx    context.Context // ended by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine this Transport starts

	mu        sync.Mutex
	closed    bool
	listeners transport.Listeners
	dialed    map[laneKey]*dialing
	accepted  map[*quicgo.Conn]transport.PeerID
}

var _ transport.Transport = (*Transport)(nil)

// laneKey names one cached outgoing connection.
type laneKey struct {
	addr string
	lane int
}

// dialing is a cached outgoing connection, or one being dialled: ready is
// closed once conn/peer or err are set, and they do not change after.
type dialing struct {
	ready chan struct{}
	conn  *quicgo.Conn
	peer  transport.PeerID
	err   error
}

// New binds cfg.ListenAddr and starts accepting connections.
func New(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	laddr, err := net.ResolveUDPAddr("udp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("quic: listen address %q: %w", cfg.ListenAddr, err)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("quic: %w", err)
	}
	t := &Transport{
		cfg:      cfg,
		self:     cfg.Creds.Self(),
		addr:     cfg.AdvertiseAddr,
		log:      cfg.Logger,
		udp:      udp,
		dialed:   make(map[laneKey]*dialing),
		accepted: make(map[*quicgo.Conn]transport.PeerID),
	}
	if t.addr == "" {
		t.addr = udp.LocalAddr().String()
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	t.log = t.log.With("node", string(t.self))
	t.qt = &quicgo.Transport{Conn: udp, StatelessResetKey: resetKey(cfg.Creds.Certificate())}
	base := quicgo.Config{
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIdleTimeout:        cfg.IdleTimeout,
		KeepAlivePeriod:       cfg.KeepAlive,
		MaxIncomingUniStreams: -1,
		// Bulk traffic: let flow control grow to ~50 ms at 2.5 Gbit/s per
		// stream and 8 such streams per connection, and start large:
		// quic-go grows a window only when it is used up within a few
		// RTTs, and on a link with a short RTT it stays near its initial
		// size (512 KiB by default, which held a 1 Gbit/s link with a few
		// ms of queueing at ~0.7 Gbit/s).
		InitialStreamReceiveWindow:     4 << 20,
		InitialConnectionReceiveWindow: 16 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		MaxConnectionReceiveWindow:     128 << 20,
	}
	srvConf := base
	srvConf.MaxIncomingStreams = int64(cfg.MaxStreams)
	dialConf := base
	dialConf.MaxIncomingStreams = -1 // peers open their streams on their own connections
	t.dialConf = &dialConf
	t.ql, err = t.qt.Listen(cfg.Creds.ServerConfig(), &srvConf)
	if err != nil {
		t.qt.Close()
		udp.Close()
		return nil, fmt.Errorf("quic: listen on %s: %w", t.addr, err)
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.wg.Go(t.acceptConns)
	return t, nil
}

// resetKey derives the stateless reset key from the node's private key, so
// that it survives a restart: a restarted node then resets connections its
// peers still hold to its previous life, and they redial at once instead of
// waiting for the idle timeout.
func resetKey(cert tls.Certificate) *quicgo.StatelessResetKey {
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil
	}
	k := quicgo.StatelessResetKey(sha256.Sum256(append([]byte("braid/quic stateless reset key\x00"), der...)))
	return &k
}

// Self is this node's PeerID, the CommonName of its certificate.
func (t *Transport) Self() transport.PeerID { return t.self }

// Addr is Config.AdvertiseAddr, or else the address the socket is bound to
// (with the port chosen when ListenAddr asked for port 0).
func (t *Transport) Addr() string { return t.addr }

// Dial opens a stream for p to peer at addr on lane opt.Lane (mod
// Config.Lanes), dialling that lane's connection first if it has none or
// the one it has is dead. See transport.Transport.
//
// Errors name the peer and the address and wrap: ErrWrongPeer when the
// certificate at addr is not peer's; ErrNotListening; ctx's error;
// ErrClosed after Close; ErrUnreachable for everything else, including a
// handshake the peer refused (bad or expired certificate, another CA,
// another ALPN), with quic-go's error (which carries the TLS alert) wrapped
// too. A connection found dead is redialled once; a peer that vanished
// without a trace holds a Dial until ctx ends or Config.IdleTimeout
// notices.
func (t *Transport) Dial(ctx context.Context, peer transport.PeerID, addr string, p transport.Protocol, opt transport.DialOptions) (transport.Stream, error) {
	if !transport.ValidProtocol(p) {
		return nil, fmt.Errorf("%w: %q", transport.ErrBadProtocol, p)
	}
	if peer == "" {
		return nil, fmt.Errorf("%w: dial %s with an empty PeerID", transport.ErrWrongPeer, addr)
	}
	lane := opt.Lane % t.cfg.Lanes
	if lane < 0 {
		lane += t.cfg.Lanes
	}
	key := laneKey{addr, lane}
	for attempt := 0; ; attempt++ {
		d, err := t.conn(ctx, key, peer)
		if err != nil {
			return nil, err
		}
		s, err := t.openStream(ctx, d, addr, p)
		if err == nil {
			return s, nil
		}
		if ctx.Err() == nil && attempt == 0 && connDead(d.conn, err) {
			// The cached connection had died (peer restarted, idle
			// timeout): forget it and dial once more.
			t.forget(key, d)
			continue
		}
		return nil, err
	}
}

// connDead reports whether err, from a stream of conn, means the whole
// connection is gone (the stream error can arrive before the connection's
// context ends).
func connDead(conn *quicgo.Conn, err error) bool {
	if conn.Context().Err() != nil {
		return true
	}
	var (
		app   *quicgo.ApplicationError
		tr    *quicgo.TransportError
		idle  *quicgo.IdleTimeoutError
		reset *quicgo.StatelessResetError
	)
	return errors.As(err, &app) || errors.As(err, &tr) || errors.As(err, &idle) || errors.As(err, &reset)
}

// conn returns the connection of lane key, dialling it if needed. A dead
// connection is dropped and redialled; concurrent callers share one dial.
func (t *Transport) conn(ctx context.Context, key laneKey, peer transport.PeerID) (*dialing, error) {
	for {
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			return nil, transport.ErrClosed
		}
		d := t.dialed[key]
		if d == nil {
			d = &dialing{ready: make(chan struct{})}
			t.dialed[key] = d
			t.mu.Unlock()
			d.conn, d.peer, d.err = t.dial(ctx, key.addr, peer)
			t.mu.Lock()
			lateConn := d.err == nil && t.closed // Close ran meanwhile and skipped this entry
			switch {
			case d.err != nil:
				delete(t.dialed, key)
			case lateConn:
				d.err = transport.ErrClosed
			}
			t.mu.Unlock()
			if lateConn {
				d.conn.CloseWithError(connShutdown, "node closing")
			}
			close(d.ready)
			if d.err != nil {
				return nil, d.err
			}
			return d, nil
		}
		t.mu.Unlock()
		select {
		case <-d.ready:
		case <-ctx.Done():
			return nil, fmt.Errorf("quic: dial %s at %s: %w", peer, key.addr, ctx.Err())
		}
		switch {
		case d.err != nil && ctx.Err() == nil && (errors.Is(d.err, context.Canceled) || errors.Is(d.err, context.DeadlineExceeded)):
			continue // another caller's context gave up on the dial; ours has not
		case d.err != nil:
			return nil, d.err
		case d.conn.Context().Err() != nil:
			t.forget(key, d)
			continue
		case d.peer != peer:
			return nil, fmt.Errorf("%w: dialled %q at %s, connected to %q", transport.ErrWrongPeer, peer, key.addr, d.peer)
		}
		return d, nil
	}
}

// forget drops a dead connection from the cache (unless it was replaced).
func (t *Transport) forget(key laneKey, d *dialing) {
	t.mu.Lock()
	if t.dialed[key] == d {
		delete(t.dialed, key)
	}
	t.mu.Unlock()
	d.conn.CloseWithError(connShutdown, "connection dropped")
}

// dial makes a new connection to addr, which must authenticate as peer.
func (t *Transport) dial(ctx context.Context, addr string, peer transport.PeerID) (*quicgo.Conn, transport.PeerID, error) {
	fail := func(err error) error {
		switch {
		case errors.Is(err, transport.ErrWrongPeer):
			return fmt.Errorf("quic: dial %s at %s: %w", peer, addr, err)
		case ctx.Err() != nil:
			return fmt.Errorf("quic: dial %s at %s: %w", peer, addr, ctx.Err())
		case t.ctx.Err() != nil:
			return fmt.Errorf("quic: dial %s at %s: %w", peer, addr, transport.ErrClosed)
		}
		return fmt.Errorf("quic: dial %s at %s: %w: %w", peer, addr, transport.ErrUnreachable, err)
	}
	raddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, "", fail(err)
	}
	// The dial ends with ctx, with Close, or after the handshake timeout.
	dctx, cancel := context.WithTimeout(ctx, t.cfg.HandshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(t.ctx, cancel)
	defer stop()
	conn, err := t.qt.Dial(dctx, raddr, t.cfg.Creds.ClientConfig(peer), t.dialConf)
	if err != nil {
		return nil, "", fail(err)
	}
	// ClientConfig already checked the name during the handshake; check the
	// connection's recorded identity too, so nothing rests on one place.
	got, err := t.cfg.Creds.PeerIdentity(conn.ConnectionState().TLS)
	if err != nil {
		conn.CloseWithError(connRefused, "identity not acceptable")
		return nil, "", fail(err)
	}
	if got != peer {
		conn.CloseWithError(connWrongPeer, "wrong peer")
		return nil, "", fail(fmt.Errorf("%w: connected to %q", transport.ErrWrongPeer, got))
	}
	return conn, got, nil
}

// openStream opens a stream on d's connection and does the header exchange.
func (t *Transport) openStream(ctx context.Context, d *dialing, addr string, p transport.Protocol) (*stream, error) {
	fail := func(err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		} else if !errors.Is(err, transport.ErrNotListening) && !errors.Is(err, transport.ErrBadFrame) {
			err = fmt.Errorf("%w: %w", transport.ErrUnreachable, err)
		}
		return fmt.Errorf("quic: dial %s at %s for %s: %w", d.peer, addr, p, err)
	}
	qs, err := d.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fail(err)
	}
	// ctx bounds the exchange: when it ends, the deadline unblocks it.
	stop := context.AfterFunc(ctx, func() { qs.SetDeadline(time.Unix(1, 0)) })
	var status [1]byte
	err = transport.WriteStreamHeader(qs, p)
	if err == nil {
		_, err = io.ReadFull(qs, status[:])
	}
	if !stop() || err != nil {
		qs.CancelRead(streamClosed)
		qs.CancelWrite(streamClosed)
		if err == nil {
			err = ctx.Err()
		}
		return nil, fail(err)
	}
	switch status[0] {
	case transport.StatusOK:
		return newStream(qs, d.conn, d.peer, p), nil
	case transport.StatusNotListening:
		qs.CancelRead(streamClosed)
		qs.Close()
		return nil, fail(transport.ErrNotListening)
	default:
		qs.CancelRead(streamClosed)
		qs.CancelWrite(streamClosed)
		return nil, fail(fmt.Errorf("%w: status byte %d", transport.ErrBadFrame, status[0]))
	}
}

// acceptConns accepts connections until Close.
func (t *Transport) acceptConns() {
	for {
		conn, err := t.ql.Accept(t.ctx)
		if err != nil {
			return
		}
		// The TLS stack verified the chain; a certificate that passes but
		// names no node is refused here.
		peer, err := t.cfg.Creds.PeerIdentity(conn.ConnectionState().TLS)
		if err != nil {
			t.log.Warn("quic: refused connection", "remote", conn.RemoteAddr().String(), "err", err)
			conn.CloseWithError(connRefused, "identity not acceptable")
			continue
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			conn.CloseWithError(connShutdown, "node closing")
			return
		}
		t.accepted[conn] = peer
		t.mu.Unlock()
		t.wg.Go(func() { t.serveConn(conn, peer) })
	}
}

// serveConn accepts the streams a peer opens on one connection until the
// connection or the Transport closes.
func (t *Transport) serveConn(conn *quicgo.Conn, peer transport.PeerID) {
	defer func() {
		t.mu.Lock()
		delete(t.accepted, conn)
		t.mu.Unlock()
	}()
	for {
		qs, err := conn.AcceptStream(t.ctx)
		if err != nil {
			return
		}
		t.wg.Go(func() { t.serveStream(conn, peer, qs) })
	}
}

// serveStream reads one stream's header and hands the stream to the
// protocol's listener, or answers StatusNotListening. A bad header resets
// this stream only.
func (t *Transport) serveStream(conn *quicgo.Conn, peer transport.PeerID, qs *quicgo.Stream) {
	reset := func(code quicgo.StreamErrorCode) {
		qs.CancelRead(code)
		qs.CancelWrite(code)
	}
	qs.SetReadDeadline(time.Now().Add(t.cfg.HeaderTimeout))
	p, err := transport.ReadStreamHeader(qs)
	if err != nil {
		if conn.Context().Err() == nil {
			t.log.Warn("quic: bad stream header, stream reset", "peer", string(peer),
				"remote", conn.RemoteAddr().String(), "stream", int64(qs.StreamID()), "err", err)
		}
		reset(streamBadHeader)
		return
	}
	qs.SetReadDeadline(time.Time{})
	l := t.listeners.Get(p)
	if l == nil {
		qs.Write([]byte{transport.StatusNotListening})
		qs.CancelRead(streamClosed)
		qs.Close()
		return
	}
	if _, err := qs.Write([]byte{transport.StatusOK}); err != nil {
		reset(streamClosed)
		return
	}
	s := newStream(qs, conn, peer, p)
	select {
	case l.In() <- s:
	case <-l.Done():
		reset(streamDropped)
	case <-conn.Context().Done():
	case <-t.ctx.Done():
	}
}

// Revalidate checks the peer of every connection up, dialled or accepted,
// against the credentials as they are now (Credentials.PeerIdentity) and
// closes each one whose certificate no longer passes: revoked, of a CA no
// longer trusted, expired, or naming another node. Their streams fail at
// once on both ends; a dial that reaches the peer again goes through a new
// handshake. Call it after the credentials change (a reload, a new
// revocation set). It returns the peers cut off, with repeats for several
// connections, in no particular order.
func (t *Transport) Revalidate() []transport.PeerID {
	type held struct {
		conn *quicgo.Conn
		peer transport.PeerID
		key  *laneKey // dialled; nil for accepted
		d    *dialing
	}
	t.mu.Lock()
	var conns []held
	for k, d := range t.dialed {
		select {
		case <-d.ready:
			if d.err == nil {
				conns = append(conns, held{d.conn, d.peer, &k, d})
			}
		default: // a handshake under way uses the credentials of the moment
		}
	}
	for c, p := range t.accepted {
		conns = append(conns, held{conn: c, peer: p})
	}
	t.mu.Unlock()
	var cut []transport.PeerID
	for _, h := range conns {
		got, err := t.cfg.Creds.PeerIdentity(h.conn.ConnectionState().TLS)
		if err == nil && got == h.peer {
			continue
		}
		t.log.Warn("quic: closing a connection whose peer's certificate is no longer accepted", "peer", string(h.peer),
			"remote", h.conn.RemoteAddr().String(), "err", err)
		cut = append(cut, h.peer)
		if h.key != nil {
			t.mu.Lock()
			if t.dialed[*h.key] == h.d {
				delete(t.dialed, *h.key)
			}
			t.mu.Unlock()
		}
		h.conn.CloseWithError(connRefused, "certificate no longer accepted")
	}
	return cut
}

// Forget closes every connection to or from peer, dialled or accepted, so
// that the next Dial makes a new one. Call it when peer is known to have
// restarted (gossip saw it join again): a connection to its previous life
// otherwise holds Dials until a stateless reset or the idle timeout ends
// it, which a peer that only receives may never send. It returns how many
// connections it closed.
func (t *Transport) Forget(peer transport.PeerID) int {
	t.mu.Lock()
	var conns []*quicgo.Conn
	for k, d := range t.dialed {
		select {
		case <-d.ready:
			if d.err == nil && d.peer == peer {
				conns = append(conns, d.conn)
				delete(t.dialed, k)
			}
		default: // a dial under way reaches the peer as it is now
		}
	}
	for c, p := range t.accepted {
		if p == peer {
			conns = append(conns, c)
		}
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.CloseWithError(connShutdown, "peer restarted")
	}
	return len(conns)
}

// Listen registers the listener for p.
func (t *Transport) Listen(p transport.Protocol) (transport.Listener, error) {
	l, err := t.listeners.Listen(p, t.self)
	if err != nil {
		return nil, err // not a nil *Queue in a non-nil Listener
	}
	return l, nil
}

// Close closes every listener, connection and stream, sends peers a
// CONNECTION_CLOSE, releases the socket and waits for every goroutine the
// Transport started. Later calls return nil.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	var conns []*quicgo.Conn
	for _, d := range t.dialed {
		select {
		case <-d.ready:
			if d.err == nil {
				conns = append(conns, d.conn)
			}
		default: // its dialer closes it when it sees t.closed
		}
	}
	for c := range t.accepted {
		conns = append(conns, c)
	}
	t.mu.Unlock()

	t.cancel()
	t.listeners.Close()
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() { c.CloseWithError(connShutdown, "node closing") })
	}
	wg.Wait()
	t.ql.Close()
	err := t.qt.Close()
	if uerr := t.udp.Close(); err == nil {
		err = uerr
	}
	t.wg.Wait()
	if err != nil {
		return fmt.Errorf("quic: close: %w", err)
	}
	return nil
}
