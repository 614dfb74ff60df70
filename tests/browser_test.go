package tests_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/mfaflow/mfaflow/events/protocol"
	"github.com/mfaflow/mfaflow/mobile-bridge/companion"
	"github.com/mfaflow/mfaflow/pkg/totp"
	"github.com/mfaflow/mfaflow/tests/harness"
)

// artifactsDir holds the screenshots of the browser test, relative to the package directory
// (the working directory of go test).
const artifactsDir = "artifacts"

// TestDemoPage drives the dev stack's demo page in headless Chromium as a person would: start an
// enrollment, watch the status go INITIATED → SCANNED → ENROLLED live while the reference
// companion plays the phone, then rename and remove the device — all without a reload.
func TestDemoPage(t *testing.T) {
	chromium := findChromium()
	if chromium == "" {
		t.Skip("chromium not installed (apt-get install chromium); browser test skipped")
	}
	st := harness.Start(t, harness.Options{}, nil)
	demoPage(t, chromium, st, st.URL+"/")
}

// demoPage runs the browser flow against the page at pageURL, served by (or in front of) st.
func demoPage(t *testing.T, chromium string, st *harness.Stack, pageURL string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
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
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
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
	if err != nil || cmd != "go run ./mobile-bridge/cmd/companion enroll --uri '"+uri+"'" {
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
	code, err := totp.Code(enr.Secret, time.Now(), enr.Params)
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

	// 6. Remove it (with the inline confirmation): the list empties.
	do("remove the device",
		chromedp.Click(chromedp.CSS(device+` button.remove`)),
		chromedp.Click(chromedp.CSS(device+` button.confirm-remove`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#devices li`)),
		chromedp.WaitVisible(chromedp.ID("devices-empty")),
	)

	var noReload bool
	eval("check for a reload", `window.__noReload === true`, &noReload)
	if !noReload {
		t.Error("the page reloaded during the flow; it must update in place")
	}
	screenshot("demo-end.png")

	if bad := console.problems(); len(bad) > 0 {
		t.Errorf("the page logged errors (CSP violations or exceptions):\n%s", strings.Join(bad, "\n"))
	}
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
func (c *consoleLog) problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, m := range c.msgs {
		if m.IsException() || m.Type == chromedp.ConsoleError {
			out = append(out, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
		}
	}
	return out
}
