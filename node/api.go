package node

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/braidml/braid/allreduce"
	"github.com/braidml/braid/kernels/cuda"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Status is the JSON of GET /v1/status and of `braid status --json`.
type Status struct {
	Self    string         `json:"self"`
	Leader  string         `json:"leader"`
	Term    uint64         `json:"term"`
	Epoch   EpochStatus    `json:"epoch"`
	Members []MemberStatus `json:"members"`
	Ring    []string       `json:"ring"` // the epoch's members in ring order
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
	// Addr is host:port to listen on. The default host is 127.0.0.1; off
	// localhost a Token is required.
	Addr string
	// Token, when set, is required as "Authorization: Bearer TOKEN".
	Token string
	// Bench, when set, serves POST /v1/bench/allreduce (a BenchPlan in the
	// body; the response is one JSON BenchRow per line as each size
	// completes, and a last line {"error": "..."} if the run failed).
	Bench func(ctx context.Context, plan BenchPlan, emit func(allreduce.BenchRow)) error
	// Routes, when set, adds the node's further endpoints to the mux.
	Routes func(mux *http.ServeMux)
}

// ErrAPIToken is returned when the API would listen off localhost without a
// bearer token.
var ErrAPIToken = errors.New("node: an HTTP API off localhost needs a bearer token")

// API serves /v1/status, /metrics and POST /v1/bench/allreduce.
type API struct {
	srv *http.Server
	ln  net.Listener
}

// StartAPI listens on cfg.Addr and serves status (from status()) and the
// registry's metrics until Close.
func StartAPI(cfg APIConfig, status func() Status, reg *prometheus.Registry) (*API, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("node: HTTP address %q: %w", cfg.Addr, err)
	}
	if !isLoopback(host) && cfg.Token == "" {
		return nil, fmt.Errorf("%w (listening on %s)", ErrAPIToken, cfg.Addr)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if cfg.Bench != nil {
		mux.HandleFunc("POST /v1/bench/allreduce", func(w http.ResponseWriter, r *http.Request) {
			var plan BenchPlan
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&plan); err != nil {
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
	var h http.Handler = mux
	if cfg.Token != "" {
		h = requireToken(cfg.Token, mux)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("node: HTTP API: %w", err)
	}
	a := &API{srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}, ln: ln}
	go a.srv.Serve(ln)
	return a, nil
}

// Addr is the address the API listens on.
func (a *API) Addr() string { return a.ln.Addr().String() }

// Close stops the API.
func (a *API) Close(ctx context.Context) error { return a.srv.Shutdown(ctx) }

// writeJSON answers with v as indented JSON and status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func requireToken(token string, next http.Handler) http.Handler {
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			http.Error(w, "braid: missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
