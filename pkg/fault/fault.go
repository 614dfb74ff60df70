// Package fault holds mfaflow's stable error codes: the `code` of every problem+json response,
// of every bridge error frame and of every micro error reply between services.
//
// Clients switch on these codes, so a code never changes meaning. Each transport maps domain
// errors to a *fault.Error in one place; the message is for people and never holds internals.
package fault

import (
	"errors"
	"net/http"
	"time"
)

// Code is a stable, machine-readable error code.
type Code string

// The codes. HTTP status for each is in Status.
const (
	BadRequest        Code = "bad_request"
	Unauthorized      Code = "unauthorized"
	Forbidden         Code = "forbidden"
	NotFound          Code = "not_found"
	Conflict          Code = "conflict"
	Expired           Code = "expired"
	InvalidCode       Code = "invalid_code"
	CodeReplayed      Code = "code_replayed"
	Locked            Code = "locked"
	NoFactor          Code = "no_factor"
	PayloadTooLarge   Code = "payload_too_large"
	UnsupportedMethod Code = "unsupported_method"
	TooManyRequests   Code = "too_many_requests"
	Unavailable       Code = "unavailable"
	Internal          Code = "internal"
	// DevTokensDisabled answers the dev stack's POST /dev/token when Bearer tokens come from an
	// identity provider (MFA_JWT_JWKS_URL): the route is not there, as outside the dev stack.
	DevTokensDisabled Code = "dev_tokens_disabled"
	// StepUpRequired: changing a user's factors (enrolling another, removing one, new recovery
	// codes) needs X-MFA-Token with a fresh, unused mfa_token of the user (DESIGN.md Part 3).
	StepUpRequired Code = "step_up_required"
	// MethodInactive: the method exists but this deployment cannot use it now (EMAIL without a
	// mail server, SMS without a provider, WEBAUTHN without a usable RP ID).
	MethodInactive Code = "method_inactive"
	// AlreadyEnrolled: the user has a factor for this address or number already.
	AlreadyEnrolled Code = "already_enrolled"
	// RegionNotAllowed: the phone number is in a region SMS is not sent to (MFA_SMS_REGIONS).
	RegionNotAllowed Code = "region_not_allowed"
	// NoContact: there is no address to mail (no EMAIL factor, no verified email claim), so MFA
	// cannot be disabled by an emailed link.
	NoContact Code = "no_contact"
	// InvalidCredential: a passkey's registration or assertion does not verify (wrong origin
	// or RP ID, a challenge that is not this exchange's or was used already, a bad signature
	// or attestation). Nothing is stored.
	InvalidCredential Code = "invalid_credential"
	// ClonedAuthenticator: between services only (the registry's answer to factors.check): a
	// passkey's signature counter went backwards, so a copy of its key may exist. Clients see
	// InvalidCredential; the sign-in's mfa.verification.failed says cloned_authenticator.
	ClonedAuthenticator Code = "cloned_authenticator"
)

// StepUpHint tells a client how to get what StepUpRequired asks for; every service that refuses
// a factor change says it the same way.
const StepUpHint = "this change to the user's factors needs X-MFA-Token with a fresh mfa_token of the user " +
	`(sign in with {"usage_type":"STEP_UP"} first); each one is accepted once`

var statuses = map[Code]int{
	BadRequest:        http.StatusBadRequest,
	Unauthorized:      http.StatusUnauthorized,
	Forbidden:         http.StatusForbidden,
	NotFound:          http.StatusNotFound,
	Conflict:          http.StatusConflict,
	Expired:           http.StatusGone,
	InvalidCode:       http.StatusBadRequest,
	CodeReplayed:      http.StatusBadRequest,
	Locked:            http.StatusTooManyRequests,
	NoFactor:          http.StatusConflict,
	PayloadTooLarge:   http.StatusRequestEntityTooLarge,
	UnsupportedMethod: http.StatusMethodNotAllowed,
	TooManyRequests:   http.StatusTooManyRequests,
	Unavailable:       http.StatusServiceUnavailable,
	Internal:          http.StatusInternalServerError,
	DevTokensDisabled: http.StatusNotFound,
	StepUpRequired:    http.StatusForbidden,
	MethodInactive:    http.StatusConflict,
	AlreadyEnrolled:   http.StatusConflict,
	RegionNotAllowed:  http.StatusBadRequest,
	NoContact:         http.StatusConflict,
	InvalidCredential: http.StatusBadRequest,
	// Never sent to a client (see ClonedAuthenticator); a status for completeness.
	ClonedAuthenticator: http.StatusBadRequest,
}

// Status is the HTTP status that goes with c; unknown codes are 500.
func (c Code) Status() int {
	if s, ok := statuses[c]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// Known reports whether c is one of the codes above.
func (c Code) Known() bool { _, ok := statuses[c]; return ok }

// ErrTransient marks the error of a dependency that was out of reach for a moment (a store's
// timeout or lost connection) rather than refusing: transports answer it Unavailable (retry),
// never Internal. Stores wrap their driver's error with it; pkg/natsx.IsTransient is NATS's own.
var ErrTransient = errors.New("out of reach for a moment")

// Error is an error with a stable code and a message safe to show a client.
type Error struct {
	Code    Code
	Message string
	// Until is when a refusal that lasts a while ends (Locked: when code checks open again);
	// zero when it does not apply. Between services it travels with the code (pkg/rpc); an
	// HTTP adapter may turn it into Retry-After.
	Until time.Time
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// New returns an *Error.
func New(code Code, message string) *Error { return &Error{Code: code, Message: message} }

// From returns the *Error in err's chain, or an Internal error that hides err's text.
func From(err error) *Error {
	var fe *Error
	if errors.As(err, &fe) {
		return fe
	}
	return &Error{Code: Internal, Message: "internal error"}
}

// CodeOf returns the code of the *Error in err's chain, or "" when there is none.
func CodeOf(err error) Code {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	return ""
}
