package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

type testServer struct {
	ID      string
	Address string
}

// TestHclogToJSON: Raft's log lines reach a JSON handler as one JSON
// object each, with hclog's formatted values as the strings hclog would
// write (no "%+v" placeholders), and its key/values as attributes.
func TestHclogToJSON(t *testing.T) {
	var buf bytes.Buffer
	l := newSlogHclog(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})), "raft")
	servers := []testServer{{"n1", "mem:n1"}, {"n2", "mem:n2"}}
	l.Info("initial configuration", "index", 1, "servers", hclog.Fmt("%+v", servers))
	l.Named("transport").With("peer", "n2").Warn("failed", "error", errors.New("boom"), "flags", hclog.Hex(255), "odd")
	l.Trace("trace line", "mode", hclog.Octal(8), "bits", hclog.Binary(5), "q", hclog.Quote("a\"b"))
	l.StandardLogger(nil).Printf("[WARN] a standard logger line %d", 7)

	want := []map[string]any{
		{"msg": "initial configuration", "logger": "raft", "index": 1.0, "servers": "[{ID:n1 Address:mem:n1} {ID:n2 Address:mem:n2}]"},
		{"msg": "failed", "level": "WARN", "logger": "raft.transport", "peer": "n2", "error": "boom", "flags": "0xff", hclog.MissingKey: "odd"},
		{"msg": "trace line", "mode": "010", "bits": "0b101", "q": `"a\"b"`},
		{"msg": "[WARN] a standard logger line 7"},
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if strings.Contains(line, "%+v") {
			t.Errorf("line %d holds a format placeholder: %s", i, line)
		}
		for k, v := range want[i] {
			if got[k] != v {
				t.Errorf("line %d: %s = %#v, want %#v (%s)", i, k, got[k], v, line)
			}
		}
	}
}
