// Package templates renders the notifier's messages from one set of files per message kind and
// language:
//
//	<locale>/<kind>.subject.txt   the mail's subject (text/template, one line)
//	<locale>/<kind>.txt           the mail's text part (text/template)
//	<locale>/<kind>.html          the mail's HTML part (html/template: values are escaped)
//	<locale>/<kind>.sms.txt       the SMS (text/template); the WebOTP line is appended to it
//
// en and de are built in (builtin/). A directory (MFA_TEMPLATES_DIR) of the same layout
// overrides any file, one by one, and may add languages and kinds: a new kind (a security
// notification, say) needs only its files. Links (disable_link) and security notices (one kind
// per event: device_registered, device_removed, recovery_generated, recovery_used, locked,
// push_denied, mfa_disabled, factors_reset) have mail files only. Each file is looked up in the
// user's locale, its language without region (de-AT → de), the default locale and en, the
// override directory before the built-in files at each step.
package templates

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"strings"
	texttemplate "text/template"
	"time"

	"github.com/mfaflow/mfaflow/services/notifier/internal/courier"
)

//go:embed builtin
var builtin embed.FS

// Data is what a template may use.
type Data struct {
	// Code is the one-time code.
	Code string
	// Minutes is how long the code stays valid, rounded up.
	Minutes int
	// ExpiresAt is when it expires.
	ExpiresAt time.Time
	// Issuer names the service (MFA_ISSUER).
	Issuer string
	// Host is the host of MFA_PUBLIC_URL.
	Host string
	// Destination is the masked address the message goes to.
	Destination string
	// Link is the confirmation URL (disable_link); Minutes and ExpiresAt say how long it works.
	Link string

	// The rest is what a security notice tells (zero where it does not apply; see
	// courier.Notice). Times are in UTC: the notifier does not know the user's time zone.

	// At is when it happened.
	At time.Time
	// Method is the factor's type (TOTP, EMAIL, SMS, PUSH, WEBAUTHN); FriendlyName its name.
	Method, FriendlyName string
	// ByAdmin: an administrator acted, not the user.
	ByAdmin bool
	// Remaining is how many recovery codes are left.
	Remaining int
	// Until is when a lock ends.
	Until time.Time
	// App, IP and Location describe a denied sign-in, as far as the relying app said.
	App, IP, Location string
}

// Config configures a Set.
type Config struct {
	// Dir overrides built-in files (MFA_TEMPLATES_DIR); empty means none.
	Dir string
	// DefaultLocale is used when the message's locale has no file (MFA_DEFAULT_LOCALE).
	DefaultLocale string
	Issuer        string
	// Host is put in the WebOTP line of SMS (the host of MFA_PUBLIC_URL, without port).
	Host string
	// Now is the clock that turns ExpiresAt into Minutes; nil means time.Now.
	Now func() time.Time
}

// Set renders messages; it implements courier.Renderer.
type Set struct {
	cfg      Config
	override fs.FS
	base     fs.FS
}

var _ courier.Renderer = (*Set)(nil)

var (
	kindPattern   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	localePattern = regexp.MustCompile(`^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)
)

// New returns a Set. It renders every built-in kind in the default locale once, so a broken
// override or a default locale without files fails start-up rather than the first delivery.
func New(cfg Config) (*Set, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DefaultLocale == "" {
		cfg.DefaultLocale = "en"
	}
	base, err := fs.Sub(builtin, "builtin")
	if err != nil {
		return nil, err
	}
	s := &Set{cfg: cfg, base: base}
	if cfg.Dir != "" {
		if st, err := os.Stat(cfg.Dir); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("templates: MFA_TEMPLATES_DIR is not a readable directory: %s", cfg.Dir)
		}
		s.override = os.DirFS(cfg.Dir)
	}
	probe := courier.Message{ID: "probe", Code: "123456", Masked: "a***@example.org", Locale: cfg.DefaultLocale,
		ExpiresAt: cfg.Now().Add(5 * time.Minute)}
	for _, kind := range []string{"enrollment_code", "signin_code"} {
		probe.Kind = kind
		for _, ch := range []string{courier.ChannelEmail, courier.ChannelSMS} {
			probe.Channel = ch
			if _, err := s.Render(probe); err != nil {
				return nil, err
			}
		}
	}
	// Links and notices go by mail only.
	probe = courier.Message{ID: "probe", Channel: courier.ChannelEmail, Kind: courier.KindDisableLink, Locale: cfg.DefaultLocale,
		Link: "https://example.org/confirm?token=probe", ExpiresAt: cfg.Now().Add(15 * time.Minute)}
	if _, err := s.Render(probe); err != nil {
		return nil, err
	}
	for _, kind := range courier.NoticeKinds {
		probe = courier.Message{ID: "probe", Channel: courier.ChannelEmail, Kind: kind, Locale: cfg.DefaultLocale,
			Notice: courier.Notice{At: cfg.Now(), Method: "TOTP", FriendlyName: "Phone", Remaining: 9, Until: cfg.Now().Add(time.Minute)}}
		if _, err := s.Render(probe); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Render builds m's message for its channel: subject, text and HTML for email; text for SMS,
// ending with the WebOTP line `@<host> #<code>` so browsers can offer the code.
func (s *Set) Render(m courier.Message) (courier.Rendered, error) {
	if !kindPattern.MatchString(m.Kind) {
		return courier.Rendered{}, fmt.Errorf("templates: invalid kind %q", m.Kind)
	}
	n := m.Notice
	d := Data{Code: m.Code, Minutes: minutesLeft(m.ExpiresAt, s.cfg.Now()), ExpiresAt: m.ExpiresAt,
		Issuer: s.cfg.Issuer, Host: s.cfg.Host, Destination: m.Masked, Link: m.Link,
		At: n.At.UTC(), Method: n.Method, FriendlyName: n.FriendlyName, ByAdmin: n.ByAdmin, Remaining: n.Remaining,
		Until: n.Until.UTC(), App: n.App, IP: n.IP, Location: n.Location}
	locales := s.locales(m.Locale)
	var r courier.Rendered
	var err error
	switch m.Channel {
	case courier.ChannelEmail:
		if r.Subject, err = s.text(locales, m.Kind+".subject.txt", d); err != nil {
			return r, err
		}
		// A subject is one line: a template's line breaks would start the body early.
		r.Subject = strings.Join(strings.Fields(r.Subject), " ")
		if r.Text, err = s.text(locales, m.Kind+".txt", d); err != nil {
			return r, err
		}
		if r.HTML, err = s.html(locales, m.Kind+".html", d); err != nil {
			return r, err
		}
	case courier.ChannelSMS:
		if r.Text, err = s.text(locales, m.Kind+".sms.txt", d); err != nil {
			return r, err
		}
		r.Text = strings.TrimRight(r.Text, " \r\n")
		if m.Code != "" && s.cfg.Host != "" {
			// WebOTP (https://wicg.github.io/web-otp/): the last line binds the code to our origin.
			r.Text += "\n\n@" + s.cfg.Host + " #" + m.Code
		}
	default:
		return r, fmt.Errorf("templates: unknown channel %q", m.Channel)
	}
	return r, nil
}

// locales is the look-up order for a message's locale.
func (s *Set) locales(want string) []string {
	var out []string
	add := func(l string) {
		if localePattern.MatchString(l) && !containsFold(out, l) {
			out = append(out, l)
		}
	}
	add(want)
	if lang, _, ok := strings.Cut(want, "-"); ok {
		add(lang)
	}
	add(s.cfg.DefaultLocale)
	add("en")
	return out
}

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

// errNoTemplate: no locale of the chain has the file.
var errNoTemplate = errors.New("templates: no template")

// source finds name in the first locale that has it, the override directory first.
func (s *Set) source(locales []string, name string) (string, string, error) {
	for _, l := range locales {
		for _, fsys := range []fs.FS{s.override, s.base} {
			if fsys == nil {
				continue
			}
			file := path.Join(l, name)
			b, err := fs.ReadFile(fsys, file)
			if err == nil {
				return file, string(b), nil
			}
			if !errors.Is(err, fs.ErrNotExist) {
				return "", "", fmt.Errorf("templates: read %s: %w", file, err)
			}
		}
	}
	return "", "", fmt.Errorf("%w %s in %v", errNoTemplate, name, locales)
}

func (s *Set) text(locales []string, name string, d Data) (string, error) {
	return s.render(locales, name, d, func(file, src string) (executor, error) {
		return texttemplate.New(file).Option("missingkey=error").Parse(src)
	})
}

func (s *Set) html(locales []string, name string, d Data) (string, error) {
	return s.render(locales, name, d, func(file, src string) (executor, error) {
		return htmltemplate.New(file).Option("missingkey=error").Parse(src)
	})
}

// executor is what text/template and html/template templates have in common.
type executor interface {
	Execute(w io.Writer, data any) error
}

// render finds the template name for locales, parses it with parse and executes it with d.
func (s *Set) render(locales []string, name string, d Data, parse func(file, src string) (executor, error)) (string, error) {
	file, src, err := s.source(locales, name)
	if err != nil {
		return "", err
	}
	t, err := parse(file, src)
	if err != nil {
		return "", fmt.Errorf("templates: parse %s: %w", file, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("templates: render %s: %w", file, err)
	}
	return b.String(), nil
}

// minutesLeft is the validity in whole minutes, rounded up (a code valid 4m30s says 5), at
// least 1.
func minutesLeft(expires, now time.Time) int {
	d := expires.Sub(now)
	m := int((d + time.Minute - 1) / time.Minute)
	return max(m, 1)
}
