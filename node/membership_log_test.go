package node

import (
	"bytes"
	"encoding/json"
	"log"
	"log/slog"
	"strings"
	"testing"
)

// TestMemberlistLogsAsJSON: memberlist's log lines reach a JSON handler as
// one object each, at their own level, the "[LEVEL] memberlist: " tag
// dropped from the message.
func TestMemberlistLogsAsJSON(t *testing.T) {
	var buf bytes.Buffer
	l := log.New(slogWriter{l: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("component", "memberlist")}, "", 0)
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: %s)", "n3")
	l.Printf("[ERR] memberlist: Failed to send ping: %s", `write "x": closed`)
	l.Printf("[DEBUG] memberlist: Stream connection from=127.0.0.1:1")
	want := []struct{ level, msg string }{
		{"WARN", "Refuting a suspect message (from: n3)"},
		{"ERROR", `Failed to send ping: write "x": closed`},
		{"DEBUG", "Stream connection from=127.0.0.1:1"},
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, line := range lines {
		var rec struct{ Level, Msg, Component string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i, err, line)
		}
		if rec.Level != want[i].level || rec.Msg != want[i].msg || rec.Component != "memberlist" {
			t.Errorf("line %d: %+v, want level %s and msg %q", i, rec, want[i].level, want[i].msg)
		}
	}
}
