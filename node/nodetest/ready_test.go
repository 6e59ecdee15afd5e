package nodetest

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"
)

// TestReady: /v1/ready answers without the token; every node of a cluster
// that has formed is ready; a node cut off from the others becomes
// unready, with a reason, and ready again once the network heals.
func TestReady(t *testing.T) {
	c := NewCluster(t, 3, WithAPI())
	c.WaitLeader()
	ready := func(name string) (int, map[string]any) {
		t.Helper()
		n := c.Node(name)
		req, _ := http.NewRequest(http.MethodGet, n.APIURL()+"/v1/ready", nil) // no token
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			t.Fatalf("%s: /v1/ready answered %s %q, not JSON", name, resp.Status, b)
		}
		return resp.StatusCode, body
	}
	for _, name := range []string{"n1", "n2", "n3"} {
		c.waitFor(name+" ready", func() bool { return c.Node(name).Ready() == nil })
		if code, body := ready(name); code != http.StatusOK || body["ready"] != true {
			t.Fatalf("%s: %d %v, want 200 and ready", name, code, body)
		}
	}

	cut := c.Follower("n3", "n2")
	others := []string{"n1", "n2", "n3"}
	for i, o := range others {
		if o == cut {
			others = append(others[:i], others[i+1:]...)
			break
		}
	}
	c.Partition([]string{cut}, others)
	c.waitFor(cut+" unready", func() bool { return c.Node(cut).Ready() != nil })
	code, body := ready(cut)
	if reason, _ := body["reason"].(string); code != http.StatusServiceUnavailable || body["ready"] != false || reason == "" {
		t.Fatalf("%s cut off: %d %v, want 503 with a reason", cut, code, body)
	}
	t.Logf("%s cut off: %v", cut, body["reason"])
	c.Heal()
	c.waitFor(cut+" ready again", func() bool { return c.Node(cut).Ready() == nil })
}
