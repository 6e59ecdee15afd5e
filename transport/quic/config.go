package quic

import (
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"time"

	"github.com/braidml/braid/transport/pki"
)

// Config configures a Transport. Start from DefaultConfig.
type Config struct {
	// ListenAddr is the UDP "host:port" the node's one socket binds; port 0
	// picks a free port (see Transport.Addr).
	ListenAddr string
	// AdvertiseAddr, when set, is what Transport.Addr reports: the address
	// peers dial, for a node that binds a wildcard or sits behind NAT.
	AdvertiseAddr string
	// Creds are this node's certificate, key and cluster CA: fixed
	// (*pki.NodeCreds from pki.LoadNode) or reloadable, with revocation
	// (*pki.Reloader). The node's PeerID is the certificate's CommonName.
	Creds Credentials
	// Lanes is how many connections a node keeps to each peer address;
	// DialOptions.Lane picks one (mod Lanes). 1..64.
	Lanes int
	// KeepAlive is how often an idle connection sends a keep-alive; 0
	// sends none. It must be shorter than IdleTimeout.
	KeepAlive time.Duration
	// IdleTimeout closes a connection that received nothing for this long
	// (the smaller of both ends' values applies); it is how a dead peer is
	// noticed when no stream is waiting on it.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds the QUIC+TLS handshake of a new connection.
	HandshakeTimeout time.Duration
	// HeaderTimeout is how long an accepted stream may take to send its
	// stream header before it is reset.
	HeaderTimeout time.Duration
	// MaxStreams is how many streams a peer may have open on one
	// connection at once; further Dials wait for one to finish.
	MaxStreams int
	// Logger receives connection and stream problems that have no caller
	// to return them to (a malformed stream header, a refused peer). Nil
	// means slog.Default().
	Logger *slog.Logger
}

// Credentials are what a Transport authenticates with and checks peers
// against (pki.Credentials: *pki.NodeCreds or *pki.Reloader).
type Credentials = pki.Credentials

// DefaultConfig listens on UDP port 7400 of every interface with 4 lanes,
// a 5 s keep-alive, a 30 s idle timeout and a 10 s handshake timeout.
// Creds must be set.
func DefaultConfig() Config {
	return Config{
		ListenAddr:       ":7400",
		Lanes:            4,
		KeepAlive:        5 * time.Second,
		IdleTimeout:      30 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		HeaderTimeout:    10 * time.Second,
		MaxStreams:       1024,
	}
}

// Bounds that Validate enforces.
const (
	MaxLanes      = 64
	maxMaxStreams = 1 << 20
)

// Validate checks every field and the relations between them; errors name
// the field and the bound.
func (c Config) Validate() error {
	if err := checkHostPort(c.ListenAddr, true); err != nil {
		return fmt.Errorf("quic: Config.ListenAddr %q: %v", c.ListenAddr, err)
	}
	if c.AdvertiseAddr != "" {
		if err := checkHostPort(c.AdvertiseAddr, false); err != nil {
			return fmt.Errorf("quic: Config.AdvertiseAddr %q: %v", c.AdvertiseAddr, err)
		}
	}
	if c.Creds == nil || reflect.ValueOf(c.Creds).IsNil() {
		return fmt.Errorf("quic: Config.Creds is nil (load them with pki.LoadNode)")
	}
	if c.Lanes < 1 || c.Lanes > MaxLanes {
		return fmt.Errorf("quic: Config.Lanes %d, want 1..%d", c.Lanes, MaxLanes)
	}
	if c.IdleTimeout <= 0 {
		return fmt.Errorf("quic: Config.IdleTimeout %v, want > 0", c.IdleTimeout)
	}
	if c.KeepAlive < 0 || c.KeepAlive >= c.IdleTimeout {
		return fmt.Errorf("quic: Config.KeepAlive %v, want 0 (off) or shorter than Config.IdleTimeout %v", c.KeepAlive, c.IdleTimeout)
	}
	if c.HandshakeTimeout <= 0 {
		return fmt.Errorf("quic: Config.HandshakeTimeout %v, want > 0", c.HandshakeTimeout)
	}
	if c.HeaderTimeout <= 0 {
		return fmt.Errorf("quic: Config.HeaderTimeout %v, want > 0", c.HeaderTimeout)
	}
	if c.MaxStreams < 1 || c.MaxStreams > maxMaxStreams {
		return fmt.Errorf("quic: Config.MaxStreams %d, want 1..%d", c.MaxStreams, maxMaxStreams)
	}
	return nil
}

func checkHostPort(addr string, zeroPortOK bool) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("port %q is not a number in 0..65535", port)
	}
	if n == 0 && !zeroPortOK {
		return fmt.Errorf("port 0 cannot be dialled")
	}
	return nil
}
