package node

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/braidml/braid/coordinator"
)

// TestReadiness: each condition of Ready on its own makes a node unready,
// with a reason that names it.
func TestReadiness(t *testing.T) {
	now := time.Unix(1000, 0)
	joined := coordinator.Status{Leader: "n1", CommitIndex: 10, AppliedIndex: 10,
		Servers: []coordinator.ServerStatus{{Name: "n1"}, {Name: "n2"}}}
	for _, tc := range []struct {
		name        string
		self        string
		mod         func(*coordinator.Status)
		leader      bool
		lastContact time.Time
		want        string // "" for ready
	}{
		{"follower, current", "n2", nil, false, now.Add(-100 * time.Millisecond), ""},
		{"leader", "n1", nil, true, time.Time{}, ""},
		{"not joined", "n3", nil, false, now, "not joined"},
		{"no leader", "n2", func(s *coordinator.Status) { s.Leader = "" }, false, now, "no leader"},
		{"behind", "n2", func(s *coordinator.Status) { s.AppliedIndex = 7 }, false, now, "applied 7 of 10"},
		{"no contact", "n2", nil, false, now.Add(-2 * time.Second), "last contact from leader n1 2s ago"},
		{"never heard", "n2", nil, false, time.Time{}, "never"},
	} {
		cs := joined
		cs.Servers = append([]coordinator.ServerStatus{}, joined.Servers...)
		if tc.mod != nil {
			tc.mod(&cs)
		}
		err := readiness(tc.self, cs, tc.leader, tc.lastContact, now, time.Second)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want ready", tc.name, err)
		case tc.want != "" && (!errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want ErrNotReady saying %q", tc.name, err, tc.want)
		}
	}
}

// TestAPIReadyRoute: GET /v1/ready needs no token and answers 200 or 503
// with the reason, as APIConfig.Ready says.
func TestAPIReadyRoute(t *testing.T) {
	var notReady error = errors.New("node: not ready: catching up")
	a := startTestAPI(t, APILimits{}, nil)
	a2, err := StartAPI(APIConfig{Addr: "127.0.0.1:0", Token: testToken, Ready: func() error { return notReady }},
		func() Status { return Status{} }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close(t.Context())
	noToken := http.Header{"Authorization": nil}
	if resp, body, err := do(a, "GET", "/v1/ready", "", noToken); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("an API without Ready: %v %v %q, want 404", err, resp.Status, body)
	}
	resp, body, err := do(a2, "GET", "/v1/ready", "", noToken)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"reason": "node: not ready: catching up"`) {
		t.Errorf("not ready: %v %v %q, want 503 with the reason", err, resp.Status, body)
	}
	notReady = nil
	if resp, body, err := do(a2, "GET", "/v1/ready", "", noToken); err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(body, `"ready": true`) {
		t.Errorf("ready: %v %v %q, want 200", err, resp.Status, body)
	}
}
