package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testToken is the token of the APIs these tests start.
const testToken = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// startTestAPI starts an API on loopback with lim and the extra routes.
func startTestAPI(t *testing.T, lim APILimits, routes func(*http.ServeMux)) *API {
	t.Helper()
	a, err := StartAPI(APIConfig{Addr: "127.0.0.1:0", Token: testToken, Limits: lim, Routes: routes},
		func() Status { return Status{Self: "n1"} }, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

// do sends one request to a with the token, a JSON body if body is not
// empty, and the extra headers (which replace those; a "Host" one sets the
// request's Host), and returns the response with its body read.
func do(a *API, method, path, body string, hdr http.Header) (*http.Response, string, error) {
	req, err := http.NewRequest(method, "http://"+a.Addr()+path, strings.NewReader(body))
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// dial opens a raw connection to the API.
func dial(t *testing.T, a *API) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dribble writes s to c one byte every gap until it is written, c fails or
// stop is closed.
func dribble(c net.Conn, s string, gap time.Duration, stop <-chan struct{}) {
	for i := range len(s) {
		if _, err := c.Write([]byte{s[i]}); err != nil {
			return
		}
		select {
		case <-stop:
			return
		case <-time.After(gap):
		}
	}
}

// Slow and idle clients (slowloris) cannot keep the API from stopping: Close
// returns within the shutdown grace, every connection is closed, and a
// handler still streaming to a client that does not read has its context
// cancelled (issue 12: "a slowloris client while SIGTERM ends the node
// within 10 s").
func TestAPIShutdownBoundedWhateverClientsDo(t *testing.T) {
	lim := DefaultAPILimits()
	lim.ShutdownGrace = time.Second
	streamEnded := make(chan struct{})
	streaming := make(chan struct{})
	a := startTestAPI(t, lim, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/forever", func(w http.ResponseWriter, r *http.Request) {
			defer close(streamEnded)
			close(streaming)
			for r.Context().Err() == nil {
				if _, err := w.Write([]byte(strings.Repeat("x", 4096))); err != nil {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	})
	stop := make(chan struct{})
	defer close(stop)

	// Headers sent one byte a second (each byte within ReadHeaderTimeout
	// of the last, the whole never).
	headers := dial(t, a)
	go dribble(headers, "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "+strings.Repeat("a", 100), time.Second, stop)
	// A body announced and sent one byte a second.
	body := dial(t, a)
	fmt.Fprintf(body, "POST /v1/bench/allreduce HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	go dribble(body, strings.Repeat("{", 1000), time.Second, stop)
	// A keep-alive connection left idle after one request.
	idle := dial(t, a)
	fmt.Fprintf(idle, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status on the idle connection: %v, %v", resp, err)
	}
	// A response streamed to a client that never reads it.
	reader := dial(t, a)
	fmt.Fprintf(reader, "GET /v1/forever HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n", testToken)
	<-streaming
	time.Sleep(1500 * time.Millisecond) // all of them well under way

	start := time.Now()
	err = a.Close(context.Background())
	took := time.Since(start)
	t.Logf("Close took %v: %v", took, err)
	if took > lim.ShutdownGrace+time.Second {
		t.Errorf("Close took %v, want at most the grace %v (and a second)", took, lim.ShutdownGrace)
	}
	if err == nil {
		t.Error("Close cut off a streaming handler but returned no error")
	}
	select {
	case <-streamEnded:
	case <-time.After(2 * time.Second):
		t.Error("the streaming handler still runs 2 s after Close: its context was not cancelled")
	}
	for name, c := range map[string]net.Conn{"slow headers": headers, "slow body": body, "idle": idle, "not reading": reader} {
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Errorf("%s connection still open after Close: %v", name, err)
		}
	}
}

// The limits do not cut off long work: a handler that answers after longer
// than the read and write timeouts keeps its context, and a response that
// streams for longer than the write timeout arrives whole.
func TestAPILongHandlersAndStreams(t *testing.T) {
	lim := DefaultAPILimits()
	lim.ReadHeaderTimeout, lim.ReadTimeout, lim.WriteTimeout = 200*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	a := startTestAPI(t, lim, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /v1/slow", func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
				http.Error(w, "cancelled", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintf(w, "done %s", b)
		})
		mux.HandleFunc("GET /v1/stream", func(w http.ResponseWriter, r *http.Request) {
			for i := range 10 {
				fmt.Fprintf(w, "line %d\n", i)
				http.NewResponseController(w).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		})
	})
	resp, b, err := do(a, "POST", "/v1/slow", `{"a":1}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || b != `done {"a":1}` {
		t.Errorf("handler slower than the timeouts: %s %q", resp.Status, b)
	}
	if _, b, err = do(a, "GET", "/v1/stream", "", nil); err != nil || strings.Count(b, "\n") != 10 {
		t.Errorf("1 s stream with a 300 ms write timeout: %d lines, %v", strings.Count(b, "\n"), err)
	}
}

// A request too large, or sent too slowly, is refused.
func TestAPIRequestLimits(t *testing.T) {
	lim := DefaultAPILimits()
	lim.MaxHeaderBytes, lim.MaxBodyBytes = 4<<10, 1<<10
	lim.ReadHeaderTimeout, lim.ReadTimeout = 300*time.Millisecond, 500*time.Millisecond
	a := startTestAPI(t, lim, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	})
	// (The server closes the connection as it answers: reading the body
	// may fail.)
	if resp, _, err := do(a, "GET", "/v1/status", "", http.Header{"X-Big": {strings.Repeat("a", 8<<10)}}); resp == nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB of headers: %v, %v; want 431", resp, err)
	}
	resp, _, err := do(a, "POST", "/v1/echo", strings.Repeat("a", 2<<10), nil)
	if resp == nil || resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("2 KiB body: %v, %v; want 413", resp, err)
	}
	// Headers never finished: the connection is closed after
	// ReadHeaderTimeout; a body never finished: after ReadTimeout.
	for name, req := range map[string]string{
		"headers": "GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\n",
		"body":    "POST /v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nabc",
	} {
		c := dial(t, a)
		start := time.Now()
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.Copy(io.Discard, c)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("unfinished %s: connection open for %v", name, took)
		}
	}
}

// At most MaxConns connections are served at once; the next is served when
// one closes.
func TestAPIConnectionCap(t *testing.T) {
	lim := DefaultAPILimits()
	lim.MaxConns = 2
	a := startTestAPI(t, lim, nil)
	get := func(c net.Conn) error {
		fmt.Fprintf(c, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		c.SetReadDeadline(time.Time{})
		return err
	}
	held := []net.Conn{dial(t, a), dial(t, a)}
	for _, c := range held {
		if err := get(c); err != nil {
			t.Fatal(err)
		}
	}
	third := dial(t, a)
	if err := get(third); err == nil {
		t.Fatal("a third connection was served while two are open")
	}
	held[0].Close()
	fmt.Fprintf(third, "GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := http.ReadResponse(bufio.NewReader(third), nil); err != nil {
		t.Errorf("the third connection once one closed: %v", err)
	}
}

func TestAPILimitsValidate(t *testing.T) {
	if err := DefaultAPILimits().Validate(); err != nil {
		t.Fatal(err)
	}
	l := DefaultAPILimits()
	l.WriteTimeout = 0
	if err := l.Validate(); err == nil || !strings.Contains(err.Error(), "WriteTimeout") {
		t.Errorf("zero WriteTimeout: %v", err)
	}
}

// Every request but the health check needs the token, on loopback too; the
// Host must name this API; a write must be JSON (issue 12: "a local user
// without the token", DNS rebinding, text/plain bodies).
func TestAPIAuthentication(t *testing.T) {
	a := startTestAPI(t, APILimits{}, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /v1/echo", func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	})
	port := a.ln.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name         string
		method, path string
		body         string
		hdr          http.Header
		want         int
	}{
		// The token.
		{"no token", "GET", "/v1/status", "", http.Header{"Authorization": nil}, http.StatusUnauthorized},
		{"wrong token", "GET", "/v1/status", "", http.Header{"Authorization": {"Bearer " + strings.Repeat("0", 64)}}, http.StatusUnauthorized},
		{"token as basic auth", "GET", "/v1/status", "", http.Header{"Authorization": {"Basic " + testToken}}, http.StatusUnauthorized},
		{"no token, metrics", "GET", "/metrics", "", http.Header{"Authorization": nil}, http.StatusUnauthorized},
		{"no token, write", "POST", "/v1/echo", "{}", http.Header{"Authorization": nil}, http.StatusUnauthorized},
		{"token", "GET", "/v1/status", "", nil, http.StatusOK},
		{"health needs none", "GET", "/v1/health", "", http.Header{"Authorization": nil}, http.StatusOK},
		// The Host.
		{"foreign host", "GET", "/v1/status", "", http.Header{"Host": {fmt.Sprintf("attacker.example:%d", port)}}, http.StatusMisdirectedRequest},
		{"foreign host, health", "GET", "/v1/health", "", http.Header{"Host": {"attacker.example"}}, http.StatusMisdirectedRequest},
		{"localhost", "GET", "/v1/status", "", http.Header{"Host": {fmt.Sprintf("localhost:%d", port)}}, http.StatusOK},
		{"LOCALHOST.", "GET", "/v1/status", "", http.Header{"Host": {"LOCALHOST."}}, http.StatusOK},
		{"::1", "GET", "/v1/status", "", http.Header{"Host": {fmt.Sprintf("[::1]:%d", port)}}, http.StatusOK},
		// The content type of writes.
		{"JSON write", "POST", "/v1/echo", "{}", nil, http.StatusOK},
		{"JSON write, charset", "POST", "/v1/echo", "{}", http.Header{"Content-Type": {"application/json; charset=utf-8"}}, http.StatusOK},
		{"text/plain write", "POST", "/v1/echo", "{}", http.Header{"Content-Type": {"text/plain"}}, http.StatusUnsupportedMediaType},
		{"form write", "POST", "/v1/echo", "a=1", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, http.StatusUnsupportedMediaType},
		{"untyped write", "POST", "/v1/echo", "", nil, http.StatusUnsupportedMediaType},
	} {
		resp, body, err := do(a, tc.method, tc.path, tc.body, tc.hdr)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if resp.StatusCode != tc.want {
			t.Errorf("%s: %s %q, want %d", tc.name, resp.Status, body, tc.want)
		}
	}
	if _, err := StartAPI(APIConfig{Addr: "127.0.0.1:0"}, func() Status { return Status{} }, prometheus.NewRegistry()); !errors.Is(err, ErrAPIToken) {
		t.Errorf("an API without a token started: %v", err)
	}
}
