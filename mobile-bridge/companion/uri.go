package companion

import (
	"encoding/base32"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/mfaflow/mfaflow/pkg/totp"
)

// Enrollment is what an otpauth URI tells a companion: the Key Uri Format fields every
// authenticator app reads, plus cidaas's parameters that let a companion report to the bridge.
type Enrollment struct {
	// URI is the otpauth URI as given.
	URI string
	// Secret is the base32 TOTP secret, upper case without padding or spaces.
	Secret string
	// Issuer is the issuer parameter, or the label prefix when the parameter is absent.
	Issuer string
	// Account is the label after the issuer prefix.
	Account string
	// ExchangeID (eid) is the capability that lets this companion report on the enrollment.
	ExchangeID string
	// BaseURL (burl) is the public base URL of the mfaflow deployment, where the bridge is.
	BaseURL string
	// ClientID (cid) and Sub (sub) identify the relying application and the user.
	ClientID string
	Sub      string
	// Method (t) is the cidaas verification type, "totp"; empty in plain URIs.
	Method string
	// Params are the algorithm, digits and period, with the Key Uri Format defaults.
	Params totp.Params
}

// ErrNotBridged is returned by Enroll for a URI without eid or burl: a plain authenticator URI
// whose enrollment can only be completed by typing the code into the frontend.
var ErrNotBridged = errors.New("companion: URI has no eid/burl; type the code into the frontend instead")

// ParseURI parses an otpauth://totp URI. It refuses what no TOTP app could use (another scheme,
// HOTP, no or malformed secret, parameters outside what RFC 4226/6238 allow) rather than
// guessing, because a companion that guesses enrolls a device that shows wrong codes.
// ExchangeID and BaseURL may be empty: plain authenticator URIs do not carry them.
func ParseURI(uri string) (Enrollment, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Enrollment{}, fmt.Errorf("companion: not a URI: %w", err)
	}
	if !strings.EqualFold(u.Scheme, "otpauth") {
		return Enrollment{}, fmt.Errorf("companion: scheme %q, want otpauth", u.Scheme)
	}
	if !strings.EqualFold(u.Host, "totp") {
		return Enrollment{}, fmt.Errorf("companion: otpauth type %q is not supported, want totp", u.Host)
	}
	q := u.Query()
	e := Enrollment{
		URI:        uri,
		Issuer:     q.Get("issuer"),
		ExchangeID: q.Get("eid"),
		BaseURL:    q.Get("burl"),
		ClientID:   q.Get("cid"),
		Sub:        q.Get("sub"),
		Method:     q.Get("t"),
		Params:     totp.Default,
	}

	// u.Path is already unescaped, so "ACME%3Aalice%40example.com" splits like "ACME:alice@…".
	label := strings.TrimPrefix(u.Path, "/")
	if prefix, account, ok := strings.Cut(label, ":"); ok {
		e.Account = strings.TrimSpace(account)
		if e.Issuer == "" {
			e.Issuer = prefix
		}
	} else {
		e.Account = label
	}

	e.Secret = strings.ToUpper(strings.ReplaceAll(q.Get("secret"), " ", ""))
	e.Secret = strings.TrimRight(e.Secret, "=")
	if e.Secret == "" {
		return Enrollment{}, errors.New("companion: URI has no secret")
	}
	if _, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(e.Secret); err != nil {
		return Enrollment{}, errors.New("companion: secret is not base32")
	}

	if a := q.Get("algorithm"); a != "" {
		switch strings.ToUpper(a) {
		case "SHA1", "SHA256", "SHA512":
			e.Params.Algorithm = strings.ToUpper(a)
		default:
			return Enrollment{}, fmt.Errorf("companion: algorithm %q is not supported", a)
		}
	}
	if d := q.Get("digits"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 6 || n > 8 {
			return Enrollment{}, fmt.Errorf("companion: digits %q, want 6 to 8", d)
		}
		e.Params.Digits = n
	}
	if p := q.Get("period"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 {
			return Enrollment{}, fmt.Errorf("companion: period %q, want a positive number of seconds", p)
		}
		e.Params.Period = n
	}
	if e.BaseURL != "" {
		b, err := url.Parse(e.BaseURL)
		if err != nil || (b.Scheme != "http" && b.Scheme != "https") || b.Host == "" {
			return Enrollment{}, fmt.Errorf("companion: burl %q is not an http(s) URL", e.BaseURL)
		}
	}
	return e, nil
}
