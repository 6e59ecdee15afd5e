package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/braidml/braid/node"
)

// How the CLI talks to an API that serves HTTPS (`braid node --http-tls`).
// The node presents its cluster certificate, so the CLI trusts the cluster
// CA only: --ca (BRAID_CA), else the CA named by the record a node of this
// user left for that address (apitoken.go). A certificate is accepted for
// the URL's host when it names that host (a --host of `braid ca issue`),
// when its node name is the host, or when it is the node the record names.
// A URL of the wrong scheme, or a certificate the CA did not sign, is an
// error that says so and what to give instead.

var (
	// errAPICert wraps the failures of the API's certificate.
	errAPICert = errors.New("the node's certificate does not verify")
	// errAPIScheme is returned when --api's scheme is not the one the node
	// serves.
	errAPIScheme = errors.New("wrong scheme for the node's API")
)

// apiClient is the client for the API behind apiURL: http.DefaultClient for
// http://, and for https:// one that trusts the cluster CA only (caFile,
// else the one the node's record names). It refuses an http:// URL for a
// node whose record says it serves HTTPS.
func apiClient(apiURL, caFile string) (*http.Client, error) {
	u, err := url.Parse(apiURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("--api %q: want http://HOST:PORT or https://HOST:PORT", apiURL)
	}
	recs := discoverRecords(apiURL)
	if u.Scheme == "http" {
		for _, r := range recs {
			if strings.HasPrefix(r.API, "https://") {
				return nil, fmt.Errorf("%w: the node at %s serves HTTPS (braid node --http-tls): use --api https://%s", errAPIScheme, u.Host, u.Host)
			}
		}
		return http.DefaultClient, nil
	}
	var recNode string
	for _, r := range recs {
		if r.CAFile != "" {
			if caFile == "" {
				caFile = r.CAFile
			}
			recNode = r.Node
			break
		}
	}
	if caFile == "" {
		return nil, fmt.Errorf("--api %s is HTTPS: give --ca FILE (BRAID_CA), the cluster's ca.pem, to verify the node with", apiURL)
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true // one client per command: nothing to reuse
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		// Go's host-name check knows SANs only; verifyAPICert checks the
		// chain and the host in its place. Do not clear VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyAPICert(pool, caFile, u.Hostname(), recNode),
	}
	return &http.Client{Transport: tr}, nil
}

// verifyAPICert checks the API's certificate: it chains to the CA in pool,
// allows server authentication, and is for host (a SAN, or its node name)
// or for node, the name this user's record gives the node at that address.
func verifyAPICert(pool *x509.CertPool, caFile, host, node string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: it presented none", errAPICert)
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("%w against the CA in %s (is it the cluster's ca.pem? --ca, BRAID_CA): %v", errAPICert, caFile, err)
		}
		cn := leaf.Subject.CommonName
		if leaf.VerifyHostname(host) == nil || cn == host || node != "" && cn == node {
			return nil
		}
		names := append([]string(nil), leaf.DNSNames...)
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		return fmt.Errorf("%w for %s: it is node %q's, for hosts [%s] (reach the node by one of them, or issue its certificate with --host %s)",
			errAPICert, host, cn, strings.Join(names, " "), host)
	}
}

// apiDo sends req, built by newAPIRequest, to the API behind --api with
// apiClient, and turns a plain-HTTP request to an HTTPS API and the reverse
// into errors that name the URL to use.
func apiDo(c *cli.Context, req *http.Request) (*http.Response, error) {
	client, err := apiClient(c.String("api"), c.String("ca"))
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	host := req.URL.Host
	if err != nil {
		if _, ok := errors.AsType[tls.RecordHeaderError](err); ok || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
			return nil, fmt.Errorf("%w: the node at %s serves plain HTTP, not HTTPS (it runs without --http-tls): use --api http://%s", errAPIScheme, host, host)
		}
		return nil, err
	}
	// net/http's server answers a plain request on its TLS port with this
	// 400 and closes the connection.
	if resp.StatusCode == http.StatusBadRequest && req.URL.Scheme == "http" {
		head, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if bytes.Contains(head, []byte("HTTP request to an HTTPS server")) {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: the node at %s serves HTTPS (braid node --http-tls): use --api https://%s, with --ca the cluster's ca.pem", errAPIScheme, host, host)
		}
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(head), resp.Body), resp.Body}
	}
	return resp, nil
}

// recordAPI leaves the record by which this user's CLI finds n's API token
// and, for HTTPS, its CA (apitoken.go), when there is either; the returned
// function removes it.
func recordAPI(n *node.Node, name string, logger *slog.Logger) (remove func()) {
	rec := apiRecord{API: n.APIURL(), TokenFile: n.APITokenFile(), CAFile: n.APICAFile()}
	if rec.CAFile != "" {
		rec.Node = name
	}
	if rec.API == "" || rec.TokenFile == "" && rec.CAFile == "" {
		return func() {}
	}
	remove, err := writeAPIRecord(rec)
	if err != nil {
		logger.Warn("the CLI will not find the API's token and CA by itself (give it --token-file and --ca)",
			"token_file", rec.TokenFile, "ca", rec.CAFile, "err", err)
		return func() {}
	}
	return remove
}
