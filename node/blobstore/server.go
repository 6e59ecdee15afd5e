package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braidml/braid/transport"
)

// ServerConfig configures a Server. Start from DefaultServerConfig.
type ServerConfig struct {
	// RequestTimeout is how long a new stream may take to deliver its
	// request before the server closes it.
	RequestTimeout time.Duration
	// WriteTimeout bounds each write of the response: a client that
	// stops reading for this long loses its stream.
	WriteTimeout time.Duration
	// MaxStreams is how many streams are served at once; further streams
	// wait in the listener until one ends.
	MaxStreams int
	// ChunkSize is how many bytes of an object one write sends; between
	// chunks the server checks that the object has not become private.
	ChunkSize int
	// Logger receives refusals and failed transfers. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// DefaultServerConfig: 10 s request and write timeouts, 64 streams at once,
// 256 KiB chunks.
func DefaultServerConfig() ServerConfig {
	return ServerConfig{
		RequestTimeout: 10 * time.Second,
		WriteTimeout:   10 * time.Second,
		MaxStreams:     64,
		ChunkSize:      256 << 10,
	}
}

// Bounds that Validate enforces.
const (
	maxMaxStreams = 1 << 16
	minChunkSize  = 1 << 10
	maxChunkSize  = 16 << 20
)

// Validate checks every field; errors name the field and the bound.
func (c ServerConfig) Validate() error {
	if c.RequestTimeout <= 0 {
		return fmt.Errorf("blobstore: ServerConfig.RequestTimeout %v, want > 0", c.RequestTimeout)
	}
	if c.WriteTimeout <= 0 {
		return fmt.Errorf("blobstore: ServerConfig.WriteTimeout %v, want > 0", c.WriteTimeout)
	}
	if c.MaxStreams < 1 || c.MaxStreams > maxMaxStreams {
		return fmt.Errorf("blobstore: ServerConfig.MaxStreams %d, want 1..%d", c.MaxStreams, maxMaxStreams)
	}
	if c.ChunkSize < minChunkSize || c.ChunkSize > maxChunkSize {
		return fmt.Errorf("blobstore: ServerConfig.ChunkSize %d, want %d..%d", c.ChunkSize, minChunkSize, maxChunkSize)
	}
	return nil
}

// ServerStats counts what a Server did since it was made.
type ServerStats struct {
	Requests int64 // streams that delivered a request frame (decodable or not)
	// Answers by status.
	OK, NotFound, Refused, BadRequest, BadRange, Unavailable int64
	// Aborted counts OK transfers that ended early: the client went away
	// or stalled past WriteTimeout, the object became private, or the
	// server stopped.
	Aborted int64
	// BytesServed is the object bytes written to streams, every object
	// together (headers not counted).
	BytesServed int64
	// Active is the streams being served now.
	Active int64
}

// Server answers the requests of the package comment's wire protocol with
// objects from one Store. Make one with NewServer and run Serve for each
// listener (a Server may serve several, e.g. ProtoShard and ProtoBlob);
// its methods are safe for concurrent use.
type Server struct {
	cfg   ServerConfig
	store *Store
	log   *slog.Logger

	requests, ok, notFound, refused, badRequest, badRange, unavailable atomic.Int64
	aborted, bytes, active                                             atomic.Int64

	mu     sync.Mutex
	served map[string]int64 // bytes served per object
}

// NewServer returns a server of store's objects.
func NewServer(store *Store, cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, errors.New("blobstore: NewServer: nil store")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, store: store, log: log, served: map[string]int64{}}, nil
}

// Serve accepts streams from ln and answers each on its own goroutine, at
// most MaxStreams at once (per Serve call). It stops in one of two ways:
// when ctx ends it closes the streams being served; when ln (or its
// transport) is closed it lets them finish, each bounded by WriteTimeout
// per chunk. Either way it returns nil once every stream it accepted is
// done; another Accept error is returned, also after they are done. The
// listener is the caller's to close.
func (s *Server) Serve(ctx context.Context, ln transport.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, s.cfg.MaxStreams)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		st, err := ln.Accept(ctx)
		if err != nil {
			<-slots
			if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
				return nil
			}
			return fmt.Errorf("blobstore: serve %s: accept: %w", ln.Protocol(), err)
		}
		s.active.Add(1)
		wg.Go(func() {
			stop := context.AfterFunc(ctx, func() { st.Close() })
			defer func() {
				stop()
				st.Close()
				s.active.Add(-1)
				<-slots
			}()
			s.serve(ctx, st)
		})
	}
}

// Stats returns the counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Requests:    s.requests.Load(),
		OK:          s.ok.Load(),
		NotFound:    s.notFound.Load(),
		Refused:     s.refused.Load(),
		BadRequest:  s.badRequest.Load(),
		BadRange:    s.badRange.Load(),
		Unavailable: s.unavailable.Load(),
		Aborted:     s.aborted.Load(),
		BytesServed: s.bytes.Load(),
		Active:      s.active.Load(),
	}
}

// BytesServed returns how many bytes of object h were written to streams.
func (s *Server) BytesServed(h string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[h]
}

// countBytes adds n bytes of object h to the counters.
func (s *Server) countBytes(h string, n int) {
	if n <= 0 {
		return
	}
	s.bytes.Add(int64(n))
	s.mu.Lock()
	s.served[h] += int64(n)
	s.mu.Unlock()
}

// serve answers the one request of stream st. The caller closes st.
func (s *Server) serve(ctx context.Context, st transport.Stream) {
	peer := st.Peer()
	st.SetReadDeadline(time.Now().Add(s.cfg.RequestTimeout))
	frame, err := readFrame(st)
	if err != nil {
		if errors.Is(err, transport.ErrFrameTooLarge) || errors.Is(err, transport.ErrBadFrame) {
			s.requests.Add(1)
			s.answerBad(st, err)
			return
		}
		// The client went away, or sent nothing in time: nobody to answer.
		if ctx.Err() == nil {
			s.log.Debug("blobstore: no request", "proto", string(st.Protocol()), "peer", string(peer), "err", err)
		}
		return
	}
	s.requests.Add(1)
	req, err := decodeRequest(frame)
	if err != nil {
		s.answerBad(st, err)
		return
	}
	h := req.Hash
	if s.store.Private(h) {
		// The point of a private object: not one byte of it leaves.
		s.refused.Add(1)
		s.log.Warn("blobstore: refused a private object", "proto", string(st.Protocol()), "peer", string(peer), "hash", short(h))
		s.answer(st, header{Status: StatusRefused, Reason: "object " + short(h) + " is private to this node"})
		return
	}
	f, size, err := s.store.Open(h)
	if errors.Is(err, ErrNotFound) {
		s.notFound.Add(1)
		s.answer(st, header{Status: StatusNotFound, Reason: "no object " + short(h)})
		return
	}
	if err != nil {
		s.unavailable.Add(1)
		s.log.Warn("blobstore: cannot serve", "peer", string(peer), "hash", short(h), "err", err)
		s.answer(st, header{Status: StatusUnavailable, Reason: err.Error()})
		return
	}
	defer f.Close()

	usize := uint64(size)
	if req.Offset > usize || req.Length > usize-req.Offset {
		s.badRange.Add(1)
		s.answer(st, header{Status: StatusBadRange, Size: usize,
			Reason: fmt.Sprintf("offset %d length %d outside object %s of %d bytes", req.Offset, req.Length, short(h), size)})
		return
	}
	n := req.Length
	if n == 0 {
		n = usize - req.Offset
	}
	s.ok.Add(1)
	if err := s.answer(st, header{Status: StatusOK, Size: usize}); err != nil {
		s.abort(ctx, st, h, 0, n, err)
		return
	}
	buf := make([]byte, min(uint64(s.cfg.ChunkSize), n))
	body := io.NewSectionReader(f, int64(req.Offset), int64(n))
	for sent := uint64(0); sent < n; {
		// Checked before every chunk, so that MarkPrivate stops a transfer
		// under way.
		if s.store.Private(h) {
			s.abort(ctx, st, h, sent, n, errors.New("the object was marked private"))
			return
		}
		k, err := io.ReadFull(body, buf[:min(uint64(len(buf)), n-sent)])
		if err != nil {
			s.abort(ctx, st, h, sent, n, fmt.Errorf("read %s: %w", f.Name(), err))
			return
		}
		st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		w, err := st.Write(buf[:k])
		s.countBytes(h, w)
		sent += uint64(w)
		if err != nil {
			s.abort(ctx, st, h, sent, n, err)
			return
		}
	}
}

// answer writes a response header.
func (s *Server) answer(st transport.Stream, h header) error {
	st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	return transport.WriteFrame(st, h.encode())
}

// answerBad answers a request that did not decode.
func (s *Server) answerBad(st transport.Stream, err error) {
	s.badRequest.Add(1)
	s.log.Warn("blobstore: bad request", "proto", string(st.Protocol()), "peer", string(st.Peer()), "err", err)
	s.answer(st, header{Status: StatusBadRequest, Reason: err.Error()})
}

// abort records a transfer that ended after sent of n bytes.
func (s *Server) abort(ctx context.Context, st transport.Stream, h string, sent, n uint64, err error) {
	s.aborted.Add(1)
	if ctx.Err() != nil {
		err = fmt.Errorf("server stopping (%v): %w", ctx.Err(), err)
	}
	s.log.Warn("blobstore: transfer cut short", "proto", string(st.Protocol()), "peer", string(st.Peer()),
		"hash", short(h), "sent", sent, "of", n, "err", err)
}
