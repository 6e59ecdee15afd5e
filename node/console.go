package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
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
// Authentication is the API's: the page itself loads without a token and
// shows a login form, and its data come from the API. A browser cannot
// send a bearer header on a navigation, so the token given once in the URL
// (/?token=..., or through the login form, which does the same) sets a
// cookie, and the API accepts that cookie in place of the header, for
// GET and HEAD requests only. Everything that changes state stays
// bearer-only: a page of another origin can make the browser send the
// cookie (SameSite=Strict aside), never the header. The cookie is HttpOnly
// (the page's script cannot read it), Secure and SameSite=Strict, and holds
// a value derived from the token (consoleSession), not the token itself.

//go:embed console/index.html console/console.js console/console.css
var consoleFiles embed.FS

// consoleCookie is the name of the console's session cookie.
const consoleCookie = "braid_console"

// consoleCSP allows the page its own script, styles and API only: no inline
// script (the JavaScript is a file of its own), no other origin, no
// framing.
const consoleCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// consoleSession is the cookie value that stands for token: an HMAC of a
// fixed label under it, so that the cookie, should it leak, is no bearer
// token, and so that changing the token ends every session.
func consoleSession(token string) string {
	mac := hmac.New(sha256.New, []byte(token))
	mac.Write([]byte("braid console session v1"))
	return hex.EncodeToString(mac.Sum(nil))
}

// consoleAsset reports whether path is part of the console's page, which
// loads without a token.
func consoleAsset(path string) bool {
	switch path {
	case "/", "/console.js", "/console.css", "/favicon.ico":
		return true
	}
	return strings.HasPrefix(path, "/jobs/") && !strings.Contains(path[len("/jobs/"):], "/")
}

// hasConsoleSession reports whether r carries the console's cookie for
// token.
func hasConsoleSession(r *http.Request, session string) bool {
	c, err := r.Cookie(consoleCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) == 1
}

// consoleRoutes serves the console's page at / and /jobs/{id}, and its
// script and style sheet.
func consoleRoutes(mux *http.ServeMux, token string) {
	session := consoleSession(token)
	page := func(w http.ResponseWriter, r *http.Request) {
		if q := r.URL.Query(); q.Has("token") {
			// Log in, and take the token out of the address bar (and of the
			// history: the redirect replaces the entry).
			clean := url.URL{Path: r.URL.Path}
			if subtle.ConstantTimeCompare([]byte(q.Get("token")), []byte(token)) == 1 {
				http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: session, Path: "/", HttpOnly: true, Secure: true,
					SameSite: http.SameSiteStrictMode})
			} else {
				clean.Fragment = "wrong-token"
			}
			consoleHeaders(w)
			http.Redirect(w, r, clean.String(), http.StatusSeeOther)
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
