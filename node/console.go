package node

import (
	"embed"
	"net/http"
	"net/url"
	"strings"
)

// The web console: one page, served by every node's API at / (and at
// /jobs/{id}, a job's page), that draws the cluster from the API's JSON,
// polled: members, the epoch, datasets, jobs with their loss curves. Its
// HTML, CSS and JavaScript are embedded in the binary: no external asset,
// no build step, and it works offline.
//
// Authentication is the API's, and there is no cookie: the page and its
// assets load without a token (they hold no data) and show a login form;
// the data come from the API, which the page's script calls with
// "Authorization: Bearer" like any client. The token reaches the script in
// the URL's fragment (/#token=..., which the browser never sends to the
// server, so it lands in no access log) or through the login form; the
// script keeps it in sessionStorage (per tab, and per origin, so per port:
// another server on the same host cannot read it, as it could a cookie,
// which ignores ports), takes it out of the address bar, and forgets it on
// "log out" or when the tab closes. A page of another origin cannot make
// the browser send the header. An old /?token=... URL is answered with a
// redirect to the clean URL (the token in it is ignored, never checked).

//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

// consoleCSP allows the page its own script, styles and API only: no inline
// script (the JavaScript is a file of its own), no other origin, no
// framing.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// consoleAsset reports whether path is part of the console's page, which
// loads without a token.
func consoleAsset(path string) bool {
	switch path {
	case "/", "/console.js", "/console.css", "/favicon.ico":
		return true
	}
	return strings.HasPrefix(path, "/jobs/") && !strings.Contains(path[len("/jobs/"):], "/")
}

// consoleRoutes serves the console's page at / and /jobs/{id}, and its
// script and style sheet.
func consoleRoutes(mux *http.ServeMux) {
	page := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("token") {
			// The token of an old console URL, or of a form without the
			// script: take it out of the address bar (and of the history: the
			// redirect replaces the entry). It logs nothing in: the token
			// belongs in the fragment, which the server never sees.
			consoleHeaders(w)
			http.Redirect(w, r, (&url.URL{Path: r.URL.Path, Fragment: "token-in-query"}).String(), http.StatusSeeOther)
			return
		}
		serveConsoleFile(w, "console/index.html", "text/html; charset=utf-8")
	}
	mux.HandleFunc("GET /{$}", page)
	mux.HandleFunc("GET /jobs/{id}", page)
	mux.HandleFunc("GET /console.js", func(w http.ResponseWriter, r *http.Request) {
		serveConsoleFile(w, "console/console.js", "text/javascript; charset=utf-8")
	})
	mux.HandleFunc("GET /console.css", func(w http.ResponseWriter, r *http.Request) {
		serveConsoleFile(w, "console/console.css", "text/css; charset=utf-8")
	})
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		consoleHeaders(w)
		w.WriteHeader(http.StatusNoContent) // no icon, and no 401 in the browser's console for asking
	})
}

// consoleHeaders sets the console's security headers.
func consoleHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", consoleCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store") // the page changes with the binary; it is small
}

func serveConsoleFile(w http.ResponseWriter, name, contentType string) {
	b, err := consoleFiles.ReadFile(name)
	if err != nil { // cannot happen: the files are embedded
		http.Error(w, "braid: console file "+name+" missing from the binary", http.StatusInternalServerError)
		return
	}
	consoleHeaders(w)
	w.Header().Set("Content-Type", contentType)
	w.Write(b)
}
