package config_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"

	"github.com/mfaflow/mfaflow/pkg/config"
)

var deliveryKey = bytes.Repeat([]byte{7}, 32)

func TestDeliveryDefaults(t *testing.T) {
	c, err := config.FromEnv(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.MailFrom != "mfaflow <no-reply@example.org>" || c.TwilioBaseURL != "https://api.twilio.com" || c.DefaultLocale != "en" ||
		c.SMTPURL != "" || c.SMSProvider != "" || c.DeliveryKey != "" || c.TemplatesDir != "" {
		t.Fatalf("defaults: %+v", c)
	}
	if _, err := c.DeliveryKeyBytes(); err == nil || !strings.Contains(err.Error(), "MFA_DELIVERY_KEY") {
		t.Fatalf("DeliveryKeyBytes without a key: %v", err)
	}
}

func TestDeliveryKeyBytes(t *testing.T) {
	for name, s := range map[string]string{
		"base64":     base64.StdEncoding.EncodeToString(deliveryKey),
		"base64 raw": base64.RawURLEncoding.EncodeToString(deliveryKey),
		"hex":        hex.EncodeToString(deliveryKey),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := config.FromEnv(env(map[string]string{"MFA_DELIVERY_KEY": s}))
			if err != nil {
				t.Fatal(err)
			}
			k, err := c.DeliveryKeyBytes()
			if err != nil || !bytes.Equal(k, deliveryKey) {
				t.Fatalf("DeliveryKeyBytes = %x, %v", k, err)
			}
		})
	}
	_, err := config.FromEnv(env(map[string]string{"MFA_DELIVERY_KEY": base64.StdEncoding.EncodeToString(deliveryKey[:16])}))
	if err == nil || !strings.Contains(err.Error(), "MFA_DELIVERY_KEY") || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("short key: %v", err)
	}
}

func TestDeliverySettingsValid(t *testing.T) {
	for name, m := range map[string]map[string]string{
		"smtp with STARTTLS and auth": {"MFA_SMTP_URL": "smtp://user:pass@mail.example.org:587"},
		"smtps":                       {"MFA_SMTP_URL": "smtps://mail.example.org:465"},
		"plain for development":       {"MFA_SMTP_URL": "smtp+insecure://127.0.0.1:1025"},
		"webhook":                     {"MFA_SMS_PROVIDER": "webhook", "MFA_SMS_WEBHOOK_URL": "https://sms.example.org/send", "MFA_SMS_WEBHOOK_SECRET": strings.Repeat("s", 32)},
		"twilio":                      {"MFA_SMS_PROVIDER": "twilio", "MFA_TWILIO_ACCOUNT_SID": "AC123", "MFA_TWILIO_AUTH_TOKEN": "tok", "MFA_TWILIO_FROM": "+15005550006"},
		"bare from address":           {"MFA_MAIL_FROM": "codes@example.org"},
		"locale with region":          {"MFA_DEFAULT_LOCALE": "pt-BR"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := config.FromEnv(env(m)); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestDeliverySettingsErrors(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"bad scheme", map[string]string{"MFA_SMTP_URL": "http://mail.example.org"}, "MFA_SMTP_URL: scheme must be smtp"},
		{"no host", map[string]string{"MFA_SMTP_URL": "smtp://"}, "MFA_SMTP_URL: want"},
		{"a path", map[string]string{"MFA_SMTP_URL": "smtp://mail.example.org/x"}, "MFA_SMTP_URL: want no path"},
		{"bad from", map[string]string{"MFA_MAIL_FROM": "not an address"}, "MFA_MAIL_FROM"},
		{"unknown provider", map[string]string{"MFA_SMS_PROVIDER": "carrier-pigeon"}, "MFA_SMS_PROVIDER: want webhook, twilio"},
		{"webhook without url", map[string]string{"MFA_SMS_PROVIDER": "webhook", "MFA_SMS_WEBHOOK_SECRET": strings.Repeat("s", 32)}, "needs MFA_SMS_WEBHOOK_URL"},
		{"webhook with a short secret", map[string]string{"MFA_SMS_PROVIDER": "webhook", "MFA_SMS_WEBHOOK_URL": "https://sms.example.org/send", "MFA_SMS_WEBHOOK_SECRET": "short"}, "MFA_SMS_WEBHOOK_SECRET of at least 32 bytes"},
		{"twilio without token and from", map[string]string{"MFA_SMS_PROVIDER": "twilio", "MFA_TWILIO_ACCOUNT_SID": "AC123"}, "needs MFA_TWILIO_AUTH_TOKEN, MFA_TWILIO_FROM"},
		{"twilio with a bad base url", map[string]string{"MFA_SMS_PROVIDER": "twilio", "MFA_TWILIO_ACCOUNT_SID": "AC1", "MFA_TWILIO_AUTH_TOKEN": "t", "MFA_TWILIO_FROM": "+1", "MFA_TWILIO_BASE_URL": "ftp://x"}, "MFA_TWILIO_BASE_URL"},
		{"bad locale", map[string]string{"MFA_DEFAULT_LOCALE": "../etc"}, "MFA_DEFAULT_LOCALE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.FromEnv(env(c.env))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to mention %q", err, c.want)
			}
		})
	}
}

func TestLogValueMasksDeliverySecrets(t *testing.T) {
	c, err := config.FromEnv(env(map[string]string{
		"MFA_SMTP_URL":     "smtp://mailer:smtp-password@mail.example.org:587",
		"MFA_SMS_PROVIDER": "webhook", "MFA_SMS_WEBHOOK_URL": "https://sms.example.org/send?token=hook-token", "MFA_SMS_WEBHOOK_SECRET": "hook-secret-" + strings.Repeat("s", 32),
		"MFA_TWILIO_AUTH_TOKEN": "twilio-token", "MFA_DELIVERY_KEY": hex.EncodeToString(deliveryKey),
	}))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("start", "config", c)
	for _, secret := range []string{"smtp-password", "hook-token", "hook-secret", "twilio-token", hex.EncodeToString(deliveryKey)} {
		if strings.Contains(buf.String(), secret) {
			t.Fatalf("log holds %q: %s", secret, buf.String())
		}
	}
	for _, want := range []string{"mail.example.org:587", "sms_webhook_url=https://sms.example.org ", "delivery_key=********", "sms_provider=webhook"} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log lacks %q: %s", want, buf.String())
		}
	}
}
