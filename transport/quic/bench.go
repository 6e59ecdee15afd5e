package quic

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
)

// BenchThroughput measures point-to-point throughput over loopback: it makes
// a throw-away CA and two nodes in a temporary directory, opens one stream
// on each of lanes connections (handshakes are not timed), sends bytes in
// total split evenly across them, and returns the rate in Gbit/s (10^9 bits
// per second) from the first byte written until the receiver has
// acknowledged the last. Both endpoints run in this process, so they share
// its CPUs: on loopback the figure is bounded by QUIC's CPU cost (crypto,
// packet handling), not by a link.
func BenchThroughput(ctx context.Context, lanes int, bytes int64) (gbps float64, err error) {
	if lanes < 1 || lanes > MaxLanes {
		return 0, fmt.Errorf("quic: bench: lanes %d, want 1..%d", lanes, MaxLanes)
	}
	if bytes < int64(lanes) {
		return 0, fmt.Errorf("quic: bench: %d bytes for %d lanes", bytes, lanes)
	}
	dir, err := os.MkdirTemp("", "braid-bench-pki-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	if err := pki.InitCA(dir); err != nil {
		return 0, err
	}
	node := func(name string) (*Transport, error) {
		if err := pki.Issue(dir, name, []string{"127.0.0.1"}, time.Hour); err != nil {
			return nil, err
		}
		creds, err := pki.LoadNode(dir, name)
		if err != nil {
			return nil, err
		}
		cfg := DefaultConfig()
		cfg.ListenAddr = "127.0.0.1:0"
		cfg.Creds = creds
		cfg.Lanes = lanes
		return New(cfg)
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
		return 0, fmt.Errorf("quic: bench: %w", firstErr)
	}
	return float64(bytes) * 8 / elapsed.Seconds() / 1e9, nil
}
