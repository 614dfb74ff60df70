package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
)

// The user verification a passkey ceremony asks for (MFA_WEBAUTHN_USER_VERIFICATION).
const (
	UserVerificationPreferred = "preferred"
	UserVerificationRequired  = "required"
)

// WebAuthn is the relying party of passkeys (WEBAUTHN) as the settings resolve it: the
// defaults come from MFA_PUBLIC_URL and MFA_ISSUER.
type WebAuthn struct {
	// RPID is the relying party id: the domain passkeys are bound to.
	RPID string
	// RPName is the name authenticators show.
	RPName string
	// Origins are the origins (scheme://host[:port]) browsers may run ceremonies from.
	Origins []string
	// UserVerification is preferred or required.
	UserVerification string
}

// WebAuthn resolves the passkey settings and decides whether they can work. Every service
// asks this one function: err says why not and what to set (it names settings, never
// secrets). Passkeys are then inactive (config/list shows WEBAUTHN with active false and its
// routes answer 409 method_inactive); nothing else stops.
//
// They cannot work when the RP ID is not a domain name (an IP address never is: browsers and
// go-webauthn refuse it; localhost is one), when an origin is not an http(s) origin whose host
// is the RP ID or below it, or when an origin is plain http anywhere but localhost (browsers
// offer WebAuthn only in secure contexts).
func (c Config) WebAuthn() (WebAuthn, error) {
	w := WebAuthn{RPID: c.WebAuthnRPID, RPName: c.WebAuthnRPName, Origins: c.WebAuthnOrigins, UserVerification: c.WebAuthnUserVerification}
	if w.RPName == "" {
		w.RPName = c.Issuer
	}
	if w.UserVerification == "" {
		w.UserVerification = UserVerificationPreferred
	}
	pub, perr := url.Parse(c.PublicURL)
	if w.RPID == "" && perr == nil {
		w.RPID = strings.ToLower(pub.Hostname())
	}
	if len(w.Origins) == 0 && perr == nil && pub.Scheme != "" && pub.Host != "" {
		w.Origins = []string{strings.ToLower(pub.Scheme + "://" + pub.Host)}
	}
	if err := validRPID(w.RPID); err != nil {
		return w, fmt.Errorf("the RP ID %q (MFA_WEBAUTHN_RP_ID, default the host of MFA_PUBLIC_URL) %v; set MFA_WEBAUTHN_RP_ID to a domain name (localhost for development) and MFA_WEBAUTHN_ORIGINS to the origins under it", w.RPID, err)
	}
	if len(w.Origins) == 0 {
		return w, fmt.Errorf("no origins: set MFA_WEBAUTHN_ORIGINS (https://app.%s) or MFA_PUBLIC_URL", w.RPID)
	}
	for _, o := range w.Origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return w, fmt.Errorf("MFA_WEBAUTHN_ORIGINS: %q is not an origin (https://host[:port]); set MFA_WEBAUTHN_ORIGINS", o)
		}
		host := strings.ToLower(u.Hostname())
		if host != w.RPID && !strings.HasSuffix(host, "."+w.RPID) {
			return w, fmt.Errorf("MFA_WEBAUTHN_ORIGINS: the host of %q is not the RP ID %q or below it; set MFA_WEBAUTHN_RP_ID or MFA_WEBAUTHN_ORIGINS", o, w.RPID)
		}
		if u.Scheme == "http" && host != "localhost" && !strings.HasSuffix(host, ".localhost") {
			return w, fmt.Errorf("MFA_WEBAUTHN_ORIGINS: %q is plain http, where browsers offer no WebAuthn (only https, or http on localhost)", o)
		}
	}
	return w, nil
}

// validRPID applies the rules of a valid domain string that browsers and go-webauthn apply to an
// RP ID (MIGRATION.md of go-webauthn v0.18, "The Relying Party ID is validated as a domain
// string"): not an IP address, ASCII labels of 1 to 63 characters that neither begin nor end
// with a hyphen, a final label that is not all digits, at most 253 characters, and more than
// one label unless it is localhost.
func validRPID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("is empty")
	case net.ParseIP(strings.Trim(id, "[]")) != nil:
		return fmt.Errorf("is an IP address, which cannot be an RP ID")
	case len(id) > 253:
		return fmt.Errorf("is longer than 253 characters")
	}
	labels := strings.Split(id, ".")
	if len(labels) == 1 && id != "localhost" {
		return fmt.Errorf("is a single label other than localhost")
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("has an empty, too long or hyphen-edged label")
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("is not a lower-case ASCII domain name (use the A-label of an internationalised name)")
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return fmt.Errorf("ends in an all-numeric label")
	}
	return nil
}
