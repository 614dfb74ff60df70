// Package method is the one registration of mfaflow's factor methods: their names (the
// upper-case verificationType and status `type`, and the lower-case route segment), what a user
// does with each (enroll it, type a code, approve on a device) and the amr values (RFC 8176) of
// the mfa_token a sign-in with it earns.
//
// config/list, the routes that take a {method} or {type}, the tokens' amr and the tests that walk
// every method read it, so the services spell a method one way. A new method (EMAIL, SMS,
// WEBAUTHN) is one entry here plus, in each service that takes part, the code that enrolls,
// challenges and verifies it (docs/architecture.md, "Adding a factor method").
package method

import "strings"

// The methods' names, as clients and events spell them.
const (
	TOTP       = "TOTP"
	BackupCode = "BACKUPCODE"
	Push       = "PUSH"
	Email      = "EMAIL"
	SMS        = "SMS"
	WebAuthn   = "WEBAUTHN"
)

// SignIn says how a sign-in with a method is finished.
type SignIn int

const (
	// Code: the user types a code, sent to …/authentication/{method}/verification as pass_code.
	Code SignIn = iota + 1
	// Device: the user answers on an enrolled device (push over the mobile bridge); the
	// frontend watches the status.
	Device
	// Assertion: the user's browser signs a challenge with a passkey (WebAuthn). The status
	// service asks the registry for the request options (the challenge) at initiation and hands
	// the browser's assertion JSON (`credential`) to the registry at verification.
	Assertion
)

// Method describes one factor method.
type Method struct {
	// Name is the upper-case name (TOTP): config/list's verificationType, a status object's
	// and a device's `type`, events' `type`/`method`.
	Name string
	// Route is the lower-case segment of /verification-srv/authentication/{method}/… and
	// /verification-srv/v2/setup/initiate/{type}.
	Route string
	// Enrolls: POST …/setup/initiate/{Route} enrolls a factor of this method. Recovery codes
	// are generated, not enrolled; a push device enrolls as TOTP with a device key.
	Enrolls bool
	// SignIn is how a sign-in with the method is finished.
	SignIn SignIn
	// AMR are the mfa_token's amr values (RFC 8176) for a sign-in with the method.
	AMR []string
	// Channel is the notifier's channel (pkg/delivery: "email", "sms") that brings the user a
	// one-time code of the method, at enrollment and at every sign-in; empty for methods whose
	// codes the user's own authenticator makes. Such a method is active only where the
	// notifier can deliver on its channel.
	Channel string
}

var all = []Method{
	{Name: TOTP, Route: "totp", Enrolls: true, SignIn: Code, AMR: []string{"otp"}},
	// kba: knowledge-based, a code written down in advance.
	{Name: BackupCode, Route: "backupcode", SignIn: Code, AMR: []string{"kba"}},
	// swk: a software-secured key signed the answer; user: the user picked the number.
	{Name: Push, Route: "push", SignIn: Device, AMR: []string{"swk", "user"}},
	// otp: a one-time code; email / sms: how it reached the user (RFC 8176 has sms; email is
	// the name Okta and Azure AD use for the same thing by mail).
	{Name: Email, Route: "email", Enrolls: true, SignIn: Code, AMR: []string{"otp", "email"}, Channel: "email"},
	{Name: SMS, Route: "sms", Enrolls: true, SignIn: Code, AMR: []string{"otp", "sms"}, Channel: "sms"},
	// hwk: a hardware-secured key (a passkey) signed the challenge. The status service adds
	// AMRUserVerified when the authenticator verified the user (the UV flag).
	{Name: WebAuthn, Route: "webauthn", Enrolls: true, SignIn: Assertion, AMR: []string{"hwk"}},
}

// AMRUserVerified is the amr value (RFC 8176 "user") a sign-in adds when the authenticator
// itself verified the user (a passkey's UV flag: a PIN or a biometric), beyond its presence.
const AMRUserVerified = "user"

// All returns every method, in the order config/list shows them.
func All() []Method {
	out := make([]Method, len(all))
	for i, m := range all {
		m.AMR = append([]string(nil), m.AMR...)
		out[i] = m
	}
	return out
}

// ByRoute returns the method whose route segment is segment (any case).
func ByRoute(segment string) (Method, bool) {
	for _, m := range all {
		if strings.EqualFold(m.Route, segment) {
			return ByName(m.Name)
		}
	}
	return Method{}, false
}

// ByName returns the method called name (exactly, upper case).
func ByName(name string) (Method, bool) {
	for _, m := range all {
		if m.Name == name {
			m.AMR = append([]string(nil), m.AMR...)
			return m, true
		}
	}
	return Method{}, false
}

// Routes lists the route segments of the methods that satisfy keep, for messages such as
// "use totp, backupcode or push".
func Routes(keep func(Method) bool) []string {
	var out []string
	for _, m := range all {
		if keep == nil || keep(m) {
			out = append(out, m.Route)
		}
	}
	return out
}
