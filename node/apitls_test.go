package node

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/transport/pki"
)

// Off loopback without TLS the token travels in clear text, and the node
// says so when it starts; on loopback, or with TLS, it says nothing.
func TestCleartextAPIWarning(t *testing.T) {
	for _, c := range []struct {
		addr string
		tls  bool
		warn bool
	}{
		// loopback: the token never leaves the machine
		{"127.0.0.1:7950", false, false},
		{"127.0.0.2:7950", false, false},
		{"[::1]:7950", false, false},
		// beyond loopback
		{"0.0.0.0:7950", false, true},
		{"[::]:7950", false, true},
		{"192.0.2.10:7950", false, true},
		{"192.0.2.10:7950", true, false},
		{"0.0.0.0:7950", true, false},
	} {
		var buf bytes.Buffer
		warnCleartextAPI(slog.New(slog.NewTextHandler(&buf, nil)), c.addr, c.tls)
		if got := strings.Contains(buf.String(), "clear text"); got != c.warn {
			t.Errorf("%s, TLS %v: warned %v, want %v (%q)", c.addr, c.tls, got, c.warn, buf.String())
		}
	}
}

func TestHTTPTLSNeedsTheAPI(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Name, cfg.DataDir, cfg.HTTPAddr, cfg.HTTPTLS = "n1", t.TempDir(), "", true
	if err := cfg.Validate(); err != ErrAPITLSWithoutAPI {
		t.Errorf("Validate: %v, want %v", err, ErrAPITLSWithoutAPI)
	}
}

// TestAPICertificateFollowsReload: the API presents the certificate the
// node's credentials hold now, so a reload (after `braid ca issue` renewed
// it) renews the API's certificate without a restart.
func TestAPICertificateFollowsReload(t *testing.T) {
	dir := t.TempDir()
	if err := pki.InitCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := pki.Issue(dir, "n1", []string{"127.0.0.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewReloader(dir, "n1")
	if err != nil {
		t.Fatal(err)
	}
	conf, hosts, err := Config{Name: "n1", TLSDir: dir, HTTPTLS: true}.apiTLS(creds)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(hosts, "127.0.0.1") {
		t.Errorf("hosts %v lack the certificate's 127.0.0.1", hosts)
	}
	serial := func() string {
		c, err := conf.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return pki.Serial(c.Leaf)
	}
	before := serial()
	if err := pki.Issue(dir, "n1", []string{"127.0.0.1"}, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got != before {
		t.Fatalf("the API presents serial %s before the reload, want %s", got, before)
	}
	if _, err := creds.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := serial(); got == before {
		t.Fatalf("the API still presents serial %s after the reload", got)
	}
}
