package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

var (
	// ErrURL is wrapped by New's error for a URL that is not a node API's
	// (no scheme, another scheme, no host).
	ErrURL = errors.New("client: not a node API URL")
	// ErrUnreachable is wrapped, with the network error, by the error of a
	// call whose request got no answer: refused, reset, timed out.
	ErrUnreachable = errors.New("client: cannot reach the node API")
	// ErrScheme is wrapped by the error of a call to an API that serves
	// another scheme than the URL's: https to a plain API or the reverse.
	ErrScheme = errors.New("client: wrong scheme for the node's API")
	// ErrCert is wrapped by the error of a call to an HTTPS API whose
	// certificate does not verify against Config.CAFile or is for another
	// host.
	ErrCert = errors.New("client: the node's certificate does not verify")
	// ErrHashMismatch is wrapped by DownloadJobFile's error when the bytes
	// received do not hash to what the checkpoint recorded.
	ErrHashMismatch = errors.New("client: the bytes received do not match the checkpoint's hash")
)

// Limits on what the client reads of an answer.
const (
	maxJSONBytes  = 16 << 20 // a JSON answer
	maxErrorBytes = 4 << 10  // the message of an answer other than 200
)

// Config configures a Client.
type Config struct {
	// URL is the node's API: http://HOST:PORT, or https://HOST:PORT for a
	// node that serves TLS (`braid node --http-tls`). A path after the
	// host is kept as a prefix of every endpoint's.
	URL string
	// CAFile is, for an https URL, the cluster CA certificate file
	// (ca.pem) the node's certificate must chain to; no other root is
	// trusted. Required for https unless HTTP is set.
	CAFile string
	// Node, for an https URL, is the name of the node known to listen at
	// URL: its certificate (common name Node) is then accepted even when
	// it does not name URL's host. "" accepts only a certificate for the
	// host (a SAN, or a common name equal to it).
	Node string
	// Token is the API's bearer token, sent with every request ("" sends
	// none, and the node answers 401 to all but its health check).
	Token string
	// HTTP, when set, sends every request in place of the client New
	// builds from URL and CAFile (tests); CAFile and Node are not used then.
	HTTP *http.Client
	// Timeouts bound the calls; the zero value is DefaultTimeouts().
	Timeouts Timeouts
}

// Timeouts bound each call that answers at once, from the moment it is
// made to the end of its answer; a call is also bounded by its context,
// whichever ends first. The calls that stream (PutBlob, DownloadJobFile,
// BenchAllReduce) last as long as their data and are bounded by their
// context only.
type Timeouts struct {
	Read          time.Duration // GET of a status, list, job or dataset; HasBlob
	SubmitJob     time.Duration // SubmitJob (the node waits up to 30 s for the coordinator)
	CancelJob     time.Duration // CancelJob
	RevokeCert    time.Duration // RevokeCert (the node waits up to 30 s for the coordinator)
	CreateDataset time.Duration // CreateDataset: the node reads and checks every shard
}

// DefaultTimeouts are the bounds the braid CLI uses.
func DefaultTimeouts() Timeouts {
	return Timeouts{Read: 10 * time.Second, SubmitJob: time.Minute, CancelJob: 30 * time.Second,
		RevokeCert: 40 * time.Second, CreateDataset: 10 * time.Minute}
}

// Validate checks every timeout is positive and names the one that is not.
func (t Timeouts) Validate() error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Read", t.Read}, {"SubmitJob", t.SubmitJob}, {"CancelJob", t.CancelJob}, {"RevokeCert", t.RevokeCert},
		{"CreateDataset", t.CreateDataset}} {
		if f.d <= 0 {
			return fmt.Errorf("client: Timeouts.%s is %v, want > 0", f.name, f.d)
		}
	}
	return nil
}

// Validate checks the URL (see ErrURL), that an https URL comes with a CA
// file or an http.Client, and the timeouts; it reads no file.
func (c Config) Validate() error {
	u, err := parseURL(c.URL)
	if err != nil {
		return err
	}
	if u.Scheme == "https" && c.CAFile == "" && c.HTTP == nil {
		return fmt.Errorf("client: URL %s is https: give CAFile, the cluster's ca.pem, to verify the node with", c.URL)
	}
	if c.Timeouts != (Timeouts{}) {
		return c.Timeouts.Validate()
	}
	return nil
}

// parseURL checks raw is http://HOST[:PORT] or https://HOST[:PORT], with
// perhaps a path, and returns it parsed.
func parseURL(raw string) (*url.URL, error) {
	const want = "want http://HOST:PORT or https://HOST:PORT"
	if raw == "" {
		return nil, fmt.Errorf("%w: no URL: %s", ErrURL, want)
	}
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("%w: %q has no scheme: write http://%s or, for a node that serves TLS, https://%s", ErrURL, raw, raw, raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %s: %v", ErrURL, raw, want, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return nil, fmt.Errorf("%w: %q: %s", ErrURL, raw, want)
	case u.User != nil, u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("%w: %q: %s, with no user, query or fragment", ErrURL, raw, want)
	}
	return u, nil
}

// Client calls one node's HTTP API. See the package comment for what
// every call does; each method documents its endpoint and its answer.
type Client struct {
	base     string // the URL, without a trailing slash
	scheme   string // http or https
	host     string // the URL's host:port, for error messages
	token    string
	http     *http.Client
	timeouts Timeouts
}

// New checks cfg and builds the client: for an https URL it reads the CA
// file, and the client trusts that CA only. It makes no request: a node
// that is not running is found out by the first call.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	u, _ := parseURL(cfg.URL)
	c := &Client{base: strings.TrimRight(u.String(), "/"), scheme: u.Scheme, host: u.Host, token: cfg.Token,
		http: cfg.HTTP, timeouts: cfg.Timeouts}
	if c.timeouts == (Timeouts{}) {
		c.timeouts = DefaultTimeouts()
	}
	if c.http == nil {
		var err error
		if c.http, err = newHTTPClient(u, cfg.CAFile, cfg.Node); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// URL is the API's URL: Config.URL without a trailing slash.
func (c *Client) URL() string { return c.base }

// endpoint is the URL of the endpoint made of segs: literal segments
// ("v1", "jobs") and the caller's (an id, a name), every one escaped, so
// that the node's route sees each as it was given: "a/b" and "." are one
// segment each, not a path to clean. (An empty one cannot be: the node
// redirects the path that holds it, and the client follows no redirect.)
func (c *Client) endpoint(segs ...string) string {
	var b strings.Builder
	b.WriteString(c.base)
	for _, s := range segs {
		b.WriteByte('/')
		if s == "." || s == ".." {
			b.WriteString(strings.Repeat("%2E", len(s))) // unreserved, so PathEscape leaves them
			continue
		}
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// request is one call's request: body nil for none, with its
// Content-Type, and its length (-1: unknown, sent chunked).
type request struct {
	method      string
	url         string
	body        io.Reader
	contentType string
	length      int64
}

// jsonRequest is a request whose body is in, encoded.
func jsonRequest(method, u string, in any) (request, error) {
	b, err := json.Marshal(in)
	if err != nil {
		return request{}, fmt.Errorf("client: %s %s: encoding the request: %w", method, u, err)
	}
	return request{method: method, url: u, body: bytes.NewReader(b), contentType: "application/json", length: int64(len(b))}, nil
}

// send sends r and returns the answer when it is 200 OK, for the caller
// to read and close. Otherwise the error is an *APIError (the body is
// read and closed), or wraps ErrUnreachable, ErrScheme or ErrCert.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	body := r.body
	switch {
	case body != nil && r.length == 0:
		body = http.NoBody // sent with Content-Length: 0, not chunked
	case body != nil:
		body = io.NopCloser(body) // the caller's reader: net/http must not close it
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return nil, fmt.Errorf("client: %s %s: %w", r.method, r.url, err)
	}
	if r.body != nil {
		req.ContentLength = r.length
		req.Header.Set("Content-Type", r.contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	// net/http's server answers a plain request on its TLS port with this
	// 400 and closes the connection.
	if resp.StatusCode == http.StatusBadRequest && c.scheme == "http" && bytes.Contains(msg, []byte("HTTP request to an HTTPS server")) {
		return nil, fmt.Errorf("%w: the node at %s serves HTTPS (braid node --http-tls)", ErrScheme, c.host)
	}
	return nil, &APIError{Method: r.method, URL: r.url, StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(msg))}
}

// transportError is the error of a request that got no answer.
func (c *Client) transportError(ctx context.Context, err error) error {
	switch _, isTLSRecord := errors.AsType[tls.RecordHeaderError](err); {
	case isTLSRecord, strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("%w: the node at %s serves plain HTTP, not HTTPS (it runs without --http-tls)", ErrScheme, c.host)
	case errors.Is(err, ErrCert), errors.Is(ctx.Err(), context.Canceled):
		// Not a node that is away: a certificate to fix, or the caller
		// gave up.
		return err
	}
	return fmt.Errorf("%w at %s: %w", ErrUnreachable, c.base, err)
}

// call sends in (nil: no body) as JSON to the endpoint of segs, bounded
// by timeout, and decodes the answer, at most maxJSONBytes, as a T.
func call[T any](ctx context.Context, c *Client, timeout time.Duration, method string, in any, segs ...string) (T, error) {
	var out T
	return out, c.callJSON(ctx, timeout, method, c.endpoint(segs...), in, &out)
}

// callJSON is call for the URL u, decoding into out.
func (c *Client) callJSON(ctx context.Context, timeout time.Duration, method, u string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r := request{method: method, url: u}
	if in != nil {
		var err error
		if r, err = jsonRequest(method, u, in); err != nil {
			return err
		}
	}
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJSONBytes+1))
	if err != nil {
		return fmt.Errorf("client: %s %s: reading the answer: %w", method, u, err)
	}
	if len(b) > maxJSONBytes {
		return fmt.Errorf("client: %s %s: the answer is larger than %d MiB", method, u, maxJSONBytes>>20)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("client: %s %s: unexpected answer: %w", method, u, err)
	}
	return nil
}

// APIError is an answer of the node other than 200 OK.
type APIError struct {
	Method     string // of the request
	URL        string // of the request
	StatusCode int    // the answer's
	Message    string // the answer's body (the node's message), trimmed; "" for HEAD
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}
