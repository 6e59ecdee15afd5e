package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/internal/httpauth"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

// Status is the JSON of GET /v1/status and of `braid status --json`.
type Status struct {
	Self    string         `json:"self"`
	Leader  string         `json:"leader"`
	Term    uint64         `json:"term"`
	Epoch   EpochStatus    `json:"epoch"`
	Members []MemberStatus `json:"members"`
	Ring    []string       `json:"ring"` // the epoch's members in ring order
	// Health is this node's control-plane timing since it started
	// (health.go).
	Health *HealthStatus `json:"health,omitempty"`
}

// EpochStatus is the committed epoch: its id and ordered members.
type EpochStatus struct {
	ID      uint64   `json:"id"`
	Members []string `json:"members"`
}

// MemberStatus is one member as this node sees it.
type MemberStatus struct {
	Name     string `json:"name"`
	State    string `json:"state"` // alive, suspect, dead, left
	Addr     string `json:"addr"`  // gossip address
	QUICAddr string `json:"quic_addr,omitempty"`
	Cores    int    `json:"cores,omitempty"`
	GPUs     int    `json:"gpus,omitempty"`
	Memory   int64  `json:"memory_bytes,omitempty"`
	Version  string `json:"version,omitempty"`
	Voter    bool   `json:"voter,omitempty"`
	// Device is the device kind the member computes on (cpu, cuda), and
	// GPU the GPU it uses (nil on a CPU node or where not described).
	Device string           `json:"device,omitempty"`
	GPU    *cuda.DeviceInfo `json:"gpu,omitempty"`
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Addr is host:port to listen on (node's default host is 127.0.0.1).
	Addr string
	// Token is required, on loopback too, as "Authorization: Bearer TOKEN"
	// on every request but GET /v1/health. Without TLS it travels in clear
	// text: off loopback, use the API on a network you trust.
	Token string
	// TLS, when set, makes the API serve HTTPS only (APIServerTLS); nil
	// serves plain HTTP.
	TLS *tls.Config
	// Hosts are names, besides the listen address, loopback and "localhost",
	// that requests may carry in their Host header (the node's name and
	// advertised host). Any other Host is refused, so that a web page whose
	// name resolves to this machine (DNS rebinding) cannot use the API.
	Hosts []string
	// Limits bound what one client can hold of the server; the zero value
	// is DefaultAPILimits().
	Limits APILimits
	// Bench, when set, serves POST /v1/bench/allreduce (a BenchPlan in the
	// body; the response is one JSON BenchRow per line as each size
	// completes, and a last line {"error": "..."} if the run failed).
	Bench func(ctx context.Context, plan BenchPlan, emit func(allreduce.BenchRow)) error
	// Routes, when set, adds the node's further endpoints to the mux.
	Routes func(mux *http.ServeMux)
	// Ready, when set, serves GET /v1/ready without the token, like
	// /v1/health: 200 {"ready": true} when it returns nil, else 503
	// {"ready": false, "reason": its error}.
	Ready func() error
}

// APILimits bound the time and connections a client can hold, so that slow
// or idle clients (slowloris) can neither exhaust the server nor keep it
// from shutting down.
//
// A request, headers and body, must arrive within ReadTimeout; the API
// reads every body (at most MaxBodyBytes) before its handler runs, and the
// handler may then take minutes (registering a dataset, a benchmark). A
// response is never cut off for its length: WriteTimeout bounds each write
// (a client that stops reading), so downloads and streamed rows go on for
// as long as the client keeps reading.
type APILimits struct {
	ReadHeaderTimeout time.Duration // the request line and headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // each write of a response
	IdleTimeout       time.Duration // a keep-alive connection between requests
	MaxHeaderBytes    int           // request line and headers
	MaxBodyBytes      int64         // a request body
	MaxConns          int           // connections open at once; more wait to be accepted
	// ShutdownGrace is how long Close lets requests in progress finish
	// before it closes their connections.
	ShutdownGrace time.Duration
}

// DefaultAPILimits are the limits of `braid node`'s API: generous for the
// CLI on a slow link, small enough that SIGTERM ends the node within 10 s
// whatever its clients do.
func DefaultAPILimits() APILimits {
	return APILimits{ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second,
		IdleTimeout: 60 * time.Second, MaxHeaderBytes: 64 << 10, MaxBodyBytes: 1 << 20, MaxConns: 256,
		ShutdownGrace: 5 * time.Second}
}

// Validate checks every limit is positive and names the one that is not.
func (l APILimits) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"ReadHeaderTimeout", int64(l.ReadHeaderTimeout)}, {"ReadTimeout", int64(l.ReadTimeout)},
		{"WriteTimeout", int64(l.WriteTimeout)}, {"IdleTimeout", int64(l.IdleTimeout)},
		{"MaxHeaderBytes", int64(l.MaxHeaderBytes)}, {"MaxBodyBytes", l.MaxBodyBytes}, {"MaxConns", int64(l.MaxConns)},
		{"ShutdownGrace", int64(l.ShutdownGrace)}} {
		if f.v <= 0 {
			return fmt.Errorf("node: API limit %s is %d, want > 0", f.name, f.v)
		}
	}
	if l.ReadHeaderTimeout > l.ReadTimeout {
		return fmt.Errorf("node: API limit ReadHeaderTimeout %v exceeds ReadTimeout %v", l.ReadHeaderTimeout, l.ReadTimeout)
	}
	return nil
}

// ErrAPIToken is returned when the API would start without a bearer token.
var ErrAPIToken = errors.New("node: the HTTP API needs a bearer token")

// API serves /v1/health, /v1/ready, /v1/status, /metrics and POST
// /v1/bench/allreduce, and the routes APIConfig.Routes adds. Every request
// but GET /v1/health and /v1/ready must carry the token and a Host naming this API; every request that
// writes (POST, PUT, PATCH, DELETE) must have Content-Type
// application/json, which a web page cannot send to another origin
// without the browser asking first (a CORS preflight this API never grants);
// uploads (PUT /v1/blobs, blob_api.go) stream their bodies instead.
type API struct {
	srv   *http.Server
	ln    net.Listener
	grace time.Duration

	closeOnce sync.Once
	closeErr  error // what the first Close returned
}

// StartAPI listens on cfg.Addr and serves status (from status()) and the
// registry's metrics until Close.
func StartAPI(cfg APIConfig, status func() Status, reg *prometheus.Registry) (*API, error) {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return nil, fmt.Errorf("node: HTTP address %q: %w", cfg.Addr, err)
	}
	if cfg.Token == "" {
		return nil, fmt.Errorf("%w (listening on %s)", ErrAPIToken, cfg.Addr)
	}
	lim := cfg.Limits
	if lim == (APILimits{}) {
		lim = DefaultAPILimits()
	}
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	if cfg.Ready != nil {
		mux.HandleFunc("GET /v1/ready", func(w http.ResponseWriter, r *http.Request) {
			if err := cfg.Ready(); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"ready": true})
		})
	}
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	consoleRoutes(mux)
	if cfg.Bench != nil {
		mux.HandleFunc("POST /v1/bench/allreduce", func(w http.ResponseWriter, r *http.Request) {
			var plan BenchPlan
			if err := readJSON(w, r, 64<<10, &plan); err != nil {
				http.Error(w, "braid: bench plan: "+err.Error(), http.StatusBadRequest)
				return
			}
			if _, err := plan.ringConfig(); err != nil {
				http.Error(w, "braid: "+err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/x-ndjson")
			enc := json.NewEncoder(w)
			flush := func() {
				if f, ok := w.(http.Flusher); ok {
					f.Flush()
				}
			}
			err := cfg.Bench(r.Context(), plan, func(row allreduce.BenchRow) {
				enc.Encode(row)
				flush()
			})
			if err != nil {
				enc.Encode(map[string]string{"error": err.Error()})
			}
		})
	}
	if cfg.Routes != nil {
		cfg.Routes(mux)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("node: HTTP API: %w", err)
	}
	hosts, err := httpauth.AllowedHosts(ln.Addr().(*net.TCPAddr).IP, cfg.Hosts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	h := withDeadlines(lim, checkHost(hosts, requireToken(cfg.Token, requireJSONWrites(mux))))
	srv := &http.Server{Handler: h, ReadHeaderTimeout: lim.ReadHeaderTimeout, ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout, MaxHeaderBytes: lim.MaxHeaderBytes}
	a := &API{srv: srv, ln: ln, grace: lim.ShutdownGrace}
	l := netutil.LimitListener(ln, lim.MaxConns)
	if cfg.TLS != nil {
		// Outermost, so that the server sees *tls.Conn: it bounds the
		// handshake by its timeouts and answers plain HTTP with a 400.
		l = tls.NewListener(l, cfg.TLS)
	}
	go a.srv.Serve(l)
	return a, nil
}

// Addr is the address the API listens on.
func (a *API) Addr() string { return a.ln.Addr().String() }

// Close stops the API: it stops accepting, closes idle connections, lets
// the requests in progress finish for the limits' ShutdownGrace (or until
// ctx ends, if sooner) and then closes their connections, which cancels
// their handlers' contexts. It returns within that time whatever the
// clients do; the error says when connections had to be cut. Later calls
// return the first one's error at once.
func (a *API) Close(ctx context.Context) error {
	a.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, a.grace)
		defer cancel()
		if err := a.srv.Shutdown(ctx); err != nil {
			a.srv.Close()
			a.closeErr = fmt.Errorf("node: HTTP API: requests still in progress after %v were cut off: %w", a.grace, err)
		}
	})
	return a.closeErr
}

// withDeadlines applies lim per request: the body is read whole (under the
// server's ReadTimeout, which net/http lifts once the body is read) and
// refused beyond MaxBodyBytes, and every write of the response gets
// WriteTimeout from the moment it starts, in place of the server's deadline
// counted from the request.
func withDeadlines(lim APILimits, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if r.Body != nil && r.Body != http.NoBody && !streamedBody(r) { // an upload streams its own (blob_api.go)
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, lim.MaxBodyBytes))
			if err != nil {
				code := http.StatusBadRequest
				if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
					code = http.StatusRequestEntityTooLarge
				}
				http.Error(w, "braid: reading the request: "+err.Error(), code)
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: rc, timeout: lim.WriteTimeout}, r)
	})
}

// deadlineWriter sets the connection's write deadline before each write,
// so that a response is bounded by how long one write stalls, not by its
// length.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) arm() { d.rc.SetWriteDeadline(time.Now().Add(d.timeout)) }

func (d *deadlineWriter) WriteHeader(code int) {
	d.arm()
	d.ResponseWriter.WriteHeader(code)
}

func (d *deadlineWriter) Write(b []byte) (int, error) {
	d.arm()
	return d.ResponseWriter.Write(b)
}

// Flush makes the writer an http.Flusher, as the bench stream wants.
func (d *deadlineWriter) Flush() {
	d.arm()
	d.rc.Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (d *deadlineWriter) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// writeJSON answers with v as indented JSON and status code.
// readJSON decodes a request body of at most limit bytes into v, strictly:
// an unknown field, trailing data or a larger body is an error.
func readJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// requireToken refuses (401) a request without "Authorization: Bearer
// token", but GET /v1/health, /v1/ready (probes, which say nothing a
// stranger could use) and the console's page (console.go). No cookie
// stands for the token (the console sends the header too): a cookie is
// shared by every port of a host, so any other local server the browser
// visits would receive it.
func requireToken(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		public := read && (r.URL.Path == "/v1/health" || r.URL.Path == "/v1/ready" || consoleAsset(r.URL.Path))
		if !public && !httpauth.BearerOK(r, token) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="braid"`)
			http.Error(w, "braid: missing or wrong bearer token (the node's is in its data directory's "+APITokenFile+
				" unless set with --token; braid finds it for the node's user, or give --token or --token-file)", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireJSONWrites refuses (415) a request that may change state but does
// not declare a JSON body: an HTML form or a "simple" cross-origin request
// from a web page cannot declare one.
func requireJSONWrites(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); (err != nil || mt != "application/json") && !streamedBody(r) {
				http.Error(w, "braid: a "+r.Method+" request needs Content-Type: application/json", http.StatusUnsupportedMediaType)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkHost refuses (421) a request whose Host header, port aside, is not
// one of hosts.
func checkHost(hosts httpauth.Hosts, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hosts.Allow(r) {
			http.Error(w, "braid: this API does not answer to the host name "+fmt.Sprintf("%.100q", r.Host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}
