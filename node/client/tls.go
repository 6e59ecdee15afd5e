package client

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// How the client talks to an API that serves HTTPS (`braid node
// --http-tls`). The node presents its cluster certificate, so the client
// trusts the cluster CA only (Config.CAFile). A certificate is accepted for
// the URL's host when it names that host (a --host of `braid ca issue`),
// when its node name is the host, or when it is Config.Node's.

// newHTTPClient is the client for the API at u, which follows no redirect:
// for http:// over http.DefaultTransport, and for https:// over a
// transport that trusts the CA in caFile only and accepts a certificate
// for u's host or for node.
func newHTTPClient(u *url.URL, caFile, node string) (*http.Client, error) {
	if u.Scheme == "http" {
		return &http.Client{CheckRedirect: noRedirects}, nil
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("client: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("client: CA file %s: no PEM certificate in it", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A connection is not kept for the next call, so that a Client needs
	// no closing (the CLI makes a handful of calls per command).
	tr.DisableKeepAlives = true
	tr.TLSClientConfig = &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		// Go's host-name check knows SANs only; verifyCert checks the
		// chain and the host in its place. Do not clear VerifyConnection.
		InsecureSkipVerify: true,
		VerifyConnection:   verifyCert(pool, caFile, u.Hostname(), node),
	}
	return &http.Client{Transport: tr, CheckRedirect: noRedirects}, nil
}

// noRedirects makes a redirect the answer: the API sends none of its own,
// and one (a path the node's router cleans) would take a request to
// another endpoint than the method's.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// verifyCert checks the API's certificate: it chains to the CA in pool,
// allows server authentication, and is for host (a SAN, or its node name)
// or for node.
func verifyCert(pool *x509.CertPool, caFile, host, node string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("%w: it presented none", ErrCert)
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return fmt.Errorf("%w against the CA in %s (is it the cluster's ca.pem?): %v", ErrCert, caFile, err)
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
			ErrCert, host, cn, strings.Join(names, " "), host)
	}
}
