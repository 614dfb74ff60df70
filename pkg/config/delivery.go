package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"regexp"
	"strings"

	"github.com/mfaflow/mfaflow/pkg/delivery"
)

// SMTP URL schemes (MFA_SMTP_URL): how the notifier talks to the mail server.
const (
	// SchemeSMTP requires STARTTLS: a server that does not offer it gets no mail, so a network
	// attacker cannot strip TLS and read codes.
	SchemeSMTP = "smtp"
	// SchemeSMTPS is TLS from the first byte (port 465).
	SchemeSMTPS = "smtps"
	// SchemeSMTPInsecure is plain SMTP without TLS, for a development server on loopback.
	SchemeSMTPInsecure = "smtp+insecure"
)

// SMS providers (MFA_SMS_PROVIDER).
const (
	SMSWebhook = "webhook"
	SMSTwilio  = "twilio"
)

// MinSMSWebhookSecretBytes is the shortest MFA_SMS_WEBHOOK_SECRET, as for push wake-ups: an
// HMAC-SHA256 key should be as long as the hash.
const MinSMSWebhookSecretBytes = MinPushWebhookSecretBytes

// localePattern is a BCP 47-ish language tag: en, de, pt-BR.
var localePattern = regexp.MustCompile(`^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$`)

// validateDelivery checks the notifier's settings. No message echoes a URL, a token or a key:
// each may hold a credential.
func (c Config) validateDelivery() []error {
	var errs []error
	if c.SMTPURL != "" {
		u, err := url.Parse(c.SMTPURL)
		switch {
		case err != nil || u.Host == "" || u.Hostname() == "":
			errs = append(errs, errors.New("MFA_SMTP_URL: want smtp://user:pass@host:587, smtps://host:465 or smtp+insecure://host:1025"))
		case u.Scheme != SchemeSMTP && u.Scheme != SchemeSMTPS && u.Scheme != SchemeSMTPInsecure:
			errs = append(errs, fmt.Errorf("MFA_SMTP_URL: scheme must be smtp (STARTTLS required), smtps (implicit TLS) or smtp+insecure (plain, development only), got %q", u.Scheme))
		case u.Path != "" && u.Path != "/" || u.RawQuery != "":
			errs = append(errs, errors.New("MFA_SMTP_URL: want no path or query, only scheme, optional user:pass, host and port"))
		}
	}
	if a, err := mail.ParseAddress(c.MailFrom); err != nil || !strings.Contains(a.Address, "@") {
		errs = append(errs, fmt.Errorf("MFA_MAIL_FROM: want an address such as `mfaflow <no-reply@example.org>`, got %q", c.MailFrom))
	}
	switch c.SMSProvider {
	case "":
	case SMSWebhook:
		if u, err := url.Parse(c.SMSWebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("MFA_SMS_PROVIDER=webhook needs MFA_SMS_WEBHOOK_URL: an absolute http or https URL such as https://sms.example.com/send"))
		}
		if len(c.SMSWebhookSecret) < MinSMSWebhookSecretBytes {
			errs = append(errs, fmt.Errorf("MFA_SMS_PROVIDER=webhook needs MFA_SMS_WEBHOOK_SECRET of at least %d bytes", MinSMSWebhookSecretBytes))
		}
	case SMSTwilio:
		var missing []string
		for _, v := range []struct{ name, value string }{
			{"MFA_TWILIO_ACCOUNT_SID", c.TwilioAccountSID}, {"MFA_TWILIO_AUTH_TOKEN", c.TwilioAuthToken}, {"MFA_TWILIO_FROM", c.TwilioFrom},
		} {
			if v.value == "" {
				missing = append(missing, v.name)
			}
		}
		if len(missing) > 0 {
			errs = append(errs, fmt.Errorf("MFA_SMS_PROVIDER=twilio needs %s", strings.Join(missing, ", ")))
		}
		if strings.ContainsAny(c.TwilioAccountSID, "/?#") {
			errs = append(errs, errors.New("MFA_TWILIO_ACCOUNT_SID: want an account SID (AC…), not a URL"))
		}
		if u, err := url.Parse(c.TwilioBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("MFA_TWILIO_BASE_URL: want an absolute http or https URL such as https://api.twilio.com"))
		}
	default:
		errs = append(errs, fmt.Errorf("MFA_SMS_PROVIDER: want webhook, twilio or nothing, got %q", c.SMSProvider))
	}
	if c.DeliveryKey != "" {
		if _, err := ParseKey(c.DeliveryKey, delivery.KeySize); err != nil {
			errs = append(errs, fmt.Errorf("MFA_DELIVERY_KEY: %w", err))
		}
	}
	if !localePattern.MatchString(c.DefaultLocale) {
		errs = append(errs, fmt.Errorf("MFA_DEFAULT_LOCALE: want a language tag such as en or de, got %q", c.DefaultLocale))
	}
	return errs
}

// DeliveryKeyBytes is MFA_DELIVERY_KEY decoded: the key of delivery.Seal and delivery.Open,
// shared by every publisher of delivery requests and the notifier.
func (c Config) DeliveryKeyBytes() ([]byte, error) {
	if c.DeliveryKey == "" {
		return nil, errors.New("MFA_DELIVERY_KEY (32 bytes, base64 or hex) is required")
	}
	k, err := ParseKey(c.DeliveryKey, delivery.KeySize)
	if err != nil {
		return nil, fmt.Errorf("MFA_DELIVERY_KEY: %w", err)
	}
	return k, nil
}

// ParseKey decodes a key as operators write it into configuration: base64 (standard or URL
// alphabet, padded or not) or hex, decoding to exactly size bytes. Every key setting
// (MFA_SECRET_KEY through the registry's secretbox.ParseKey, MFA_DELIVERY_KEY) is read by it, so
// all are written the same way. The error never echoes the input, since the input is the key.
func ParseKey(s string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty key")
	}
	// Hex first: 2×size hex digits are also valid base64 (of 1.5×size bytes), so the length
	// decides in hex's favour.
	if len(s) == 2*size {
		if k, err := hex.DecodeString(s); err == nil {
			return k, nil
		}
	}
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		if k, err := enc.DecodeString(s); err == nil {
			if len(k) != size {
				return nil, fmt.Errorf("key must decode to %d bytes, got %d", size, len(k))
			}
			return k, nil
		}
	}
	return nil, fmt.Errorf("key is neither base64 nor hex of %d bytes", size)
}

// RedactURL is u without its password (user and host stay), for logs.
func RedactURL(u string) string {
	if u == "" {
		return ""
	}
	p, err := url.Parse(u)
	if err != nil {
		return "********"
	}
	return p.Redacted()
}

// hostOnly is scheme://host of u: the path or query of a webhook URL may be a credential.
func hostOnly(u string) string {
	if u == "" {
		return ""
	}
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Scheme + "://" + p.Host
	}
	return "********"
}
