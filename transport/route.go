package transport

import (
	"context"
	"errors"
	"fmt"
)

// Routed puts two transports of one node behind one Transport: streams of
// the bulk protocols go over bulk, every other one over main. Both must
// authenticate the node as the same PeerID, and bulk must be reachable at
// the address main advertises (transport/tlstcp listens on the TCP port of
// the same number as transport/quic's UDP port), so that peers need one
// address per node.
type Routed struct {
	main, bulk Transport
	bulkProtos map[Protocol]bool
}

var _ Transport = (*Routed)(nil)

// Route returns a Routed transport: streams of bulkProtos over bulk, the
// rest over main. Closing it closes both.
func Route(main, bulk Transport, bulkProtos ...Protocol) (*Routed, error) {
	if main.Self() != bulk.Self() {
		return nil, fmt.Errorf("transport: route: the main transport is %q, the bulk one %q", main.Self(), bulk.Self())
	}
	r := &Routed{main: main, bulk: bulk, bulkProtos: map[Protocol]bool{}}
	for _, p := range bulkProtos {
		if !ValidProtocol(p) {
			return nil, fmt.Errorf("%w: %q", ErrBadProtocol, p)
		}
		r.bulkProtos[p] = true
	}
	return r, nil
}

// For returns the transport that carries protocol p.
func (r *Routed) For(p Protocol) Transport {
	if r.bulkProtos[p] {
		return r.bulk
	}
	return r.main
}

// Self is the node's PeerID.
func (r *Routed) Self() PeerID { return r.main.Self() }

// Addr is the main transport's address, which the bulk transport shares.
func (r *Routed) Addr() string { return r.main.Addr() }

// Dial opens the stream on the transport that carries p.
func (r *Routed) Dial(ctx context.Context, peer PeerID, addr string, p Protocol, opt DialOptions) (Stream, error) {
	return r.For(p).Dial(ctx, peer, addr, p, opt)
}

// Listen registers the listener on the transport that carries p.
func (r *Routed) Listen(p Protocol) (Listener, error) { return r.For(p).Listen(p) }

// Close closes both transports.
func (r *Routed) Close() error { return errors.Join(r.bulk.Close(), r.main.Close()) }

// Revalidate re-checks the peers of both transports' connections, where
// they can (transport/quic and transport/tlstcp can), and returns the peers
// cut off.
func (r *Routed) Revalidate() []PeerID {
	var cut []PeerID
	for _, t := range []Transport{r.main, r.bulk} {
		if rv, ok := t.(interface{ Revalidate() []PeerID }); ok {
			cut = append(cut, rv.Revalidate()...)
		}
	}
	return cut
}

// Forget drops both transports' connections to or from peer, where they
// keep any (transport/quic does; transport/tlstcp makes one per stream).
func (r *Routed) Forget(peer PeerID) int {
	n := 0
	for _, t := range []Transport{r.main, r.bulk} {
		if f, ok := t.(interface{ Forget(PeerID) int }); ok {
			n += f.Forget(peer)
		}
	}
	return n
}
