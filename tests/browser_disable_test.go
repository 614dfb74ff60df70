package tests_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/natstest"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// disableLink is the link of the "Confirm disabling MFA" mail: the page with ?token=….
var disableLink = regexp.MustCompile(`https?://[^\s"<>]+[?&]token=[A-Za-z0-9_%-]+`)

// TestDemoPageDisable drives the demo page's MFA state panel and "Disable MFA" in headless
// Chromium as a person would: sign in with a user name and an email (the token's verified
// contact), see MFA off, enroll an authenticator app on the page and see it on (TOTP, then
// recovery codes after the step-up prompt), make recovery codes the default method, ask for a
// confirmation link ("Check your mail at …; the link works for 15 minutes"), and open the link
// from the dev inbox in the browser, as the user clicking it in the mail: the page asks that
// user to confirm, MFA goes off, the token leaves the address bar, a mail says so. The same link
// a second time shows the 410 problem.
func TestDemoPageDisable(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium not installed (apt-get install chromium); browser test skipped")
	}
	// 10 s into a TOTP step and behind the real time: the step-up moves the clock one step on,
	// and before the link is asked for it catches up with the real time, since the page counts
	// the link's minutes on the browser's clock.
	clock := testkit.NewClock(time.Now().UTC().Truncate(30 * time.Second).Add(-20 * time.Second))
	st := harness.Start(t, harness.Options{Clock: clock.Now, SweepInterval: 50 * time.Millisecond}, nil)
	b := startBrowser(t, chromium)
	ctx, console, do, eval, screenshot := b.ctx, b.console, b.do, b.eval, b.screenshot
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('[role=alert]:not([hidden])')].map(e => e.id + ': ' + e.textContent).join('\n')`))
			t.Fatalf("%s: %v\nthe page says:\n%s\nbrowser console:\n%s", what, err, page, console.dump())
		}
	}
	user := fmt.Sprintf("disable-%d", time.Now().UnixNano())
	email := user + "@example.org"
	const masked = "d***@example.org"

	// 1. Sign in with a user name and an email, and start an enrollment: the state says MFA is
	// off, with the token's email as the contact.
	do("open the page",
		chromedp.Navigate(st.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.ID("user-email")),
	)
	do("start an enrollment as a user with an email",
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.SetValue(chromedp.ID("user-email"), email),
		chromedp.Click(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-status="INITIATED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#mfa-facts[data-enabled="false"]`)),
	)
	pollText(t, ctx, console, "#h-mfa", "MFA state of "+user)
	pollText(t, ctx, console, "#mfa-enabled", "Disabled")
	pollText(t, ctx, console, "#mfa-methods", "none")
	pollText(t, ctx, console, "#mfa-contact", masked)
	poll("no disable button while MFA is off", `document.getElementById('disable').hidden`)

	// 2. Enroll the authenticator app by typing its code: the state follows (enabled, TOTP).
	uri, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("otpauth-uri")))
	if err != nil {
		t.Fatal(err)
	}
	enr, err := companion.ParseURI(uri)
	if err != nil {
		t.Fatalf("parse the URI shown on the page: %v", err)
	}
	totpCode := func() string {
		t.Helper()
		c, err := totp.Code(enr.Secret, clock.Now(), enr.Params)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	do("type the code from the app",
		chromedp.SetValue(chromedp.ID("code"), totpCode()),
		chromedp.Click(chromedp.ID("verify")),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-status="ENROLLED"]`)),
	)
	poll("the state says MFA is on with TOTP", `document.querySelector('#mfa-facts[data-enabled="true"][data-methods="TOTP"]') !== null`)
	pollText(t, ctx, console, "#mfa-enabled", "Enabled")
	pollText(t, ctx, console, "#mfa-methods", "Authenticator app")
	// The first device brings recovery codes, after the step-up prompt (a later TOTP step).
	demoStepUp(t, ctx, do, eval, console, screenshot, "recovery codes for the first device", "#recovery", "", func() string {
		clock.Advance(30 * time.Second)
		return totpCode()
	})
	do("dismiss the recovery codes",
		chromedp.WaitVisible(chromedp.ID("codes-dismiss")),
		chromedp.Click(chromedp.ID("codes-dismiss")),
		chromedp.WaitNotVisible(chromedp.ID("codes-panel")),
	)
	poll("the state counts the recovery codes", `document.querySelector('#mfa-facts[data-methods="TOTP BACKUPCODE"][data-default="TOTP"]') !== null`)
	pollText(t, ctx, console, "#mfa-methods", "Authenticator app, Recovery codes")
	pollText(t, ctx, console, "#mfa-codes", "10")
	pollText(t, ctx, console, "#mfa-contact", masked)

	// 3. The default method is a PUT: the page shows the answer, the server has it.
	do("make recovery codes the default method", chromedp.Evaluate[chromedp.Void](`(() => {
		const s = document.getElementById('mfa-default');
		s.value = 'BACKUPCODE';
		s.dispatchEvent(new Event('change'));
	})()`))
	poll("the state shows the new default", `document.querySelector('#mfa-facts[data-default="BACKUPCODE"]') !== null`)
	var server mfaState
	st.MustJSON(t, http.MethodGet, "/verification-srv/mfa", st.Token(t, user), nil, http.StatusOK, &server)
	if !server.Enabled || server.DefaultMethod != "BACKUPCODE" || server.Contact != masked {
		t.Errorf("state on the server %+v, want enabled, BACKUPCODE, %s", server, masked)
	}
	screenshot("demo-mfa-state.png")

	// 4. Ask for the confirmation link: the page says where it went and for how long.
	if behind := time.Until(clock.Now()); behind < 0 {
		clock.Advance(-behind)
	}
	do("ask to disable MFA",
		chromedp.Click(chromedp.ID("disable-start")),
		chromedp.WaitVisible(chromedp.ID("disable-email")),
		chromedp.WaitVisible(chromedp.ID("disable-stepup")),
		chromedp.Click(chromedp.ID("disable-email")),
		chromedp.WaitVisible(chromedp.ID("disable-sent")),
	)
	pollText(t, ctx, console, "#disable-sent-text", "Check your mail at "+masked+"; the link works for 15 minutes.")
	poll("MFA is still on", `document.querySelector('#mfa-facts[data-enabled="true"]') !== null`)
	screenshot("demo-disable-link-sent.png")

	var link string
	natstest.Eventually(t, 15*time.Second, func() error {
		for _, m := range devInbox(t, st, email) {
			if strings.Contains(m.Subject, "Confirm disabling MFA") {
				if link = disableLink.FindString(m.Text); link != "" {
					return nil
				}
				return fmt.Errorf("no link in %q", m.Text)
			}
		}
		return fmt.Errorf("no mail to %s about disabling MFA yet", email)
	})
	u, err := url.Parse(link)
	if err != nil || u.Path != "/" || u.Query().Get("token") == "" {
		t.Fatalf("link %q (%v), want the demo page with ?token=…", link, err)
	}
	if page := st.URL + u.RequestURI(); link != page {
		t.Fatalf("the link %s does not open the demo page of this stack (%s)", link, st.URL)
	}

	// 5. Open the link, as the user clicking it in the mail: the page asks the signed-in user to
	// confirm, then shows MFA off and takes the token out of the address bar.
	openLink := func(what string) {
		t.Helper()
		do(what,
			chromedp.Navigate(link),
			chromedp.WaitVisible(chromedp.ID("h-disable-confirm")),
			chromedp.WaitVisible(chromedp.ID("disable-confirm-yes")),
		)
		pollText(t, ctx, console, "#h-disable-confirm", "Confirm disabling MFA")
		pollText(t, ctx, console, "#disable-confirm-who", "Disable MFA for "+user+"? Every factor and recovery code is removed.")
		poll("the page knows the user", `document.getElementById('disable-confirm-user-field').hidden`)
	}
	openLink("open the emailed link")
	poll("the state shows what the link disables", `document.querySelector('#mfa-facts[data-enabled="true"]') !== null`)
	screenshot("demo-disable-confirm.png")
	do("confirm disabling MFA",
		chromedp.Click(chromedp.ID("disable-confirm-yes")),
		chromedp.WaitVisible(chromedp.ID("disable-done")),
	)
	poll("the state says MFA is off", `document.querySelector('#mfa-facts[data-enabled="false"][data-methods=""]') !== null`)
	pollText(t, ctx, console, "#mfa-enabled", "Disabled")
	pollText(t, ctx, console, "#mfa-methods", "none")
	pollText(t, ctx, console, "#mfa-codes", "0")
	pollText(t, ctx, console, "#disable-done", "MFA is off for "+user+": every factor and recovery code was removed. A confirmation mail is on its way to "+masked+".")
	poll("the device list is empty", `document.querySelector('#devices[data-count="0"]') !== null`)
	poll("the confirmation is gone", `document.getElementById('disable-confirm').hidden && document.getElementById('disable').hidden`)
	var href string
	eval("read the address bar", `location.href`, &href)
	if href != st.URL+"/" {
		t.Errorf("address bar %q after confirming, want %s/ (no token)", href, st.URL)
	}
	screenshot("demo-disabled.png")
	st.MustJSON(t, http.MethodGet, "/verification-srv/mfa", st.Token(t, user), nil, http.StatusOK, &server)
	if server.Enabled || server.Factors != 0 || server.RecoveryCodesRemaining != 0 {
		t.Errorf("state on the server after confirming %+v, want MFA off", server)
	}
	natstest.Eventually(t, 15*time.Second, func() error {
		for _, m := range devInbox(t, st, email) {
			if strings.Contains(m.Subject, "MFA was disabled") {
				return nil
			}
		}
		return fmt.Errorf("no mail to %s saying MFA was disabled yet", email)
	})

	// 6. The same link again: used, so 410 expired, shown as a problem; nothing to press again.
	openLink("open the link a second time")
	do("confirm with the used link", chromedp.Click(chromedp.ID("disable-confirm-yes")))
	poll("the used link is refused", `document.querySelector('#disable-confirm-error[data-code="expired"] .detail') !== null`)
	var refused struct {
		Hint, Who string
		Form      bool
		Href      string
	}
	eval("read the refusal", `({Hint: document.querySelector('#disable-confirm-error strong').textContent,
		Who: document.getElementById('disable-confirm-who').textContent,
		Form: !document.getElementById('disable-confirm-form').hidden, Href: location.href})`, &refused)
	if !strings.HasPrefix(refused.Hint, "This link has expired, was used already") || refused.Who != "MFA was not disabled." ||
		refused.Form || refused.Href != st.URL+"/" {
		t.Errorf("used link on the page: %+v, want the expired hint, no form, no token in the address bar", refused)
	}
	poll("the state still says MFA is off", `document.querySelector('#mfa-facts[data-enabled="false"]') !== null`)
	screenshot("demo-disable-link-used.png")

	// 7. A browser that does not know the user asks for the name before confirming.
	do("forget the user and open the link again",
		chromedp.Evaluate[chromedp.Void](`localStorage.clear()`),
		chromedp.Navigate(link),
		chromedp.WaitVisible(chromedp.ID("disable-confirm-user")),
	)
	pollText(t, ctx, console, "#disable-confirm-who", "Who asked for this link? Enter the user name to confirm: the link works only for that user.")
	do("name the user and confirm",
		chromedp.SetValue(chromedp.ID("disable-confirm-user"), user),
		chromedp.Click(chromedp.ID("disable-confirm-yes")),
	)
	poll("the used link is refused for the named user", `document.querySelector('#disable-confirm-error[data-code="expired"]') !== null`)
	pollText(t, ctx, console, "#h-mfa", "MFA state of "+user)

	// The step-up before the recovery codes is a 403, the used link a 410; nothing else.
	if bad := console.problems(http.StatusForbidden, http.StatusGone); len(bad) > 0 {
		t.Errorf("the page logged errors (CSP violations or exceptions):\n%s", strings.Join(bad, "\n"))
	}
}
