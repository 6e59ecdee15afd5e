package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
)

// The console's page loads without a token and shows the login form,
// which sends nothing to the server (the script keeps the token); an old
// /?token=... URL is redirected to the clean URL and logs nothing in; no
// cookie stands for the token anywhere: the API's GETs need the bearer
// header, and the cookie the console used to set (an HMAC of a fixed
// label under the token) is refused. Every console response carries the
// security headers.
func TestConsoleLoginWithoutCookie(t *testing.T) {
	a := startTestAPI(t, APILimits{}, func(mux *http.ServeMux) {
		mux.HandleFunc("POST /v1/poke", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, "poked") })
	})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string, cookie *http.Cookie) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "http://"+a.Addr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	checkHeaders := func(what string, resp *http.Response) {
		t.Helper()
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe-inline") ||
			resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: security headers %v", what, resp.Header)
		}
	}

	for _, path := range []string{"/", "/jobs/job-1"} {
		resp, body := get(path, nil)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<form id="login-form" action="#"`) ||
			!strings.Contains(body, `id="login-token"`) || strings.Contains(body, `name="token"`) || !strings.Contains(body, `src="/console.js"`) ||
			strings.Contains(body, "<script>") {
			t.Errorf("GET %s without a token: %d\n%s", path, resp.StatusCode, body)
		}
		checkHeaders(path, resp)
	}
	for path, ctype := range map[string]string{"/console.js": "text/javascript", "/console.css": "text/css"} {
		resp, body := get(path, nil)
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) < 100 {
			t.Errorf("GET %s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
		checkHeaders(path, resp)
	}
	if resp, _ := get("/v1/status", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status without a token or cookie: %d", resp.StatusCode)
	}
	if resp, _ := get("/jobs/job-1/other", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a path below a job's page: %d, want 401 (only the page is public)", resp.StatusCode)
	}

	for _, tok := range []string{"wrong", testToken} {
		resp, _ := get("/jobs/job-1?token="+tok, nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/job-1#token-in-query" || len(resp.Cookies()) != 0 {
			t.Errorf("a token in the query: %d to %q, cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
		}
	}
	// The cookie of the console before: it was the same on every port of
	// the host, so any local server the browser visited received it.
	mac := hmac.New(sha256.New, []byte(testToken))
	mac.Write([]byte("braid console session v1"))
	old := &http.Cookie{Name: "braid_console", Value: hex.EncodeToString(mac.Sum(nil))}
	for _, path := range []string{"/v1/status", "/v1/jobs", "/v1/jobs/job-1/provenance?merged=1"} {
		if resp, _ := get(path, old); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with the old console cookie: %d, want 401", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+a.Addr()+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("status with the bearer header: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if resp, body, err := do(a, http.MethodPost, "/v1/poke", "{}", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a POST with the token: %v %v %s", resp.StatusCode, err, body)
	}
}
