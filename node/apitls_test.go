package node

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
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
