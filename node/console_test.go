package node

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// The console's page loads without a token and shows the login form; the
// token in the URL sets an HttpOnly, Secure, SameSite=Strict cookie (not
// the token itself) and redirects to the clean URL; the cookie then
// stands for the token on GETs, never on a request that changes state; a
// wrong token sets nothing. Every console response carries the security
// headers.
func TestConsoleLoginAndCookie(t *testing.T) {
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
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<form method="get" action="/"`) || !strings.Contains(body, `src="/console.js"`) ||
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

	resp, _ := get("/?token=wrong", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/#wrong-token" || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong token: %d to %q, cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	resp, _ = get("/jobs/job-1?token="+testToken, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/jobs/job-1" || len(resp.Cookies()) != 1 {
		t.Fatalf("the token in the URL: %d to %q, cookies %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	c := resp.Cookies()[0]
	if c.Name != consoleCookie || !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != "/" ||
		c.Value == "" || strings.Contains(c.Value, testToken) {
		t.Errorf("cookie %+v", c)
	}
	if resp, body := get("/v1/status", c); resp.StatusCode != http.StatusOK || !strings.Contains(body, `"self": "n1"`) {
		t.Errorf("status with the cookie: %d %s", resp.StatusCode, body)
	}
	if resp, _ := get("/v1/status", &http.Cookie{Name: consoleCookie, Value: consoleSession("another token")}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status with another API's cookie: %d", resp.StatusCode)
	}
	// A write needs the bearer token, whatever cookie it carries.
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.Addr()+"/v1/poke", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.AddCookie(c)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a POST with the cookie only: %v %v, want 401", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}
	if resp, body, err := do(a, http.MethodPost, "/v1/poke", "{}", nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("a POST with the token: %v %v %s", resp.StatusCode, err, body)
	}
}
