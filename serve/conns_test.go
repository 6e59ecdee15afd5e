package serve_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braidml/braid/serve"
)

// pipeListener hands out the server ends of in-memory pipes, which have
// no buffer: a client that does not read blocks every write of the server
// at once, as a full TCP window does after a while.
type pipeListener struct {
	conns    chan net.Conn
	accepted chan struct{}
	done     chan struct{}
	once     sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn, 8), accepted: make(chan struct{}, 8), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		l.accepted <- struct{}{}
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error { l.once.Do(func() { close(l.done) }); return nil }

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// dial returns the client end of a new connection.
func (l *pipeListener) dial() net.Conn {
	c, s := net.Pipe()
	l.conns <- s
	return c
}

func startPipe(t *testing.T, cfg serve.Config, ecfg serve.EngineConfig) *pipeListener {
	t.Helper()
	m, tok := longModel(t)
	e, err := serve.NewEngine(m, tok, ecfg)
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	cfg.Token, cfg.ModelName, cfg.Seed = testToken, "long", 1
	s, err := serve.StartOn(cfg, e, ln)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close(context.Background())
		e.Close()
	})
	return ln
}

func completionRequest(stream bool) string {
	body := fmt.Sprintf(`{"model": "long", "prompt": "a", "max_tokens": 1000, "stream": %v}`, stream)
	return "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + testToken +
		"\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(body)) + "\r\n\r\n" + body
}

// TestStreamWriteDeadline: a client that asks for a stream and then reads
// nothing is cut off after WriteTimeout (its connection closed, its
// request ended) instead of pinning the handler for good.
func TestStreamWriteDeadline(t *testing.T) {
	finished := make(chan serve.Finish, 1)
	ecfg := serve.DefaultEngineConfig()
	ecfg.OnFinish = func(f serve.Finish) { finished <- f }
	ln := startPipe(t, serve.Config{WriteTimeout: 50 * time.Millisecond}, ecfg)
	c := ln.dial()
	defer c.Close()
	if _, err := io.WriteString(c, completionRequest(true)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-finished:
	case <-time.After(20 * time.Second):
		t.Fatal("the request never finished")
	}
	// The server gave up on the connection: reading now finds it closed,
	// not the stream's first bytes still waiting to be written.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := c.Read(make([]byte, 1))
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("read %d bytes, %v: want EOF (the server closing the connection it could not write to)", n, err)
	}
}

// TestMaxConns: with MaxConns 1, a second connection is not served while
// the first is open, and is once it closes.
func TestMaxConns(t *testing.T) {
	ln := startPipe(t, serve.Config{MaxConns: 1}, serve.DefaultEngineConfig())
	first := ln.dial()
	<-ln.accepted
	second := ln.dial()
	defer second.Close()
	answered := make(chan string, 1)
	go func() {
		req := "GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + testToken + "\r\n\r\n"
		if _, err := io.WriteString(second, req); err != nil {
			answered <- err.Error()
			return
		}
		res, err := http.ReadResponse(bufio.NewReader(second), nil)
		if err != nil {
			answered <- err.Error()
			return
		}
		res.Body.Close()
		answered <- res.Status
	}()
	select {
	case <-ln.accepted:
		t.Fatal("a second connection was accepted while the first, with MaxConns 1, was open")
	case <-time.After(100 * time.Millisecond): // a bound for a thing that must not happen
	}
	first.Close()
	select {
	case s := <-answered:
		if !strings.HasPrefix(s, "200") {
			t.Fatalf("second connection: %s", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the second connection was not served after the first closed")
	}
}
