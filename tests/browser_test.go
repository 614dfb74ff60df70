package tests_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/testkit"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// artifactsDir holds the screenshots of the browser test, relative to the package directory
// (the working directory of go test).
const artifactsDir = "artifacts"

// TestDemoPage drives the dev stack's demo page in headless Chromium as a person would: start an
// enrollment, watch the status go INITIATED → SCANNED → ENROLLED live while the reference
// companion plays the phone, save the recovery codes shown once, sign in with a later TOTP code
// and with a recovery code (AUTHENTICATED live, the mfa_token decoded), get locked by wrong codes
// and see the countdown end, enroll a push-capable device and sign in with push (number
// matching, approve and deny), then rename and remove the device — all without a reload.
// Step-up is on: once the first device is enrolled, its recovery codes, a second device and
// each removal wait for the page's "Confirm it's you" prompt, answered with a fresh code of the
// first device.
//
// The stack runs on a test clock close to the real one, so the test moves to the next TOTP step
// instead of waiting 30 seconds for it.
func TestDemoPage(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium not installed (apt-get install chromium); browser test skipped")
	}
	// 10 s into a TOTP step, so ±1 step never straddles a boundary mid-test.
	clock := testkit.NewClock(time.Now().UTC().Truncate(30 * time.Second).Add(10 * time.Second))
	st := harness.Start(t, harness.Options{Clock: clock.Now, SweepInterval: 50 * time.Millisecond}, map[string]string{
		"MFA_LOCKOUT_THRESHOLD": "3",
		"MFA_LOCKOUT_DURATION":  "3s",
	})
	demoPage(t, chromium, st, st.URL+"/", clock)
}

// demoPage runs the browser flow against the page at pageURL, served by (or in front of) st,
// whose test clock is clock (see TestDemoPage): step-up prompts and the sign-in part need later
// TOTP steps than the enrollment's, and the clock moves there instead of the test waiting.
func demoPage(t *testing.T, chromium string, st *harness.Stack, pageURL string, clock *testkit.Clock) {
	now := clock.Now
	// nextStep moves to a TOTP step no code was used in yet: each code works once.
	nextStep := func() { clock.Advance(30 * time.Second) }
	b := startBrowser(t, chromium)
	ctx, console, do, eval, screenshot := b.ctx, b.console, b.do, b.eval, b.screenshot

	// The page loads, and we mark the document so that a reload would be noticed.
	do("open the page",
		chromedp.Navigate(pageURL),
		chromedp.WaitVisible(chromedp.ID("start")),
		chromedp.Evaluate[chromedp.Void](`window.__noReload = true`),
	)

	// 1–2. Pick a user and start: the QR, the URI, the secret and the companion command show.
	user := fmt.Sprintf("browser-%d", time.Now().UnixNano())
	do("start the enrollment",
		chromedp.SetValue(chromedp.ID("user"), user),
		chromedp.Click(chromedp.ID("start")),
		chromedp.WaitVisible(chromedp.CSS(`#qr[src^="data:image/png;base64,"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#status[data-status="INITIATED"]`)),
	)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`(() => { const i = document.getElementById('qr'); return i.complete && i.naturalWidth > 0; })()`)); err != nil {
		t.Fatalf("QR image never decoded: %v", err)
	}
	uri, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("otpauth-uri")))
	if err != nil || !strings.HasPrefix(uri, "otpauth://totp/") {
		t.Fatalf("otpauth URI field: %q, %v", uri, err)
	}
	cmd, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("companion-cmd")))
	if err != nil || cmd != "go run ./mobile-bridge/cmd/companion enroll --uri '"+uri+"' --device "+user+".device" {
		t.Fatalf("companion command field: %q, %v", cmd, err)
	}
	enr, err := companion.ParseURI(uri)
	if err != nil {
		t.Fatalf("parse the URI shown on the page: %v", err)
	}
	if enr.ExchangeID == "" || enr.BaseURL == "" || enr.Sub != user {
		t.Fatalf("URI on the page lacks eid/burl or names another user: %+v", enr)
	}
	secret, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("secret")))
	if err != nil || strings.ReplaceAll(secret, " ", "") != enr.Secret {
		t.Fatalf("secret field %q, want %q (%v)", secret, enr.Secret, err)
	}

	// 3. The companion scans: the page shows SCANNED by itself.
	client, err := companion.Dial(ctx, enr.BaseURL)
	if err != nil {
		t.Fatalf("companion dial: %v", err)
	}
	defer client.Close()
	dev := protocol.Device{DeviceID: "browser-test-phone", Name: "Test phone", Platform: "test"}
	if ack, err := client.Scan(ctx, enr.ExchangeID, dev); err != nil || ack.Status != "SCANNED" {
		t.Fatalf("companion scan: %+v, %v", ack, err)
	}
	do("see SCANNED live", chromedp.WaitVisible(chromedp.CSS(`#status[data-status="SCANNED"]`)))

	// 4. The companion proves the code: the page shows ENROLLED and lists the device.
	code, err := totp.Code(enr.Secret, now(), enr.Params)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := client.Enroll(ctx, enr.ExchangeID, code)
	if err != nil || ack.Status != "ENROLLED" || ack.PHID == "" {
		t.Fatalf("companion enroll: %+v, %v", ack, err)
	}
	device := fmt.Sprintf(`#devices li[data-ph-id=%q]`, ack.PHID)
	do("see ENROLLED live and the device listed",
		chromedp.WaitVisible(chromedp.CSS(`#status[data-status="ENROLLED"]`)),
		chromedp.WaitVisible(chromedp.CSS(device+` .device-name`)),
	)
	screenshot("demo-enrolled.png")

	var history []string
	eval("read the status history", `Array.from(document.querySelectorAll('#status-history li'), li => li.dataset.status)`, &history)
	if want := []string{"INITIATED", "SCANNED", "ENROLLED"}; !slices.Equal(history, want) {
		t.Errorf("status history %v, want %v", history, want)
	}
	var steps []string
	eval("read the step indicator", `Array.from(document.querySelectorAll('#steps li'), li => li.dataset.state)`, &steps)
	if want := []string{"done", "done", "done"}; !slices.Equal(steps, want) {
		t.Errorf("step indicator %v, want %v", steps, want)
	}
	var live struct{ Polite, Text string }
	eval("read the live region", `(() => { const r = document.querySelector('[aria-live="polite"]'); return {Polite: r ? r.getAttribute('aria-live') : '', Text: r ? r.textContent : ''}; })()`, &live)
	if !strings.Contains(live.Text, "ENROLLED") {
		t.Errorf("aria-live region says %q, want the ENROLLED announcement", live.Text)
	}
	name, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(device+` .device-name`)))
	if err != nil || name != dev.Name {
		t.Errorf("device name on the page %q, want %q (%v)", name, dev.Name, err)
	}

	// 4b. The first enrollment brings a set of recovery codes, shown once; they can be copied
	// and downloaded, and are gone from the page once dismissed. The user has a device now, so
	// the set needs step-up first: the code that enrolled the device is spent, the next one works.
	stepUp := func(what, card, spent string) {
		t.Helper()
		demoStepUp(t, ctx, do, eval, console, screenshot, what, card, spent, func() string {
			nextStep()
			c, err := totp.Code(enr.Secret, now(), enr.Params)
			if err != nil {
				t.Fatal(err)
			}
			return c
		})
	}
	stepUp("recovery codes for the first device", "#recovery", code)
	codes := demoRecoveryCodes(t, ctx, do, eval, console)
	screenshot("demo-recovery-codes.png")
	do("dismiss the recovery codes",
		chromedp.Click(chromedp.ID("codes-dismiss")),
		chromedp.WaitNotVisible(chromedp.ID("codes-panel")),
		chromedp.WaitVisible(chromedp.ID("codes-regen")),
	)
	var leftover struct {
		Items    int
		InPage   bool
		Selected string
	}
	eval("look for the dismissed codes", fmt.Sprintf(`({Items: document.querySelectorAll('#recovery-codes li').length,
		InPage: document.documentElement.outerHTML.includes(%q), Selected: String(getSelection())})`, codes[0]), &leftover)
	if leftover.Items != 0 || leftover.InPage || strings.Contains(leftover.Selected, codes[0]) {
		t.Errorf("recovery codes still in the page after dismissing: %+v", leftover)
	}
	pollText(t, ctx, console, "#codes-remaining", fmt.Sprintf("%d remaining", len(codes)))

	// serverDevices lists the ph_ids the registry holds for user.
	serverDevices := func() []string {
		t.Helper()
		var list []struct {
			PHID string `json:"ph_id"`
		}
		st.MustJSON(t, http.MethodGet, "/device-srv/devices", st.Token(t, user), nil, http.StatusOK, &list)
		ids := []string{}
		for _, d := range list {
			ids = append(ids, d.PHID)
		}
		return ids
	}
	demoSignIn(t, ctx, do, eval, console, screenshot, clock, user, enr, code, codes)
	demoPush(t, ctx, do, eval, console, screenshot, clock, user, uri, ack.PHID, stepUp, serverDevices)

	// 5. Rename the device in the page; the page and the API both show the new name.
	newName := "Work phone " + user[len(user)-4:]
	do("rename the device",
		chromedp.Click(chromedp.CSS(device+` button.rename`)),
		chromedp.WaitVisible(chromedp.CSS(device+` input.rename-input`)),
		chromedp.SetValue(chromedp.CSS(device+` input.rename-input`), newName),
		chromedp.Click(chromedp.CSS(device+` button.save`)),
	)
	want, _ := json.Marshal(newName)
	sel, _ := json.Marshal(device + ` .device-name`)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelector(%s)?.textContent === %s`, sel, want))); err != nil {
		t.Fatalf("renamed device never showed %q: %v\nbrowser console:\n%s", newName, err, console.dump())
	}
	var listed []struct {
		PHID         string `json:"ph_id"`
		FriendlyName string `json:"friendly_name"`
	}
	st.MustJSON(t, http.MethodGet, "/device-srv/devices", st.Token(t, user), nil, http.StatusOK, &listed)
	if len(listed) != 1 || listed[0].PHID != ack.PHID || listed[0].FriendlyName != newName {
		t.Errorf("devices through the API after the rename: %+v, want one named %q", listed, newName)
	}

	// 6. Remove it (with the inline confirmation and step-up: its recovery codes keep the user
	// a factor): the list empties, on the page and in the registry.
	do("remove the device",
		chromedp.Click(chromedp.CSS(device+` button.remove`)),
		chromedp.Click(chromedp.CSS(device+` button.confirm-remove`)),
	)
	stepUp("remove the last device", devicesCard, "")
	do("see the device gone",
		chromedp.WaitNotPresent(chromedp.CSS(`#devices li`)),
		chromedp.WaitVisible(chromedp.ID("devices-empty")),
	)
	if ids := serverDevices(); len(ids) != 0 {
		t.Errorf("devices through the API after removing the last one: %v, want none", ids)
	}

	var noReload bool
	eval("check for a reload", `window.__noReload === true`, &noReload)
	if !noReload {
		t.Error("the page reloaded during the flow; it must update in place")
	}
	screenshot("demo-end.png")

	// The wrong codes, the lock and the changes before step-up are 400, 429 and 403 answers,
	// which the browser logs; nothing else.
	if bad := console.problems(http.StatusBadRequest, http.StatusTooManyRequests, http.StatusForbidden); len(bad) > 0 {
		t.Errorf("the page logged errors (CSP violations or exceptions):\n%s", strings.Join(bad, "\n"))
	}
}

// browser is a headless Chromium tab with the helpers the browser tests share: do runs actions,
// eval reads a JavaScript value, screenshot saves a PNG under artifacts; a failure shows what
// the page logged.
type browser struct {
	ctx        context.Context
	console    *consoleLog
	do         doFunc
	eval       evalFunc
	screenshot func(name string)
}

// startBrowser starts Chromium for one test, closed when the test ends; everything the test
// does in it must finish within two minutes.
func startBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	t.Cleanup(cancel)
	// Chromium now and then dies while it starts on a loaded machine (a crash before it prints
	// its DevTools address: "chrome failed to start"); a fresh process with a fresh profile
	// starts. A browser that fails three times in a row fails the test.
	var tab context.Context
	for attempt := 1; ; attempt++ {
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
			chromedp.ExecPath(chromium),
			chromedp.Headless,
			chromedp.NoSandbox,
			chromedp.DisableGPU,
			chromedp.NoFirstRun,
			chromedp.NoDefaultBrowserCheck,
			chromedp.Flag("disable-dev-shm-usage", true),
			chromedp.Flag("disable-background-networking", true),
			chromedp.Flag("disable-component-update", true),
			chromedp.Flag("disable-sync", true),
			chromedp.Flag("disable-quic", true),
			chromedp.UserDataDir(t.TempDir()),
			chromedp.WindowSize(1280, 900),
		)
		t.Cleanup(cancelAlloc)
		var cancelTab context.CancelFunc
		tab, cancelTab = chromedp.NewContext(allocCtx)
		t.Cleanup(cancelTab)
		err := chromedp.Do(tab) // starts the browser
		if err == nil {
			break
		}
		cancelTab()
		cancelAlloc()
		if attempt == 3 || ctx.Err() != nil {
			t.Fatalf("start chromium %s (attempt %d): %v", chromium, attempt, err)
		}
		t.Logf("start chromium %s (attempt %d, trying again): %v", chromium, attempt, err)
	}
	ctx = tab
	console := watchConsole(ctx)

	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	eval := func(what, expr string, out any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
		if err == nil {
			err = json.Unmarshal(raw, out)
		}
		if err != nil {
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	screenshot := func(name string) {
		t.Helper()
		buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // 100 = PNG
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.MkdirAll(artifactsDir, 0o755); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(artifactsDir, name)
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(path)
		t.Logf("screenshot: %s", abs)
	}

	return &browser{ctx: ctx, console: console, do: do, eval: eval, screenshot: screenshot}
}

// findChromium returns the path of a Chromium binary, or "" when none is installed.
func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// consoleLog keeps what the page writes to its console, for failure messages and to catch CSP
// violations and uncaught exceptions.
type consoleLog struct {
	mu   sync.Mutex
	msgs []chromedp.ConsoleMessage
}

func watchConsole(ctx context.Context) *consoleLog {
	c := &consoleLog{}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
	return c
}

func (c *consoleLog) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, m := range c.msgs {
		fmt.Fprintf(&b, "  %s: %s (%s:%d)\n", m.Type, m.Text, m.URL, m.Line+1)
	}
	return b.String()
}

// problems lists exceptions and errors the page logged. A CSP violation is a console error.
// The browser's network log entries for the given answer statuses are expected, not problems.
func (c *consoleLog) problems(expected ...int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.Source == "network" && slices.ContainsFunc(expected, func(status int) bool {
			return strings.Contains(m.Text, fmt.Sprintf("status of %d ", status))
		}) {
			continue
		}
		if m.IsException() || m.Type == chromedp.ConsoleError {
			out = append(out, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
		}
	}
	return out
}

type (
	doFunc   func(what string, steps ...chromedp.Action[chromedp.Void])
	evalFunc func(what, expr string, out any)
)

// recoveryCodeShape is how the registry prints a recovery code: two groups of five symbols.
var recoveryCodeShape = regexp.MustCompile(`^[0-9A-Z]{5}-[0-9A-Z]{5}$`)

// demoRecoveryCodes checks the recovery codes the page shows after the first enrollment, copies
// and downloads them, and returns them.
func demoRecoveryCodes(t *testing.T, ctx context.Context, do doFunc, eval evalFunc, console *consoleLog) []string {
	t.Helper()
	do("see the recovery codes",
		chromedp.WaitVisible(chromedp.ID("codes-panel")),
		chromedp.WaitVisible(chromedp.CSS(`#recovery-codes li:nth-child(10) code`)),
	)
	var codes []string
	eval("read the recovery codes", `Array.from(document.querySelectorAll('#recovery-codes li code'), c => c.textContent)`, &codes)
	if len(codes) < 10 {
		t.Fatalf("%d recovery codes on the page, want at least 10: %v", len(codes), codes)
	}
	for _, c := range codes {
		if !recoveryCodeShape.MatchString(c) {
			t.Errorf("recovery code %q is not XXXXX-XXXXX", c)
		}
	}
	pollText(t, ctx, console, "#codes-remaining", fmt.Sprintf("%d remaining", len(codes)))

	// Copy: the clipboard when the browser allows it, else the codes are selected for Ctrl+C.
	do("copy the recovery codes", chromedp.Click(chromedp.ID("codes-copy")))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('codes-copy').textContent === 'Copied' ||
		document.getElementById('codes-announce').textContent.includes('Ctrl+C')`, chromedp.WithPollingTimeout(5*time.Second))); err != nil {
		t.Fatalf("copy gave no feedback: %v\nbrowser console:\n%s", err, console.dump())
	}
	// Download: the page builds a text file as a Blob; catch the blob to read what it holds.
	do("download the recovery codes",
		chromedp.Evaluate[chromedp.Void](`(() => { const create = URL.createObjectURL.bind(URL);
			URL.createObjectURL = (b) => { b.text().then(t => { window.__download = t; }); return create(b); }; })()`),
		chromedp.Click(chromedp.ID("codes-download")),
	)
	file, err := chromedp.Run(ctx, chromedp.Poll[string](`window.__download`, chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil {
		t.Fatalf("download built no file: %v\nbrowser console:\n%s", err, console.dump())
	}
	for _, c := range codes {
		if !strings.Contains(file, c+"\n") {
			t.Errorf("downloaded file lacks %s:\n%s", c, file)
		}
	}
	return codes
}

// demoSignIn signs in on the page: TOTP (the enrollment code is refused as already used, the next
// step's code authenticates live), then a recovery code, then wrong codes until the lock, whose
// countdown re-enables the form.
func demoSignIn(t *testing.T, ctx context.Context, do doFunc, eval evalFunc, console *consoleLog, screenshot func(string),
	clock *testkit.Clock, user string, enr companion.Enrollment, enrollCode string, codes []string) {
	t.Helper()
	attempts := 0
	start := func(what, method string) {
		t.Helper()
		do(what,
			chromedp.Click(chromedp.ID("method-"+method)),
			chromedp.Click(chromedp.ID("signin-start")),
			chromedp.WaitVisible(chromedp.CSS(`#signin-status[data-status="INITIATED"]`)),
			chromedp.WaitNotVisible(chromedp.ID("signin-done")),
		)
		// The live stream is open before any code is typed, so AUTHENTICATED comes from it.
		pollText(t, ctx, console, "#signin-transport", "Live updates: server-sent events")
		attempts = 0 // the page counts the answers per sign-in
	}
	submit := func(what, code string) {
		t.Helper()
		attempts++
		do(what,
			chromedp.WaitEnabled(chromedp.ID("signin-submit")),
			chromedp.SetValue(chromedp.ID("signin-code"), code),
			chromedp.Click(chromedp.ID("signin-submit")),
		)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById('signin-form').dataset.attempts === '%d'`, attempts),
			chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("%s: no answer on the page: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	type jwtParts struct{ Header, Payload map[string]any }
	claims := func(what string) jwtParts {
		t.Helper()
		do(what,
			chromedp.WaitVisible(chromedp.CSS(`#signin-status[data-status="AUTHENTICATED"]`)),
			chromedp.WaitVisible(chromedp.CSS(`#signin-done[data-source="live"] #claims-payload`)),
		)
		var raw struct{ Header, Payload, Success, JWKS string }
		eval("read the decoded mfa_token", `({Header: document.getElementById('claims-header').textContent,
			Payload: document.getElementById('claims-payload').textContent,
			Success: document.getElementById('signin-success').textContent,
			JWKS: document.getElementById('jwks-link').getAttribute('href')})`, &raw)
		var out jwtParts
		if err := json.Unmarshal([]byte(raw.Header), &out.Header); err != nil {
			t.Fatalf("decoded header %q: %v", raw.Header, err)
		}
		if err := json.Unmarshal([]byte(raw.Payload), &out.Payload); err != nil {
			t.Fatalf("decoded payload %q: %v", raw.Payload, err)
		}
		if !strings.HasPrefix(raw.Success, "Authenticated") || raw.JWKS != "/.well-known/jwks.json" {
			t.Errorf("success line %q, JWKS link %q", raw.Success, raw.JWKS)
		}
		if out.Header["alg"] != "ES256" || out.Header["kid"] == nil || out.Payload["sub"] != user {
			t.Errorf("decoded mfa_token header %v, payload %v; want ES256 with a kid, for %s", out.Header, out.Payload, user)
		}
		return out
	}

	// 7. TOTP: the enrollment's code was used already; the next step's code authenticates.
	start("start a TOTP sign-in", "totp")
	submit("submit the enrollment code again", enrollCode)
	do("see the replay refused",
		chromedp.WaitVisible(chromedp.CSS(`#signin-error[data-code="code_replayed"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#signin-status[data-status="INITIATED"]`)),
	)
	if msg, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("signin-error"))); err != nil || !strings.Contains(msg, "already used, wait for the next") {
		t.Errorf("replay message %q (%v)", msg, err)
	}
	clock.Advance(30 * time.Second)
	next, err := totp.Code(enr.Secret, clock.Now(), enr.Params)
	if err != nil {
		t.Fatal(err)
	}
	submit("submit the next code", next)
	jwt := claims("see AUTHENTICATED live")
	if fmt.Sprint(jwt.Payload["amr"]) != "[otp]" || jwt.Payload["status_id"] == nil || jwt.Payload["exp"] == nil {
		t.Errorf("TOTP mfa_token claims %v, want amr [otp], status_id and exp", jwt.Payload)
	}
	if txt, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("signin-announce"))); !strings.Contains(txt, "AUTHENTICATED") {
		t.Errorf("sign-in live region says %q, want the AUTHENTICATED announcement", txt)
	}
	screenshot("demo-signed-in.png")

	// 8. A recovery code works once, and the count goes down.
	start("start a recovery-code sign-in", "backupcode")
	submit("submit a recovery code", codes[0])
	if jwt := claims("see AUTHENTICATED live with a recovery code"); fmt.Sprint(jwt.Payload["amr"]) != "[kba]" {
		t.Errorf("recovery-code mfa_token amr %v, want [kba]", jwt.Payload["amr"])
	}
	pollText(t, ctx, console, "#codes-remaining", fmt.Sprintf("%d remaining", len(codes)-1))

	// 9. Wrong codes until the lock: the lock shows with a countdown from Retry-After, the form
	// is off, and when the countdown reaches 0 the form works again.
	start("start a TOTP sign-in to fail", "totp")
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("10 wrong codes and no lock on the page")
		}
		submit(fmt.Sprintf("submit wrong code %d", i+1), wrongCode(next))
		var lockShown bool
		eval("is the lock shown", `!document.getElementById('lock').hidden`, &lockShown)
		if lockShown {
			break
		}
		do("see the wrong code refused", chromedp.WaitVisible(chromedp.CSS(`#signin-error[data-code="invalid_code"]`)))
	}
	var lock struct {
		Seconds, Text, DateTimeOK         string
		Submit, Start, Input, ErrorHidden bool
	}
	eval("read the lock", `(() => { const c = document.getElementById('lock-countdown'); return {Seconds: c.dataset.seconds, Text: c.textContent,
		Submit: document.getElementById('signin-submit').disabled, Start: document.getElementById('signin-start').disabled,
		Input: document.getElementById('signin-code').disabled, ErrorHidden: document.getElementById('signin-error').hidden,
		DateTimeOK: String(/^PT\d+S$/.test(c.dateTime))}; })()`, &lock)
	if lock.Seconds == "" || lock.Seconds == "0" || !strings.HasPrefix(lock.Text, "0:0") || !lock.Submit || !lock.Start || !lock.Input ||
		!lock.ErrorHidden || lock.DateTimeOK != "true" {
		t.Errorf("lock on the page = %+v, want a running countdown, the form off and no other error", lock)
	}
	screenshot("demo-locked.png")
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('lock').hidden && !document.getElementById('signin-submit').disabled &&
		!document.getElementById('signin-code').disabled && !document.getElementById('signin-start').disabled`, chromedp.WithPollingTimeout(15*time.Second))); err != nil {
		t.Fatalf("the lock countdown never re-enabled the form: %v\nbrowser console:\n%s", err, console.dump())
	}
	if txt, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.ID("signin-announce"))); !strings.Contains(txt, "lock is over") {
		t.Errorf("sign-in live region after the lock says %q", txt)
	}
}

// pollText waits until the element sel shows exactly want.
func pollText(t *testing.T, ctx context.Context, console *consoleLog, sel, want string) {
	t.Helper()
	s, _ := json.Marshal(sel)
	w, _ := json.Marshal(want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.querySelector(%s)?.textContent === %s`, s, w),
		chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		got, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
		t.Fatalf("%s shows %q, want %q: %v\nbrowser console:\n%s", sel, got, want, err, console.dump())
	}
}

// The cards of the page a step-up prompt shows in, next to the change that needs it.
const (
	startCard   = `section[aria-labelledby="h-start"]`
	devicesCard = `section[aria-labelledby="h-devices"]`
)

// stepUpFunc answers the page's step-up prompt (see demoStepUp).
type stepUpFunc func(what, card, spent string)

// demoStepUp answers the step-up prompt a change to the user's factors brought up: it must show
// in card, ask for a code from the authenticator app, and refuse a spent code (when spent is one)
// with the server's detail while staying open for another try; the code from next (a TOTP code
// for a step not used yet) confirms it, and the prompt closes.
func demoStepUp(t *testing.T, ctx context.Context, do doFunc, eval evalFunc, console *consoleLog, screenshot func(string),
	what, card, spent string, next func() string) {
	t.Helper()
	do(what+": the page asks to confirm it's you",
		chromedp.WaitVisible(chromedp.CSS(card+` #stepup #stepup-code`)),
	)
	if title := mustText(t, ctx, "#stepup-title"); title != "Confirm it's you: enter a code from your authenticator app" {
		t.Errorf("%s: step-up prompt title %q", what, title)
	}
	attempts := 0
	submit := func(step, code string) {
		t.Helper()
		attempts++
		do(what+": "+step,
			chromedp.WaitEnabled(chromedp.ID("stepup-submit")),
			chromedp.SetValue(chromedp.ID("stepup-code"), code),
			chromedp.Click(chromedp.ID("stepup-submit")),
		)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById('stepup-form').dataset.attempts === '%d'`, attempts),
			chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("%s: %s: no answer on the page: %v\nbrowser console:\n%s", what, step, err, console.dump())
		}
	}
	if spent != "" {
		submit("submit a spent code", spent)
		do(what+": see the spent code refused", chromedp.WaitVisible(chromedp.CSS(`#stepup-error[data-code="code_replayed"] .detail`)))
		var refused struct {
			Hint, Detail string
			Open         bool
		}
		eval("read the refusal", `({Hint: document.querySelector('#stepup-error strong').textContent,
			Detail: document.querySelector('#stepup-error .detail').textContent,
			Open: !document.getElementById('stepup').hidden})`, &refused)
		if !strings.Contains(refused.Hint, "already used") || refused.Detail == "" || !refused.Open {
			t.Errorf("%s: spent code on the page: %+v, want the hint, the server's detail and the prompt still open", what, refused)
		}
		screenshot("demo-step-up.png")
	}
	submit("submit a fresh code", next())
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.getElementById('stepup').hidden`, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("%s: the step-up prompt stayed open (%q): %v\nbrowser console:\n%s", what, mustText(t, ctx, "#stepup-error"), err, console.dump())
	}
}

// demoPush enrolls a second, push-capable device for user on the page (the companion library
// with a device key, as `companion enroll --device` does; step-up first, as user has firstPHID),
// keeps a companion session logged in,
// and signs in with push: the page shows the number, the companion gets the challenge with that
// number among its candidates and approves it (PUSH_ACKNOWLEDGED, then AUTHENTICATED live with an
// mfa_token whose amr is swk, user); a second push is denied (not_me) and the page says Denied.
// At the end the push device is removed again on the page (step-up again), which turns the push
// button off. serverDevices lists the ph_ids the registry holds.
func demoPush(t *testing.T, ctx context.Context, do doFunc, eval evalFunc, console *consoleLog, screenshot func(string),
	clock *testkit.Clock, user, firstURI, firstPHID string, stepUp stepUpFunc, serverDevices func() []string) {
	t.Helper()
	poll := func(what, expr string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
			t.Fatalf("%s: %v\nbrowser console:\n%s", what, err, console.dump())
		}
	}
	file := user + ".device"
	// The page's lock countdown ran in real time; the stack's lock runs on the test clock.
	clock.Advance(5 * time.Second)

	// 10. Only a TOTP device so far: push is off, and the page says how to get a push device.
	poll("push off without a push-capable device", `document.getElementById('push-start').disabled &&
		document.getElementById('push-availability').dataset.available === 'false' && !document.getElementById('push-help').hidden`)
	var cmds struct{ Enroll, Listen string }
	eval("read the push commands", `({Enroll: document.getElementById('push-enroll-cmd').value, Listen: document.getElementById('push-listen-cmd').value})`, &cmds)
	if cmds.Enroll != "go run ./mobile-bridge/cmd/companion enroll --qr qr.png --device "+file ||
		cmds.Listen != "go run ./mobile-bridge/cmd/companion listen --device "+file {
		t.Errorf("push commands on the page: %+v", cmds)
	}

	// 11. A second enrollment on the page, after step-up, finished by a companion with a device key.
	first, _ := json.Marshal(firstURI)
	do("start a second enrollment", chromedp.Click(chromedp.ID("start")))
	stepUp("start a second enrollment", startCard, "")
	poll("see the second enrollment", fmt.Sprintf(`document.getElementById('otpauth-uri').value !== %s &&
		document.getElementById('status').dataset.status === 'INITIATED'`, first))
	uri, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("otpauth-uri")))
	if err != nil {
		t.Fatal(err)
	}
	if cmd, err := chromedp.Run(ctx, chromedp.Value(chromedp.ID("companion-cmd"))); err != nil || !strings.HasSuffix(cmd, "' --device "+file) {
		t.Errorf("companion command %q (%v), want it to enroll with --device %s", cmd, err, file)
	}
	enr, err := companion.ParseURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	key, err := companion.NewDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := companion.PublicJWK(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	enroller, err := companion.Dial(ctx, enr.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer enroller.Close()
	if _, err := enroller.Scan(ctx, enr.ExchangeID, protocol.Device{DeviceID: "browser-push-phone", Name: "Push phone", Platform: "test"}); err != nil {
		t.Fatalf("scan: %v", err)
	}
	code, err := totp.Code(enr.Secret, clock.Now(), enr.Params)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := enroller.EnrollWithKey(ctx, enr.ExchangeID, code, &jwk)
	if err != nil || ack.Status != "ENROLLED" || ack.PHID == "" {
		t.Fatalf("enroll with a device key: %+v %v", ack, err)
	}
	pushDev := fmt.Sprintf(`#devices li[data-ph-id=%q]`, ack.PHID)
	do("see the push-capable device and the push button on",
		chromedp.WaitVisible(chromedp.CSS(`#status[data-status="ENROLLED"]`)),
		chromedp.WaitVisible(chromedp.CSS(pushDev+`[data-push="true"] .push-tag`)),
		chromedp.WaitEnabled(chromedp.ID("push-start")),
	)
	if !strings.Contains(mustText(t, ctx, "#push-availability"), "Push phone") {
		t.Errorf("push availability line: %q", mustText(t, ctx, "#push-availability"))
	}
	if ids := serverDevices(); len(ids) != 2 || !slices.Contains(ids, firstPHID) || !slices.Contains(ids, ack.PHID) {
		t.Errorf("devices through the API after the second enrollment: %v, want %s and %s", ids, firstPHID, ack.PHID)
	}

	// The phone: a companion session logged in with the device key (`companion listen`).
	phone, err := companion.Dial(ctx, enr.BaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer phone.Close()
	if got, err := phone.Login(ctx, ack.PHID, key); err != nil || got.PHID != ack.PHID {
		t.Fatalf("login: %+v %v", got, err)
	}
	seen := map[string]bool{}
	challenge := func(number string) protocol.PushChallenge {
		t.Helper()
		for {
			ch := nextChallenge(t, phone)
			if seen[ch.ChallengeID] { // a repeated delivery of an answered one
				continue
			}
			seen[ch.ChallengeID] = true
			if len(ch.Numbers) != 3 || !slices.Contains(ch.Numbers, number) || ch.Context["app"] != "mfaflow demo page" {
				t.Fatalf("challenge %+v, want three candidates with the page's %s and the page's context", ch, number)
			}
			return ch
		}
	}
	startPush := func(what string) string {
		t.Helper()
		do(what, chromedp.Click(chromedp.ID("push-start")))
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`!document.getElementById('push-flow').hidden || !document.getElementById('push-error').hidden`,
			chromedp.WithPollingTimeout(10*time.Second))); err == nil && mustText(t, ctx, "#push-error") != "" {
			t.Fatalf("%s: the page says %q", what, mustText(t, ctx, "#push-error"))
		}
		poll(what+": the number shows", `/^\d\d$/.test(document.getElementById('push-number').textContent) &&
			!document.getElementById('push-prompt').hidden && document.getElementById('push-outcome').hidden &&
			document.getElementById('push-start').disabled`)
		return mustText(t, ctx, "#push-number")
	}

	// 12. Approve with the number the page shows.
	number := startPush("sign in with push")
	ch := challenge(number)
	do("see that the phone got it", chromedp.WaitVisible(chromedp.CSS(`#push-status[data-status="PUSH_ACKNOWLEDGED"]`)))
	if txt := mustText(t, ctx, "#push-status-text"); !strings.Contains(txt, "pick "+number) {
		t.Errorf("status text while the phone has it: %q", txt)
	}
	screenshot("demo-push-number.png")
	if got, err := phone.Respond(ctx, ch.ChallengeID, protocol.DecisionApprove, number, ""); err != nil || got.Status != "AUTHENTICATED" {
		t.Fatalf("approve: %+v %v", got, err)
	}
	do("see AUTHENTICATED live with the claims",
		chromedp.WaitVisible(chromedp.CSS(`#push-status[data-status="AUTHENTICATED"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#push-done[data-source="live"] #push-claims-payload`)),
	)
	var raw struct {
		Header, Payload, Outcome, Announce string
		PromptHidden                       bool
		Steps                              []string
	}
	eval("read the push outcome", `({Header: document.getElementById('push-claims-header').textContent,
		Payload: document.getElementById('push-claims-payload').textContent,
		Outcome: document.getElementById('push-outcome').textContent,
		Announce: document.getElementById('push-announce').textContent,
		PromptHidden: document.getElementById('push-prompt').hidden,
		Steps: Array.from(document.querySelectorAll('#push-steps li'), li => li.dataset.state)})`, &raw)
	var header, payload map[string]any
	if err := json.Unmarshal([]byte(raw.Header), &header); err != nil {
		t.Fatalf("decoded header %q: %v", raw.Header, err)
	}
	if err := json.Unmarshal([]byte(raw.Payload), &payload); err != nil {
		t.Fatalf("decoded payload %q: %v", raw.Payload, err)
	}
	if header["alg"] != "ES256" || payload["sub"] != user || fmt.Sprint(payload["amr"]) != "[swk user]" || payload["status_id"] == nil {
		t.Errorf("push mfa_token header %v, payload %v; want ES256, sub %s, amr [swk user]", header, payload, user)
	}
	if !strings.HasPrefix(raw.Outcome, "Authenticated as "+user) || !strings.HasPrefix(raw.Announce, "Authenticated") || !raw.PromptHidden {
		t.Errorf("push outcome %q, announcement %q, number still shown %v", raw.Outcome, raw.Announce, !raw.PromptHidden)
	}
	if len(raw.Steps) != 4 || raw.Steps[0] != "done" || raw.Steps[1] != "done" || raw.Steps[3] != "done" || (raw.Steps[2] != "done" && raw.Steps[2] != "skipped") {
		t.Errorf("push steps %v, want all passed", raw.Steps)
	}
	screenshot("demo-push-signed-in.png")

	// 13. Deny (not me): the page says Denied and shows no token.
	number = startPush("send a second push")
	ch = challenge(number)
	if got, err := phone.Respond(ctx, ch.ChallengeID, protocol.DecisionDeny, "", protocol.ReasonNotMe); err != nil || got.Status != "DENIED" {
		t.Fatalf("deny: %+v %v", got, err)
	}
	do("see Denied", chromedp.WaitVisible(chromedp.CSS(`#push-outcome[data-status="DENIED"]`)))
	if out := mustText(t, ctx, "#push-outcome"); !strings.HasPrefix(out, "Denied") {
		t.Errorf("deny outcome %q", out)
	}
	var denied struct{ Badge, Done bool }
	eval("read the denied push", `({Badge: document.getElementById('push-status').dataset.status === 'DENIED',
		Done: !document.getElementById('push-done').hidden})`, &denied)
	if !denied.Badge || denied.Done {
		t.Errorf("denied push on the page: %+v, want the DENIED badge and no claims", denied)
	}
	screenshot("demo-push-denied.png")

	// 14. Remove the push device on the page, after step-up: push is off again, and the registry
	// holds the first device only.
	do("remove the push device",
		chromedp.Click(chromedp.CSS(pushDev+` button.remove`)),
		chromedp.Click(chromedp.CSS(pushDev+` button.confirm-remove`)),
	)
	stepUp("remove the push device", devicesCard, "")
	do("see the push device gone", chromedp.WaitNotPresent(chromedp.CSS(pushDev)))
	if ids := serverDevices(); !slices.Equal(ids, []string{firstPHID}) {
		t.Errorf("devices through the API after removing the push device: %v, want only %s", ids, firstPHID)
	}
	poll("push off after removing the device", `document.getElementById('push-start').disabled &&
		document.getElementById('push-availability').dataset.available === 'false'`)
}

// mustText returns the text content of the element sel.
func mustText(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	txt, err := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return txt
}
