// Package httpauth holds the checks braid's HTTP APIs make of every request
// before any handler runs: a bearer token, compared in constant time, and
// a Host header that names the API (so that a web page whose DNS name was
// rebound to a loopback address cannot reach it). The node's API (package
// node) and the OpenAI-compatible endpoint (package serve) share them, and
// each answers a refused request in its own format.
//
// It does not issue or store tokens (node.ReadTokenFile reads one) and does
// not terminate TLS.
package httpauth

import (
	"crypto/subtle"
	"fmt"
	"net"
	"net/http"
	"strings"
)

// BearerOK reports whether r carries "Authorization: Bearer token". The
// comparison takes the same time whatever the header holds.
func BearerOK(r *http.Request, token string) bool {
	want := "Bearer " + token
	return subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte(want)) == 1
}

// Hosts is the set of host names (lower case, without port or brackets) a
// request's Host header may name.
type Hosts map[string]bool

// AllowedHosts is what a request's Host may name for an API listening on
// listen: loopback and localhost, the listen IP (every address of the
// machine's interfaces when it is a wildcard), and extra.
func AllowedHosts(listen net.IP, extra []string) (Hosts, error) {
	hosts := Hosts{"localhost": true, "127.0.0.1": true, "::1": true}
	add := func(ip net.IP) { hosts[ip.String()] = true }
	if listen.IsUnspecified() {
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, fmt.Errorf("httpauth: the machine's addresses: %w", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				add(n.IP)
			}
		}
	} else {
		add(listen)
	}
	for _, h := range extra {
		if h != "" {
			hosts[strings.ToLower(strings.Trim(h, "[]"))] = true
		}
	}
	return hosts, nil
}

// Allow reports whether r's Host header, port aside, is one of hosts.
func (hosts Hosts) Allow(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	return hosts[host]
}
