package tests_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestDemoPagePasskeys drives the demo page's passkeys in headless Chromium with the DevTools
// protocol's virtual authenticator, so the browser's own WebAuthn implementation — the JSON
// helpers PublicKeyCredential.parseCreationOptionsFromJSON / parseRequestOptionsFromJSON and
// credential.toJSON() included — talks to mfaflow: opened at 127.0.0.1 the card points to
// localhost instead of offering the buttons; at localhost "Add a passkey" enrolls one (ENROLLED,
// and the device list shows it as a passkey), "Sign in with a passkey" authenticates with amr
// hwk+user, and with the authenticator's credentials gone the page shows the browser's refusal
// (in the card, and in the "Confirm it's you" prompt that new recovery codes need) and still
// works once they are back: the prompt takes the passkey, and the card signs in again.
//
// Passkeys are bound to a domain name, so the stack listens on a port picked up front and its
// relying party is localhost with the origin http://localhost:<port>.
func TestDemoPagePasskeys(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium not installed (apt-get install chromium); browser test skipped")
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	origin := "http://localhost:" + port
	st := harness.Start(t, harness.Options{SweepInterval: 50 * time.Millisecond}, map[string]string{
		"MFA_HTTP_ADDR":         addr,
		"MFA_WEBAUTHN_RP_ID":    "localhost",
		"MFA_WEBAUTHN_ORIGINS":  origin,
		"MFA_LOCKOUT_THRESHOLD": "5",
	})
	b := startBrowser(t, chromium)
	ctx, console, do, eval, screenshot := b.ctx, b.console, b.do, b.eval, b.screenshot
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	attempts := 0
	// answered waits for the page to finish one more passkey action (it counts them).
	answered := func(what string) {
		t.Helper()
		attempts++
		poll(what+": the page has the answer", fmt.Sprintf(`document.getElementById('passkey-controls').dataset.attempts === '%d'`, attempts))
	}

	// 1. At 127.0.0.1 (an IP address cannot be an RP ID) the card says where passkeys work.
	do("open the page at 127.0.0.1",
		chromedp.Navigate(st.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.CSS(`#passkey-availability[data-available="false"][data-reason="ip"]`)),
		chromedp.WaitNotVisible(chromedp.ID("passkey-add")),
		chromedp.WaitNotVisible(chromedp.ID("passkey-signin")),
	)
	link := mustText(t, ctx, "#passkey-localhost-link")
	if want := "open " + origin + " for passkeys"; link != want {
		t.Errorf("the card at 127.0.0.1 says %q, want %q", link, want)
	}
	var href string
	eval("read the localhost link", `document.getElementById('passkey-localhost-link').href`, &href)
	if href != origin+"/" {
		t.Errorf("localhost link %q, want %q", href, origin+"/")
	}

	// 2. A virtual authenticator: a platform authenticator with resident keys that verifies the
	// user and touches itself (no prompt waits for a person).
	if _, err := chromedp.Call(ctx, webauthn.Enable, webauthn.EnableParams{}); err != nil {
		t.Fatalf("WebAuthn.enable: %v", err)
	}
	va, err := chromedp.Call(ctx, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
		Options: &webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
			Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true,
			IsUserVerified: true, AutomaticPresenceSimulation: true,
		},
	})
	if err != nil {
		t.Fatalf("WebAuthn.addVirtualAuthenticator: %v", err)
	}
	authenticator := va.AuthenticatorID

	// 3. At localhost the buttons are there.
	do("open the page at localhost",
		chromedp.Navigate(origin+"/"),
		chromedp.WaitVisible(chromedp.ID("passkey-add")),
		chromedp.WaitVisible(chromedp.ID("passkey-signin")),
		chromedp.Evaluate[chromedp.Void](`window.__noReload = true`),
	)
	user := fmt.Sprintf("passkey-%d", time.Now().UnixNano())

	// 4. Add a passkey: the user's first factor, so no step-up.
	do("add a passkey",
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.Click(chromedp.ID("passkey-add")),
	)
	answered("add a passkey")
	do("see ENROLLED and the passkey listed",
		chromedp.WaitVisible(chromedp.CSS(`#passkey-status[data-status="ENROLLED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#devices li[data-type="WEBAUTHN"] .device-name`)),
	)
	if e := mustText(t, ctx, "#passkey-error"); e != "" {
		t.Errorf("error shown after enrolling: %q", e)
	}
	pollText(t, ctx, console, "#passkey-success", "Done! A passkey of "+user+" is registered: sign in with it below.")
	pollText(t, ctx, console, `#devices li[data-type="WEBAUTHN"] .device-name`, "Passkey")
	pollText(t, ctx, console, `#devices li[data-type="WEBAUTHN"] .passkey-tag`, "Passkey")
	pollText(t, ctx, console, "#mfa-methods", "Passkey")
	screenshot("passkey-enrolled.png")

	held, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authenticator})
	if err != nil {
		t.Fatalf("WebAuthn.getCredentials: %v", err)
	}
	if len(held.Credentials) != 1 || !held.Credentials[0].IsResidentCredential || held.Credentials[0].RpID != "localhost" {
		t.Fatalf("the authenticator holds %+v, want one resident credential for localhost", held.Credentials)
	}
	var devices []struct {
		PHID         string `json:"ph_id"`
		Type         string `json:"type"`
		FriendlyName string `json:"friendly_name"`
		BackedUp     *bool  `json:"backed_up"`
	}
	st.MustJSON(t, http.MethodGet, "/device-srv/devices", st.Token(t, user), nil, http.StatusOK, &devices)
	if len(devices) != 1 || devices[0].Type != "WEBAUTHN" || devices[0].FriendlyName != "Passkey" || devices[0].BackedUp == nil {
		t.Fatalf("the registry holds %+v, want one passkey named Passkey", devices)
	}
	var shown struct{ PHID, Backup string }
	eval("read the listed passkey", `(() => { const li = document.querySelector('#devices li[data-type="WEBAUTHN"]');
		return {PHID: li.dataset.phId, Backup: li.querySelector('.passkey-backup').textContent}; })()`, &shown)
	if shown.PHID != devices[0].PHID || shown.Backup != "on this authenticator only" {
		t.Errorf("the page lists %+v for %+v", shown, devices[0])
	}

	// 5. Sign in with the passkey: AUTHENTICATED, and the mfa_token says hwk + user.
	signIn := func(what string) {
		t.Helper()
		do(what, chromedp.Click(chromedp.ID("passkey-signin")))
		answered(what)
		do(what+": AUTHENTICATED",
			chromedp.WaitVisible(chromedp.CSS(`#passkey-status[data-status="AUTHENTICATED"]`)),
			chromedp.WaitVisible(chromedp.ID("passkey-claims-payload")),
		)
		pollText(t, ctx, console, "#passkey-success", "Authenticated as "+user+" with a passkey.")
		var claims struct {
			Sub string   `json:"sub"`
			AMR []string `json:"amr"`
		}
		if err := json.Unmarshal([]byte(mustText(t, ctx, "#passkey-claims-payload")), &claims); err != nil {
			t.Fatalf("%s: decoded claims: %v", what, err)
		}
		if claims.Sub != user || !slices.Equal(claims.AMR, []string{"hwk", "user"}) {
			t.Errorf("%s: claims %+v, want sub %s and amr [hwk user]", what, claims, user)
		}
	}
	signIn("sign in with the passkey")
	screenshot("passkey-signed-in.png")

	// 6. The authenticator loses its credentials: the browser gives no passkey, the page says so
	// (and cancels the sign-in it started), and nothing else breaks.
	saved, err := chromedp.Call(ctx, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authenticator})
	if err != nil || len(saved.Credentials) != 1 {
		t.Fatalf("WebAuthn.getCredentials: %+v, %v", saved, err)
	}
	if _, err := chromedp.Call(ctx, webauthn.ClearCredentials, webauthn.ClearCredentialsParams{AuthenticatorID: authenticator}); err != nil {
		t.Fatalf("WebAuthn.clearCredentials: %v", err)
	}
	do("sign in without a credential", chromedp.Click(chromedp.ID("passkey-signin")))
	answered("sign in without a credential")
	do("see the browser's refusal",
		chromedp.WaitVisible(chromedp.CSS(`#passkey-error[data-code="not_allowed"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#passkey-status[data-status="CANCELLED"]`)),
	)
	if e := mustText(t, ctx, "#passkey-error"); !strings.Contains(e, "The browser gave no passkey") {
		t.Errorf("the error says %q", e)
	}
	pollText(t, ctx, console, "#passkey-status-text", "Cancelled: nobody was signed in. Try again whenever you like.")
	var state struct {
		Disabled, DoneHidden bool
		NoReload             bool
	}
	eval("read the card after the refusal", `({Disabled: document.getElementById('passkey-signin').disabled,
		DoneHidden: document.getElementById('passkey-done').hidden, NoReload: window.__noReload === true})`, &state)
	if state.Disabled || !state.DoneHidden || !state.NoReload {
		t.Errorf("after the refusal: %+v, want the button on, no claims, no reload", state)
	}
	screenshot("passkey-refused.png")

	// 6b. New recovery codes need step-up; the prompt offers the user's passkey first (their
	// default method), and the refusal leaves it open for another try.
	do("ask for recovery codes",
		chromedp.Click(chromedp.ID("codes-regen")),
		chromedp.Click(chromedp.ID("codes-confirm-yes")),
		chromedp.WaitVisible(chromedp.CSS(`#recovery #stepup`)),
		chromedp.WaitVisible(chromedp.ID("stepup-method-webauthn")),
		chromedp.WaitNotVisible(chromedp.ID("stepup-code")),
	)
	pollText(t, ctx, console, "#stepup-title", "Confirm it's you: use your passkey")
	pollText(t, ctx, console, "#stepup-submit", "Use a passkey")
	do("step up without a credential",
		chromedp.Click(chromedp.ID("stepup-submit")),
		chromedp.WaitVisible(chromedp.CSS(`#stepup-error[data-code="not_allowed"]`)),
		chromedp.WaitVisible(chromedp.ID("stepup-submit")),
	)
	poll("the step-up prompt counts the refusal", `document.getElementById('stepup-form').dataset.attempts === '1'`)

	// 7. The credential is back: the same page signs in again, and the error goes.
	for _, c := range saved.Credentials {
		if _, err := chromedp.Call(ctx, webauthn.AddCredential, webauthn.AddCredentialParams{AuthenticatorID: authenticator, Credential: c}); err != nil {
			t.Fatalf("WebAuthn.addCredential: %v", err)
		}
	}
	do("step up with the passkey",
		chromedp.Click(chromedp.ID("stepup-submit")),
		chromedp.WaitNotVisible(chromedp.ID("stepup")),
		chromedp.WaitVisible(chromedp.ID("codes-panel")),
	)
	var codes int
	eval("count the recovery codes", `document.querySelectorAll('#recovery-codes li').length`, &codes)
	if codes != 10 {
		t.Errorf("%d recovery codes after a passkey step-up, want 10", codes)
	}
	screenshot("passkey-stepup-codes.png")
	signIn("sign in again with the credential back")
	do("the error is gone", chromedp.WaitNotVisible(chromedp.ID("passkey-error")))

	if bad := console.problems(http.StatusBadRequest, http.StatusForbidden); len(bad) > 0 {
		t.Errorf("the page logged problems:\n%s", strings.Join(bad, "\n"))
	}
}
