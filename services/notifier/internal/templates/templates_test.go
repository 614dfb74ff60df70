package templates_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
	"github.com/mfaflow/mfaflow/services/notifier/internal/templates"
)

var now = time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)

func msg(channel, kind, locale string) courier.Message {
	return courier.Message{ID: "d-1", Channel: channel, Kind: kind, Code: "123456", Locale: locale, Masked: "a***@example.org",
		ExpiresAt: now.Add(4*time.Minute + 30*time.Second)}
}

func newSet(t *testing.T, dir string) *templates.Set {
	t.Helper()
	s, err := templates.New(templates.Config{Dir: dir, DefaultLocale: "en", Issuer: "Shop <&>", Host: "login.example.org", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBuiltIn(t *testing.T) {
	s := newSet(t, "")
	r, err := s.Render(msg(courier.ChannelEmail, "enrollment_code", "de-CH"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Subject, "Bestätigungscode") || strings.Contains(r.Subject, "\n") || !strings.Contains(r.Text, "5 Minuten") ||
		!strings.Contains(r.HTML, "Shop &lt;&amp;&gt;") || !strings.Contains(r.Text, "Shop <&>") {
		t.Fatalf("rendered %+v", r)
	}
	r, err = s.Render(msg(courier.ChannelSMS, "signin_code", "fr"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(r.Text, "\n")
	if !strings.Contains(r.Text, "sign-in code") || lines[len(lines)-1] != "@login.example.org #123456" {
		t.Fatalf("sms %q", r.Text)
	}
	if _, err := s.Render(msg(courier.ChannelEmail, "../secret", "en")); err == nil {
		t.Fatal("a kind with a path was rendered")
	}
	if _, err := s.Render(msg(courier.ChannelEmail, "factor_added", "en")); err == nil {
		t.Fatal("a kind without templates was rendered")
	}
}

// TestOverride: a file in the directory replaces its built-in twin only; a new kind needs
// only its files.
func TestOverride(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("en/signin_code.subject.txt", "Your code: {{.Code}}")
	write("en/factor_added.subject.txt", "A factor was added")
	write("en/factor_added.txt", "Someone added a factor.")
	write("en/factor_added.html", "<p>Someone added a factor.</p>")
	s := newSet(t, dir)
	r, err := s.Render(msg(courier.ChannelEmail, "signin_code", "en"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Subject != "Your code: 123456" || !strings.Contains(r.Text, "Did not try to sign in?") {
		t.Fatalf("rendered %+v", r)
	}
	if r, err := s.Render(msg(courier.ChannelEmail, "factor_added", "de")); err != nil || r.Subject != "A factor was added" {
		t.Fatalf("new kind: %+v %v", r, err)
	}
	write("en/signin_code.txt", "{{.Nope}}")
	if _, err := templates.New(templates.Config{Dir: dir, DefaultLocale: "en"}); err == nil {
		t.Fatal("a broken override passed start-up")
	}
}

// TestNoticesAndLink renders every notice kind and the disable link in both built-in
// languages: each says what happened, when, and what to do when it was not the user.
func TestNoticesAndLink(t *testing.T) {
	s := newSet(t, "")
	n := courier.Notice{At: now, Method: "TOTP", FriendlyName: "Pixel <7>", Remaining: 3, Until: now.Add(15 * time.Minute),
		App: "Shop", IP: "192.0.2.1"}
	want := map[string]map[string][]string{
		"en": {
			"device_registered":  {"was added", "authenticator app", "14 March 2026 at 09:00 UTC", "Was it not you?"},
			"device_removed":     {"was removed", "Pixel <7>", "support team"},
			"recovery_generated": {"3 recovery codes", "no longer work", "support team"},
			"recovery_used":      {"recovery code was used", "3 recovery codes left", "support team"},
			"locked":             {"too many wrong codes", "09:15 UTC", "support team"},
			"push_denied":        {"This was not me", "Shop", "192.0.2.1", "Change your password"},
			"mfa_disabled":       {"MFA", "was disabled", "Was it not you?"},
			"factors_reset":      {"administrator", "support team"},
		},
		"de": {
			"device_registered":  {"hinzugefügt", "Authenticator-App", "14.03.2026 um 09:00 UTC", "Das waren nicht Sie?"},
			"device_removed":     {"entfernt", "Pixel <7>", "Support"},
			"recovery_generated": {"3 neue Wiederherstellungscodes", "Support"},
			"recovery_used":      {"noch 3 Wiederherstellungscodes", "Support"},
			"locked":             {"zu viele falsche Codes", "09:15 UTC", "Support"},
			"push_denied":        {"Das war ich nicht", "Shop", "Passwort"},
			"mfa_disabled":       {"ausgeschaltet", "Das waren nicht Sie?"},
			"factors_reset":      {"Administrator", "Support"},
		},
	}
	for locale, kinds := range want {
		for kind, parts := range kinds {
			t.Run(locale+"/"+kind, func(t *testing.T) {
				r, err := s.Render(courier.Message{ID: "n-1", Channel: courier.ChannelEmail, Kind: kind, Locale: locale, Notice: n})
				if err != nil {
					t.Fatal(err)
				}
				if r.Subject == "" || strings.Contains(r.Subject, "\n") || !strings.Contains(r.HTML, "<p>") {
					t.Fatalf("rendered %+v", r)
				}
				for _, p := range parts {
					if !strings.Contains(r.Text, p) {
						t.Errorf("text lacks %q:\n%s", p, r.Text)
					}
				}
				if strings.Contains(r.HTML, "Pixel <7>") {
					t.Error("HTML does not escape the friendly name")
				}
			})
		}
	}
	t.Run("DisableLink", func(t *testing.T) {
		link := "https://app.example.org/mfa/disable?token=tok_123"
		for locale, words := range map[string][2]string{"en": {"Confirm disabling MFA", "15 minutes"}, "de": {"MFA ausschalten bestätigen", "15 Minuten"}} {
			r, err := s.Render(courier.Message{ID: "d-1", Channel: courier.ChannelEmail, Kind: "disable_link", Locale: locale,
				Link: link, ExpiresAt: now.Add(15 * time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(r.Text, link) || !strings.Contains(r.Text, words[1]) || !strings.Contains(r.HTML, `href="`+link+`"`) ||
				!strings.Contains(r.HTML, words[0]) {
				t.Fatalf("%s: rendered %+v", locale, r)
			}
		}
	})
}
