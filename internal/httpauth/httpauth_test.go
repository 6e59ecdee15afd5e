package httpauth

import (
	"net"
	"net/http/httptest"
	"testing"
)

// On a wildcard address an API answers to the machine's own addresses.
func TestAllowedHostsOnWildcard(t *testing.T) {
	hosts, err := AllowedHosts(net.IPv4zero, []string{"n1", "Node-1.example"})
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !hosts[n.IP.String()] {
			t.Errorf("interface address %s not allowed", n.IP)
		}
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1", "n1", "node-1.example"} {
		if !hosts[h] {
			t.Errorf("%s not allowed", h)
		}
	}
	if hosts["attacker.example"] || hosts["0.0.0.0"] {
		t.Errorf("allowed hosts %v", hosts)
	}
}

// Allow ignores the port, brackets, case and a trailing dot, and nothing
// else.
func TestHostsAllow(t *testing.T) {
	hosts, err := AllowedHosts(net.IPv4(127, 0, 0, 1), []string{"n1"})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]bool{
		"127.0.0.1:8080": true, "[::1]:80": true, "LOCALHOST.": true, "n1": true,
		"evil.example": false, "127.0.0.2": false, "": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Host = host
		if got := hosts.Allow(r); got != want {
			t.Errorf("Host %q: allowed %v, want %v", host, got, want)
		}
	}
}

// BearerOK wants exactly "Bearer TOKEN".
func TestBearerOK(t *testing.T) {
	for header, want := range map[string]bool{
		"Bearer s3cret": true, "Bearer s3cre": false, "bearer s3cret": false, "s3cret": false, "": false,
		"Bearer s3cret ": false,
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", header)
		if got := BearerOK(r, "s3cret"); got != want {
			t.Errorf("Authorization %q: %v, want %v", header, got, want)
		}
	}
}
