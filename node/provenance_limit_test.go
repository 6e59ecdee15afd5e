package node

import (
	"net/http"
	"strings"
	"sync"
	"testing"
)

// A node builds at most maxProvenanceBuilds provenance records at once
// (each may load and merge the model, write store objects and sign): one
// more request is refused at once with 429, Retry-After and a message that
// says why, and takes no slot; a freed slot is taken again.
func TestProvenanceBuildsAreBounded(t *testing.T) {
	var s buildSlots
	for i := 0; i < maxProvenanceBuilds; i++ {
		if !s.tryAcquire(maxProvenanceBuilds) {
			t.Fatalf("slot %d refused", i)
		}
	}
	if s.tryAcquire(maxProvenanceBuilds) {
		t.Fatalf("slot %d granted, want at most %d", maxProvenanceBuilds+1, maxProvenanceBuilds)
	}
	s.release()
	if !s.tryAcquire(maxProvenanceBuilds) {
		t.Fatal("a released slot is not granted again")
	}

	// Concurrent takers: never more than the bound granted.
	var c buildSlots
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.tryAcquire(maxProvenanceBuilds) {
				mu.Lock()
				granted++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if granted != maxProvenanceBuilds {
		t.Errorf("%d of 16 concurrent takers granted, want %d", granted, maxProvenanceBuilds)
	}

	// The route: with every slot taken (two builds running), a third
	// request is refused before it loads anything.
	n := &Node{}
	a := startTestAPI(t, APILimits{}, n.provenanceRoutes)
	for i := 0; i < maxProvenanceBuilds; i++ {
		n.provBuilds.tryAcquire(maxProvenanceBuilds)
	}
	for _, path := range []string{"/v1/jobs/job-1/provenance", "/v1/jobs/job-1/provenance?merged=1"} {
		resp, body, err := do(a, http.MethodGet, path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" ||
			!strings.Contains(body, "provenance records") || !strings.Contains(body, "retry") {
			t.Errorf("GET %s with %d builds running: %d %q (Retry-After %q), want 429", path, maxProvenanceBuilds,
				resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	if n.provBuilds.busy != maxProvenanceBuilds {
		t.Errorf("%d slots taken after the refusals, want %d (a refused request takes none)", n.provBuilds.busy, maxProvenanceBuilds)
	}
}
