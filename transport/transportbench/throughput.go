// Package transportbench measures what braid's transports move point to
// point on loopback (`braid bench transport`): QUIC (transport/quic) and
// TLS over TCP (transport/tlstcp), with the same throw-away CA and node
// certificates, so the figures compare the transports and nothing else.
package transportbench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/pki"
	"github.com/braidml/braid/transport/quic"
	"github.com/braidml/braid/transport/tlstcp"
)

// The transports Throughput measures.
const (
	QUIC   = "quic"    // transport/quic: every stream of a lane on one QUIC connection
	TLSTCP = "tls-tcp" // transport/tlstcp: a TCP connection per stream
)

// Kinds lists the transports Throughput measures.
var Kinds = []string{QUIC, TLSTCP}

// Throughput measures point-to-point throughput over loopback on the
// transport kind: it makes a throw-away CA and two nodes in a temporary
// directory, opens one stream on each of lanes lanes (handshakes are not
// timed), sends bytes in total split evenly across them, and returns the
// rate in Gbit/s (10^9 bits per second) from the first byte written until
// the receiver has acknowledged the last. Both endpoints run in this
// process, so they share its CPUs: on loopback the figure is bounded by the
// transport's CPU cost (crypto, packet handling), not by a link.
func Throughput(ctx context.Context, kind string, lanes int, bytes int64) (gbps float64, err error) {
	if lanes < 1 || lanes > quic.MaxLanes {
		return 0, fmt.Errorf("transportbench: lanes %d, want 1..%d", lanes, quic.MaxLanes)
	}
	if bytes < int64(lanes) {
		return 0, fmt.Errorf("transportbench: %d bytes for %d lanes", bytes, lanes)
	}
	newNode, err := starter(kind)
	if err != nil {
		return 0, err
	}
	dir, err := os.MkdirTemp("", "braid-bench-pki-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := pki.InitCA(dir); err != nil {
		return 0, err
	}
	node := func(name string) (transport.Transport, error) {
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			return nil, err
		}
		creds, err := pki.LoadNode(dir, name)
		if err != nil {
			return nil, err
		}
		return newNode(creds, lanes)
	}
	a, err := node("bench-a")
	if err != nil {
		return 0, err
	}
	defer a.Close()
	b, err := node("bench-b")
	if err != nil {
		return 0, err
	}
	defer b.Close()
	const proto transport.Protocol = "bench"
	l, err := b.Listen(proto)
	if err != nil {
		return 0, err
	}

	// Receiver: drain each stream, then acknowledge with its byte count.
	var rwg sync.WaitGroup
	rwg.Go(func() {
		var wg sync.WaitGroup
		for range lanes {
			s, err := l.Accept(ctx)
			if err != nil {
				break
			}
			wg.Go(func() {
				defer s.Close()
				n, err := io.Copy(io.Discard, s)
				if err != nil {
					n = -1
				}
				transport.WriteFrame(s, fmt.Appendf(nil, "%d", n))
			})
		}
		wg.Wait()
	})
	defer rwg.Wait()
	defer l.Close()

	streams := make([]transport.Stream, lanes)
	for i := range streams {
		s, err := a.Dial(ctx, b.Self(), b.Addr(), proto, transport.DialOptions{Lane: i})
		if err != nil {
			for _, s := range streams[:i] {
				s.Close()
			}
			return 0, err
		}
		streams[i] = s
	}
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	start := time.Now()
	errs := make(chan error, lanes)
	for i, s := range streams {
		share := bytes / int64(lanes)
		if i == 0 {
			share += bytes % int64(lanes)
		}
		go func() {
			defer s.Close()
			stop := context.AfterFunc(ctx, func() { s.SetDeadline(time.Unix(1, 0)) })
			defer stop()
			for left := share; left > 0; {
				n := min(left, int64(len(buf)))
				if _, err := s.Write(buf[:n]); err != nil {
					errs <- err
					return
				}
				left -= n
			}
			if err := s.CloseWrite(); err != nil {
				errs <- err
				return
			}
			ack, err := transport.ReadFrame(s, nil, 32)
			if err == nil && string(ack) != fmt.Sprint(share) {
				err = fmt.Errorf("receiver counted %s bytes of %d", ack, share)
			}
			errs <- err
		}()
	}
	var firstErr error
	for range lanes {
		if err := <-errs; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	elapsed := time.Since(start)
	if firstErr != nil {
		if ctx.Err() != nil {
			firstErr = errors.Join(ctx.Err(), firstErr)
		}
		return 0, fmt.Errorf("transportbench: %s: %w", kind, firstErr)
	}
	return float64(bytes) * 8 / elapsed.Seconds() / 1e9, nil
}

// starter returns how to start an endpoint of kind on a free loopback port.
func starter(kind string) (func(creds pki.Credentials, lanes int) (transport.Transport, error), error) {
	switch kind {
	case QUIC:
		return func(creds pki.Credentials, lanes int) (transport.Transport, error) {
			cfg := quic.DefaultConfig()
			cfg.ListenAddr, cfg.Creds, cfg.Lanes = "127.0.0.1:0", creds, lanes
			return quic.New(cfg)
		}, nil
	case TLSTCP:
		return func(creds pki.Credentials, _ int) (transport.Transport, error) {
			cfg := tlstcp.DefaultConfig()
			cfg.ListenAddr, cfg.Creds = "127.0.0.1:0", creds
			return tlstcp.New(cfg)
		}, nil
	}
	return nil, fmt.Errorf("transportbench: transport %q: want %s or %s", kind, QUIC, TLSTCP)
}
