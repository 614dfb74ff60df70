package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/devstack/web"
	"github.com/mfaflow/mfaflow/pkg/httpx"
)

func get(t *testing.T, h http.Handler, method, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	res := rec.Result()
	body, _ := io.ReadAll(res.Body)
	return res, string(body)
}

func TestHandlerServesPage(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `<script type="module" src="/static/app.js">`},
		{"/static/app.js", "text/javascript", "new EventSource("},
		{"/static/app.css", "text/css", "@media (max-width: 600px)"},
		{"/static/favicon.svg", "image/svg+xml", "<svg"},
	} {
		res, body := get(t, h, http.MethodGet, tc.path)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", tc.path, res.StatusCode)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
			t.Errorf("GET %s: content type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		if got := res.Header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("GET %s: Cache-Control %q", tc.path, got)
		}
		if got := res.Header.Get("Content-Security-Policy"); got != web.ContentSecurityPolicy {
			t.Errorf("GET %s: CSP %q", tc.path, got)
		}
	}
}

func TestCSPIsStrict(t *testing.T) {
	csp := web.ContentSecurityPolicy
	for _, want := range []string{"default-src 'self'", "img-src 'self' data:", "connect-src 'self' ws: wss:", "script-src 'self'", "style-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP lacks %q", want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %s", csp)
	}
}

func TestNoInlineScriptOrStyle(t *testing.T) {
	_, body := get(t, web.Handler(), http.MethodGet, "/")
	for _, bad := range []string{"<style", " style=", "onclick=", "onload=", "<script>"} {
		if strings.Contains(body, bad) {
			t.Errorf("index.html contains %q, which the CSP blocks", bad)
		}
	}
}

func TestHandlerRefuses(t *testing.T) {
	h := web.Handler()
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/static/", http.StatusNotFound},
		{http.MethodGet, "/static/nope.js", http.StatusNotFound},
		{http.MethodGet, "/static/../web.go", http.StatusNotFound},
		{http.MethodGet, "/elsewhere", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
	} {
		res, _ := get(t, h, tc.method, tc.path)
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
		if ct := res.Header.Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s %s: content type %q, want problem+json", tc.method, tc.path, ct)
		}
	}
}

func TestHead(t *testing.T) {
	res, body := get(t, web.Handler(), http.MethodHead, "/")
	if res.StatusCode != http.StatusOK || body != "" {
		t.Fatalf("HEAD /: status %d, body %q", res.StatusCode, body)
	}
}

// TestMountOnRouter mounts the handler the way the dev stack does, next to an API route.
func TestMountOnRouter(t *testing.T) {
	rt := httpx.NewRouter()
	rt.HandleFunc("GET /device-srv/devices", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := web.Handler()
	rt.Handle("GET /{$}", h)
	rt.Handle("GET /static/", h)
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{http.MethodGet, "/", http.StatusOK},
		{http.MethodHead, "/", http.StatusOK},
		{http.MethodGet, "/static/app.js", http.StatusOK},
		{http.MethodGet, "/device-srv/devices", http.StatusTeapot},
		{http.MethodGet, "/no-such-route", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
	} {
		res, _ := get(t, rt, tc.method, tc.path)
		if res.StatusCode != tc.status {
			t.Errorf("%s %s: status %d, want %d", tc.method, tc.path, res.StatusCode, tc.status)
		}
	}
}

// TestPageHasSignInAndRecovery: the page carries the recovery-code and sign-in sections, each
// with its own polite live region, and the script decodes the mfa_token in the browser.
func TestPageHasSignInAndRecovery(t *testing.T) {
	h := web.Handler()
	_, page := get(t, h, http.MethodGet, "/")
	for _, want := range []string{`id="recovery"`, `id="codes-announce" class="visually-hidden" aria-live="polite"`,
		`id="signin"`, `id="signin-announce" class="visually-hidden" aria-live="polite"`, `for="signin-code"`,
		`id="lock-countdown"`, `href="/.well-known/jwks.json"`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	_, js := get(t, h, http.MethodGet, "/static/app.js")
	for _, want := range []string{"/verification-srv/authentication/", "/verification-srv/backupcodes", "new TextDecoder()", "URL.createObjectURL(new Blob(", "Retry-After"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestPageHasPushSignIn: the page carries the push sign-in with its own polite live region, the
// companion commands for a push-capable device, and the script starts push sign-ins.
func TestPageHasPushSignIn(t *testing.T) {
	h := web.Handler()
	_, page := get(t, h, http.MethodGet, "/")
	for _, want := range []string{`id="push"`, `id="push-start"`, `id="push-number"`,
		`id="push-announce" class="visually-hidden" aria-live="polite"`,
		`companion enroll --qr qr.png --device alice.device`, `companion listen --device alice.device`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	_, js := get(t, h, http.MethodGet, "/static/app.js")
	for _, want := range []string{"/verification-srv/authentication/push/initiation", "PUSH_ACKNOWLEDGED", "--device ${deviceFile(sub)}"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestPageHasStepUp: the page carries the step-up prompt (a code from the app or a recovery
// code), and the script answers step_up_required with a STEP_UP sign-in and X-MFA-Token.
func TestPageHasStepUp(t *testing.T) {
	h := web.Handler()
	_, page := get(t, h, http.MethodGet, "/")
	for _, want := range []string{`id="stepup" class="stepup" role="group" aria-labelledby="stepup-title" hidden`,
		`Confirm it's you: enter a code from your authenticator app`, `for="stepup-code"`,
		`name="stepup-method" id="stepup-method-totp" value="totp" checked`, `id="stepup-method-backupcode"`,
		`id="stepup-cancel"`, `id="stepup-error" class="error" role="alert"`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	_, js := get(t, h, http.MethodGet, "/static/app.js")
	for _, want := range []string{"'step_up_required'", "{ usage_type: 'STEP_UP' }", "'X-MFA-Token': mfaToken"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestPageHasCodesByEmailAndSMS: the page adds an email address or a phone number (with a
// region, DE by default), shows where each code went with its delivery state, a new code on
// request and the way to the dev inbox, and signs in and steps up with sent codes.
func TestPageHasCodesByEmailAndSMS(t *testing.T) {
	h := web.Handler()
	_, page := get(t, h, http.MethodGet, "/")
	for _, want := range []string{`id="oob"`, `id="email-form"`, `for="email"`, `id="email-add"`, `id="phone-form"`, `for="phone"`,
		`id="phone-region" name="region" class="mono region" value="DE"`, `id="phone-add"`, `for="oob-code"`,
		`id="oob-announce" class="visually-hidden" aria-live="polite"`, `id="oob-error" class="error" role="alert"`,
		`id="method-email" value="email"`, `id="method-sms" value="sms"`, `id="stepup-method-email" value="email"`, `id="stepup-method-sms" value="sms"`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	// Each place a code is sent to shows the same block.
	for _, prefix := range []string{"oob-", "signin-", "stepup-"} {
		for _, want := range []string{`id="` + prefix + `sent"`, `id="` + prefix + `destination"`, `id="` + prefix + `delivery"`,
			`id="` + prefix + `resend"`, `href="/dev/inbox"`, "open the dev inbox to read the code"} {
			if !strings.Contains(page, want) {
				t.Errorf("index.html lacks %s in the %ssent block", want, prefix)
			}
		}
	}
	_, js := get(t, h, http.MethodGet, "/static/app.js")
	for _, want := range []string{"/verification-srv/v2/setup/initiate/${method}", "/verification-srv/v2/setup/enroll/${cur.method}",
		"/verification-srv/v2/setup/resend/${method}", "/verification-srv/authentication/${method}/resend", "/verification-srv/config/list",
		"res.resend_after", "e.retryAfter", "s.delivery"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestPageHasPasskeys: the page carries the passkey card with its own polite live region, and
// the script runs the ceremonies with the browser's JSON helpers against the webauthn routes.
func TestPageHasPasskeys(t *testing.T) {
	h := web.Handler()
	_, page := get(t, h, http.MethodGet, "/")
	for _, want := range []string{`id="passkey"`, `id="passkey-add"`, `id="passkey-signin"`, `for="passkey-name"`,
		`id="passkey-availability"`, `id="passkey-error" class="error" role="alert"`,
		`id="passkey-announce" class="visually-hidden" aria-live="polite"`, `id="passkey-claims-payload"`,
		`id="stepup-method-webauthn" value="webauthn"`} {
		if !strings.Contains(page, want) {
			t.Errorf("index.html lacks %s", want)
		}
	}
	_, js := get(t, h, http.MethodGet, "/static/app.js")
	for _, want := range []string{"PublicKeyCredential.parseCreationOptionsFromJSON(res.public_key)",
		"PublicKeyCredential.parseRequestOptionsFromJSON(res.public_key)", "navigator.credentials.create(", "navigator.credentials.get(",
		"credential.toJSON()", "/verification-srv/v2/setup/initiate/webauthn", "/verification-srv/v2/setup/enroll/webauthn",
		"/verification-srv/authentication/webauthn/initiation", "/verification-srv/authentication/webauthn/verification",
		"for passkeys", "{ usage_type: 'STEP_UP' }, token)"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}
