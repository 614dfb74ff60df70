// Package web is the dev stack's demo page: a plain HTML + CSS + JavaScript frontend (no build
// step, no external assets) that walks a person through enrolling an authenticator app against
// the HTTP API — dev token, initiation, QR, live status, typed code or companion CLI, devices —
// and an email address or a phone number, whose codes the dev inbox shows — and shows the
// user's MFA state, which it can switch off with a fresh second factor or the emailed link (the
// link opens this page with ?token=…). Passkeys are added and sign in through the browser's
// own WebAuthn (navigator.credentials with the JSON helpers); at an IP address, which cannot be
// an RP ID, the page points to localhost instead.
//
// It is a client of the public API like any other frontend and talks to nothing else.
package web

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"

	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/pkg/httpx"
)

//go:embed static
var files embed.FS

// ContentSecurityPolicy is sent with every response of the page: only same-origin scripts,
// styles and requests (plus websockets), data: images for the QR, nothing inline, no framing.
const ContentSecurityPolicy = "default-src 'self'; img-src 'self' data:; connect-src 'self' ws: wss:; " +
	"script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; " +
	"frame-ancestors 'none'"

// Handler serves the page: GET / is index.html and GET /static/… the stylesheet, script and
// icon. Mount it with the full path (no prefix stripping) on "GET /{$}" and "GET /static/".
func Handler() http.Handler {
	static := http.FileServerFS(files)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			httpx.WriteProblem(w, r, fault.New(fault.UnsupportedMethod, r.Method+" is not supported on this route"))
			return
		}
		p := r.URL.Path
		switch {
		case p == "/":
			http.ServeFileFS(w, r, files, "static/index.html")
		case strings.HasPrefix(p, "/static/") && !strings.HasSuffix(p, "/") && exists(path.Clean(p)):
			static.ServeHTTP(w, r)
		default:
			// Directories are not listed; anything else is not part of the page.
			httpx.WriteProblem(w, r, fault.New(fault.NotFound, "no such route"))
		}
	})
}

func exists(p string) bool {
	fi, err := fs.Stat(files, strings.TrimPrefix(p, "/"))
	return err == nil && !fi.IsDir()
}
