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
