package node

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/braidml/braid/transport/pki"
)

// The HTTP API over TLS (`braid node --http-tls`): the API presents the
// node's own cluster certificate, the one its QUIC transport presents, and
// clients check it against the cluster CA (`braid status --ca ca.pem`).
// TLS protects the bearer token and the answers on the way; it does not
// replace the token: clients present no certificate.

// ErrAPITLSWithoutAPI is returned by Config.Validate for HTTPTLS without
// an HTTPAddr.
var ErrAPITLSWithoutAPI = errors.New("node: --http-tls needs the HTTP API (--http)")

// APIServerTLS is the TLS configuration of an API that presents creds'
// certificate: TLS 1.3, HTTP/1.1, no client certificate asked for (the
// bearer token authenticates clients). The caller may modify the result.
func APIServerTLS(creds *pki.NodeCreds) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{creds.Cert},
		NextProtos:   []string{"http/1.1"},
	}
}

// apiTLS loads the node's certificate for its API when c.HTTPTLS is set:
// the server's TLS configuration and the certificate's host names (its
// SANs), which requests may then carry in their Host header. With creds
// (the node's reloadable credentials, nil when it runs on a transport it
// did not build) every handshake presents the certificate in use now, so a
// reload (SIGHUP, POST /v1/certs/reload) renews the API's certificate too;
// the host names are those of the certificate at start. It returns nil,
// nil, nil without HTTPTLS.
func (c Config) apiTLS(creds *pki.Reloader) (*tls.Config, []string, error) {
	if !c.HTTPTLS {
		return nil, nil, nil
	}
	var cur *pki.NodeCreds
	if creds != nil {
		cur = creds.Current()
	} else {
		var err error
		if cur, err = pki.LoadNode(c.TLSDir, c.Name); err != nil {
			return nil, nil, fmt.Errorf("node: --http-tls: %w", err)
		}
	}
	hosts := append([]string(nil), cur.Cert.Leaf.DNSNames...)
	for _, ip := range cur.Cert.Leaf.IPAddresses {
		hosts = append(hosts, ip.String())
	}
	conf := APIServerTLS(cur)
	if creds != nil {
		conf.Certificates = nil
		conf.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &creds.Current().Cert, nil
		}
	}
	return conf, hosts, nil
}

// APIURL is the API's URL, https:// when it serves TLS ("" when the API is
// off).
func (n *Node) APIURL() string {
	if n.api == nil {
		return ""
	}
	if n.cfg.HTTPTLS {
		return "https://" + n.api.Addr()
	}
	return "http://" + n.api.Addr()
}

// APICAFile is the cluster CA certificate that signed the API's
// certificate, for clients to verify it with ("" when the API does not
// serve TLS).
func (n *Node) APICAFile() string {
	if n.api == nil || !n.cfg.HTTPTLS {
		return ""
	}
	return filepath.Join(n.cfg.TLSDir, pki.CAFile)
}

// warnCleartextAPI logs a warning when the API listens beyond loopback
// without TLS: every request there carries the bearer token in clear text.
func warnCleartextAPI(log *slog.Logger, addr string, tlsOn bool) {
	if tlsOn || loopbackOnly(addr) {
		return
	}
	log.Warn("the HTTP API listens beyond loopback without TLS: its bearer token and answers travel in clear text; use --http-tls, or the API only on a network you trust",
		"addr", addr)
}

// loopbackOnly says whether addr (host:port as the API listens) is
// reachable from this machine only.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
