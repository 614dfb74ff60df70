package tests_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// TestDemoPageCodes drives the demo page's codes by email and SMS in headless Chromium as a
// person would: add an email address (a wrong code refused; a new code asked for too soon waits
// for Retry-After; the code from the dev inbox enrolls it, ENROLLED live, the masked address in
// the device list), sign in by email with a second code (AUTHENTICATED, amr otp+email), add a
// phone number in German national format — the user has a factor now, so the page's "Confirm
// it's you" prompt asks for a code, sent by email — and sign in by SMS (amr otp+sms). The test
// reads each code from GET /dev/inbox/messages and types it into the page, as the user copies it
// from /dev/inbox.
func TestDemoPageCodes(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium not installed (apt-get install chromium); browser test skipped")
	}
	st := harness.Start(t, harness.Options{SweepInterval: 50 * time.Millisecond}, nil)
	b := startBrowser(t, chromium)
	ctx, console, do, eval := b.ctx, b.console, b.do, b.eval
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	// answered waits for the page to count attempts answers of the form whose data-attempts
	// it keeps.
	answered := func(what, form string, attempts int) {
		t.Helper()
		poll(what+": the page has the answer", fmt.Sprintf(`document.getElementById(%q).dataset.attempts === '%d'`, form, attempts))
	}

	do("open the page",
		chromedp.Navigate(st.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("email-add")),
		chromedp.Evaluate[chromedp.Void](`window.__noReload = true`),
	)
	user := fmt.Sprintf("codes-%d", time.Now().UnixNano())
	email := user + "@example.org"
	const maskedEmail = "c***@example.org"

	// 1. Add an email address: the page says where the code went and that it left.
	do("add an email address",
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.SetValue(chromedp.ID("email"), email),
		chromedp.Click(chromedp.ID("email-add")),
		chromedp.WaitVisible(chromedp.CSS(`#oob-status[data-status="INITIATED"]`)),
		chromedp.WaitVisible(chromedp.ID("oob-code")),
	)
	pollText(t, ctx, console, "#oob-destination", maskedEmail)
	do("see the mail sent", chromedp.WaitVisible(chromedp.CSS(`#oob-delivery[data-delivery="sent"]`)))
	var link struct{ Href, Text string }
	eval("read the inbox link", `(() => { const a = document.getElementById('oob-inbox-link'); return {Href: a.getAttribute('href'), Text: a.textContent}; })()`, &link)
	if link.Href != "/dev/inbox" || link.Text != "open the dev inbox to read the code" {
		t.Errorf("inbox link %+v", link)
	}
	code := inboxCode(t, st, email, 0)

	// 2. A new code right away is too soon: the button waits for Retry-After, with a countdown.
	do("ask for a new code too soon",
		chromedp.Click(chromedp.ID("oob-resend")),
		chromedp.WaitVisible(chromedp.CSS(`#oob-error[data-code="too_many_requests"]`)),
	)
	var wait struct {
		Disabled bool
		Seconds  int
		Text     string
	}
	eval("read the resend countdown", `({Disabled: document.getElementById('oob-resend').disabled,
		Seconds: +document.getElementById('oob-resend-wait').dataset.seconds,
		Text: document.getElementById('oob-resend-wait').textContent})`, &wait)
	if !wait.Disabled || wait.Seconds <= 0 || wait.Seconds > 30 || !strings.HasPrefix(wait.Text, "A new code can be sent in ") {
		t.Errorf("resend too soon on the page: %+v, want the button off and a countdown", wait)
	}

	// 3. A wrong code is refused; the one from the inbox enrolls the address.
	oobAttempts := 0
	enter := func(what, code string) {
		t.Helper()
		oobAttempts++
		do(what,
			chromedp.WaitEnabled(chromedp.ID("oob-verify")),
			chromedp.SetValue(chromedp.ID("oob-code"), code),
			chromedp.Click(chromedp.ID("oob-verify")),
		)
		answered(what, "oob-verify-form", oobAttempts)
	}
	enter("enter a wrong code", wrongCode(code))
	do("see the wrong code refused",
		chromedp.WaitVisible(chromedp.CSS(`#oob-error[data-code="invalid_code"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#oob-status[data-status="INITIATED"]`)),
	)
	enter("enter the code from the inbox", code)
	do("see the address ENROLLED and listed",
		chromedp.WaitVisible(chromedp.CSS(`#oob-status[data-status="ENROLLED"]`)),
		chromedp.WaitVisible(chromedp.ID("oob-done")),
		chromedp.WaitNotVisible(chromedp.ID("oob-verify-form")),
		chromedp.WaitNotVisible(chromedp.ID("oob-sent")),
	)
	if done := mustText(t, ctx, "#oob-done"); !strings.Contains(done, maskedEmail) {
		t.Errorf("enrolled line %q lacks %s", done, maskedEmail)
	}
	listed := func(what string, want ...string) {
		t.Helper()
		w, _ := json.Marshal(want)
		poll(what, fmt.Sprintf(`JSON.stringify(Array.from(document.querySelectorAll('#devices .device-destination'), e => e.textContent).sort()) === JSON.stringify(%s.sort())`, w))
	}
	listed("see the address in the device list", maskedEmail)
	b.screenshot("demo-email-enrolled.png")

	// 4. Sign in by email with a second code; the decoded mfa_token says how (amr).
	signIn := func(method, to, masked string, n int) map[string]any {
		t.Helper()
		do("start a sign-in by "+method,
			chromedp.Click(chromedp.ID("method-"+method)),
			chromedp.Click(chromedp.ID("signin-start")),
			chromedp.WaitVisible(chromedp.CSS(`#signin-status[data-status="INITIATED"]`)),
			chromedp.WaitVisible(chromedp.ID("signin-sent")),
		)
		pollText(t, ctx, console, "#signin-destination", masked)
		pollText(t, ctx, console, "#signin-transport", "Live updates: server-sent events")
		do("see the code sent by "+method, chromedp.WaitVisible(chromedp.CSS(`#signin-delivery[data-delivery="sent"]`)))
		code := inboxCode(t, st, to, n)
		do("enter the code sent by "+method,
			chromedp.SetValue(chromedp.ID("signin-code"), code),
			chromedp.Click(chromedp.ID("signin-submit")),
			chromedp.WaitVisible(chromedp.CSS(`#signin-status[data-status="AUTHENTICATED"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#signin-done[data-source="live"] #claims-payload`)),
			chromedp.WaitNotVisible(chromedp.ID("signin-sent")),
		)
		var raw struct{ Payload, Success string }
		eval("read the decoded mfa_token", `({Payload: document.getElementById('claims-payload').textContent,
			Success: document.getElementById('signin-success').textContent})`, &raw)
		var payload map[string]any
		if err := json.Unmarshal([]byte(raw.Payload), &payload); err != nil {
			t.Fatalf("decoded payload %q: %v", raw.Payload, err)
		}
		how := map[string]string{"email": "by email", "sms": "by SMS"}[method]
		if want := "Authenticated as " + user + " with a code sent " + how + " (seen live)."; raw.Success != want {
			t.Errorf("success line %q, want %q", raw.Success, want)
		}
		if payload["sub"] != user {
			t.Errorf("mfa_token sub %v, want %s", payload["sub"], user)
		}
		return payload
	}
	if amr := fmt.Sprint(signIn("email", email, maskedEmail, 1)["amr"]); amr != "[otp email]" {
		t.Errorf("email sign-in amr %s, want [otp email]", amr)
	}
	b.screenshot("demo-email-signed-in.png")

	// 5. Add a phone number, national with the default region DE: the user has a factor, so the
	// page asks to confirm it's them, here with a code by email.
	const phone, e164, maskedPhone = "0151 12345678", "+4915112345678", "+49 ••• •••••• 78"
	if region, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("phone-region"))); err != nil || region != "DE" {
		t.Errorf("region field %q (%v), want DE by default", region, err)
	}
	do("add a phone number",
		chromedp.SetValue(chromedp.ID("phone"), phone),
		chromedp.Click(chromedp.ID("phone-add")),
		chromedp.WaitVisible(chromedp.CSS(`#oob #stepup #stepup-code`)),
		chromedp.Click(chromedp.ID("stepup-method-email")),
		chromedp.WaitVisible(chromedp.ID("stepup-sent")),
	)
	pollText(t, ctx, console, "#stepup-title", "Confirm it's you: enter the code sent to your email address")
	pollText(t, ctx, console, "#stepup-destination", maskedEmail)
	b.screenshot("demo-step-up-email.png")
	do("confirm with the code by email",
		chromedp.SetValue(chromedp.ID("stepup-code"), inboxCode(t, st, email, 2)),
		chromedp.Click(chromedp.ID("stepup-submit")),
	)
	answered("confirm with the code by email", "stepup-form", 1)
	poll("the step-up prompt closes", `document.getElementById('stepup').hidden`)
	pollText(t, ctx, console, "#oob-destination", maskedPhone)
	do("see the SMS sent",
		chromedp.WaitVisible(chromedp.CSS(`#oob-status[data-status="INITIATED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#oob-delivery[data-delivery="sent"]`)),
	)
	if label := mustText(t, ctx, "#oob-code-label"); label != "Code from the SMS" {
		t.Errorf("code label %q", label)
	}
	oobAttempts = 0 // the page counts the answers per enrollment
	enter("enter the code from the SMS", inboxCode(t, st, e164, 0))
	do("see the phone ENROLLED", chromedp.WaitVisible(chromedp.CSS(`#oob-status[data-status="ENROLLED"]`)))
	listed("see the phone in the device list", maskedEmail, maskedPhone)

	// 6. Sign in by SMS.
	if amr := fmt.Sprint(signIn("sms", e164, maskedPhone, 1)["amr"]); amr != "[otp sms]" {
		t.Errorf("SMS sign-in amr %s, want [otp sms]", amr)
	}
	b.screenshot("demo-sms-signed-in.png")

	var noReload bool
	eval("check for a reload", `window.__noReload === true`, &noReload)
	if !noReload {
		t.Error("the page reloaded during the flow; it must update in place")
	}
	// The wrong code, the resend too soon and the change before step-up are 400, 429 and 403
	// answers, which the browser logs; nothing else.
	if bad := console.problems(http.StatusBadRequest, http.StatusTooManyRequests, http.StatusForbidden); len(bad) > 0 {
		t.Errorf("the page logged errors (CSP violations or exceptions):\n%s", strings.Join(bad, "\n"))
	}
}
