package coordinator

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/transport"
	"github.com/braidml/braid/transport/memnet"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestServerAddress(t *testing.T) {
	a := ServerAddress("n1", "10.0.0.1:7000")
	if a != "n1@10.0.0.1:7000" {
		t.Fatalf("ServerAddress = %q", a)
	}
	for _, c := range []struct {
		in         raft.ServerAddress
		name, addr string
	}{
		{"n1@10.0.0.1:7000", "n1", "10.0.0.1:7000"},
		{"ops@dc1@[::1]:7000", "ops@dc1", "[::1]:7000"}, // names may hold '@', addresses not
		{"n1@mem:n1", "n1", "mem:n1"},
	} {
		name, addr, err := ParseServerAddress(c.in)
		if err != nil || name != c.name || addr != c.addr {
			t.Errorf("ParseServerAddress(%q) = %q, %q, %v", c.in, name, addr, err)
		}
	}
	for _, bad := range []raft.ServerAddress{"", "n1", "@addr", "n1@", "10.0.0.1:7000"} {
		if _, _, err := ParseServerAddress(bad); !errors.Is(err, ErrInvalidAddress) {
			t.Errorf("ParseServerAddress(%q) = %v", bad, err)
		}
	}
}

// TestStreamLayer: Dial reaches the named peer's Accept over the transport
// and the RPCs written arrive unchanged; Close unblocks Accept and closes
// the streams still open.
func TestStreamLayer(t *testing.T) {
	n := memnet.New(1)
	defer n.Close()
	ta, _ := n.Node("a")
	tb, _ := n.Node("b")
	la, err := NewStreamLayer(ta, allowPeers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lb, err := NewStreamLayer(tb, allowPeers("a"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStreamLayer(tb, allowPeers(), nil); !errors.Is(err, transport.ErrAlreadyListens) {
		t.Fatalf("second layer on one transport: %v", err)
	}
	if _, err := NewStreamLayer(tb, nil, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("layer without RaftPeers: %v", err)
	}
	if got := lb.Addr().String(); got != "b@mem:b" {
		t.Fatalf("Addr = %q", got)
	}

	accepted := make(chan error, 1)
	var server io.ReadWriteCloser
	go func() {
		c, err := lb.Accept()
		server = c
		accepted <- err
	}()
	client, err := la.Dial(raft.ServerAddress(lb.Addr().String()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ping := encodeRPC(t, rpcTimeoutNow, &raft.TimeoutNowRequest{RPCHeader: header("a")})
	if _, err := client.Write(ping); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(ping))
	if _, err := io.ReadFull(server, buf); err != nil || !bytes.Equal(buf, ping) {
		t.Fatalf("read %q, %v, want %q", buf, err, ping)
	}
	if st, ok := server.(transport.Stream); !ok || st.Peer() != "a" {
		t.Fatalf("accepted %T, want a transport.Stream from a", server)
	}

	// The wrong identity at an address is refused by the transport.
	if _, err := la.Dial(ServerAddress("c", "mem:b"), time.Second); err == nil {
		t.Fatal("dial with the wrong peer name succeeded")
	}
	if _, err := la.Dial("no-at-sign", time.Second); !errors.Is(err, ErrInvalidAddress) {
		t.Fatalf("dial of a malformed address: %v", err)
	}

	// Close unblocks Accept and closes the open streams.
	go func() {
		_, err := lb.Accept()
		accepted <- err
	}()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-accepted; !errors.Is(err, transport.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := io.ReadFull(client, buf); err == nil {
		t.Fatal("stream still open after its layer closed")
	}
	if err := lb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	la.Close()
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{DefaultConfig(), LocalConfig()} {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		field string
		edit  func(*Config)
	}{
		{"MaxVoters", func(c *Config) { c.MaxVoters = 0 }},
		{"MaxVoters", func(c *Config) { c.MaxVoters = 10 }},
		{"HeartbeatTimeout", func(c *Config) { c.HeartbeatTimeout = time.Millisecond }},
		{"ElectionTimeout", func(c *Config) { c.ElectionTimeout = c.HeartbeatTimeout / 2 }},
		{"LeaderLeaseTimeout", func(c *Config) { c.LeaderLeaseTimeout = 2 * c.HeartbeatTimeout }},
		{"CommitTimeout", func(c *Config) { c.CommitTimeout = 0 }},
		{"SnapshotInterval", func(c *Config) { c.SnapshotInterval = 0 }},
		{"SnapshotThreshold", func(c *Config) { c.SnapshotThreshold = 0 }},
		{"SnapshotRetain", func(c *Config) { c.SnapshotRetain = 0 }},
		{"RPCTimeout", func(c *Config) { c.RPCTimeout = 0 }},
		{"MaxPool", func(c *Config) { c.MaxPool = 0 }},
		{"ApplyTimeout", func(c *Config) { c.ApplyTimeout = -1 }},
		{"ReconcileInterval", func(c *Config) { c.ReconcileInterval = 0 }},
	} {
		cfg := DefaultConfig()
		c.edit(&cfg)
		err := cfg.Validate()
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v", c.field, err)
		}
	}
	// Deps are checked by New.
	if _, err := New(LocalConfig(), Deps{DataDir: t.TempDir()}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without a transport: %v", err)
	}
	n := memnet.New(1)
	defer n.Close()
	tr, _ := n.Node("a")
	if _, err := New(LocalConfig(), Deps{Transport: tr}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("New without a data dir: %v", err)
	}
}

// TestHclogAdapter: raft's hclog calls reach slog with the right level,
// name and implied arguments.
func TestHclogAdapter(t *testing.T) {
	var buf strings.Builder
	l := newSlogHclog(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), "raft")
	l.Trace("dropped: below debug")
	l.Named("net").With("peer", "n2").Warn("slow", "ms", 5)
	l.SetLevel(hclog.Error)
	l.Info("dropped: below the set level")
	l.StandardLogger(&hclog.StandardLoggerOptions{ForceLevel: hclog.Error}).Print("from log")
	got := buf.String()
	for _, want := range []string{`level=WARN msg=slow logger=raft.net peer=n2 ms=5`, `level=ERROR msg="from log" logger=raft`} {
		if !strings.Contains(got, want) {
			t.Errorf("log lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "dropped") {
		t.Errorf("log has a dropped line:\n%s", got)
	}
	if l.IsInfo() || !l.IsError() {
		t.Error("IsInfo/IsError ignore SetLevel")
	}
}
