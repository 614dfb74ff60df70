// Package enrollment is the enrollment state machine of mfaflow (cidaas style):
//
//	INITIATED → SCANNED → ENROLLED
//	INITIATED → ENROLLED                 (code typed into the frontend)
//	INITIATED | SCANNED → EXPIRED | CANCELLED | FAILED
//
// and the authentication (sign-in verification) state machine, on the same status object:
//
//	INITIATED → AUTHENTICATED
//	INITIATED → EXPIRED | CANCELLED
//
// Terminal states never change. Every transition is a compare-and-set on the stored enrollment
// and carries its CloudEvent in the same write (outbox), so the state and the fact that it
// changed can never disagree. The package imports no transport.
package enrollment

import (
	"errors"
	"time"
)

// State is an enrollment state.
type State string

// The states.
const (
	Initiated State = "INITIATED"
	Scanned   State = "SCANNED"
	Enrolled  State = "ENROLLED"
	Expired   State = "EXPIRED"
	Cancelled State = "CANCELLED"
	Failed    State = "FAILED"
	// Authenticated: an authentication's code was right.
	Authenticated State = "AUTHENTICATED"
)

// Terminal reports whether s can never change again.
func (s State) Terminal() bool {
	return s == Enrolled || s == Expired || s == Cancelled || s == Failed || s == Authenticated || s == Denied
}

// Kind says which state machine a status object follows.
type Kind string

// The kinds. The zero Kind is an enrollment, so documents written before authentications
// existed read as what they are.
const (
	KindEnrollment     Kind = ""
	KindAuthentication Kind = "authentication"
)

// Methods: TOTP enrolls and authenticates; BACKUPCODE (a recovery code) only authenticates.
const (
	MethodTOTP       = "TOTP"
	MethodBackupCode = "BACKUPCODE"
)

// Domain errors. Transports map them to codes in one place each. The outcomes of a code check,
// which the registry's domain shares, are pkg/factor's (ErrInvalidCode, ErrReplayed,
// ErrMalformedCode, ErrNoFactor, ErrLocked with a *factor.LockedError); a wrong enrollment code
// is factor.ErrInvalidCode too, and the enrollment stays open until too many attempts.
var (
	ErrNotFound = errors.New("enrollment not found")
	ErrExpired  = errors.New("enrollment expired")
	// ErrConflict: the request contradicts the enrollment's state (e.g. scanning an enrolled one).
	ErrConflict = errors.New("enrollment state conflict")
	// ErrFailed: this wrong code was one too many; the enrollment is now FAILED.
	ErrFailed = errors.New("too many invalid codes")
	// ErrCredentialVoid (from the Registry): the enrollment's pending credential can no longer
	// be verified (the user's factors were reset since it was made, or its key left the ring),
	// so the enrollment can never be completed.
	ErrCredentialVoid = errors.New("the pending credential is void")
	// ErrStale: the stored enrollment changed since it was read (compare-and-set lost).
	ErrStale = errors.New("enrollment changed concurrently")
	// ErrBadRequest: the request itself is malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrStepUpRequired: a factor change came without a valid step-up proof (an mfa_token of
	// the user, fresh and unused); the wrapped text says which part failed.
	ErrStepUpRequired = errors.New("step-up required")
)

// Device is the authenticator device as the companion app describes it.
type Device struct {
	DeviceID string
	Name     string
	Platform string
	// Key is the public key of a push-capable companion (enroll only); the registry checks it.
	Key *DeviceKey
}

// DeviceKey is a companion's public key as a JWK (EC P-256).
type DeviceKey struct{ Kty, Crv, X, Y string }

// Enrollment is one status object: an attempt of a user to enroll an authenticator or, with
// Kind KindAuthentication, to prove a factor at sign-in.
type Enrollment struct {
	ID         string // status_id
	ExchangeID string
	Sub        string
	Method     string
	Kind       Kind
	State      State
	CreatedAt  time.Time
	UpdatedAt  time.Time
	ExpiresAt  time.Time
	// Device is what the companion reported at scan, if it scanned.
	Device Device
	// DeviceID and PHID name the registered device once ENROLLED.
	DeviceID string
	PHID     string
	// FailedAttempts counts wrong codes; MaxAttempts of them make an enrollment FAILED (an
	// authentication instead stays open until the user's lockout or its expiry).
	FailedAttempts int
	// Initiator is the subject of the token that started an authentication (the user, or the
	// service acting for the user); it may read and finish it, and gets its mfa_token.
	Initiator string
	// ClientID is the relying app an authentication is for: the audience of its mfa_token.
	ClientID string
	// Context is what the relying app said about the sign-in (app, ip, user_agent, location).
	Context map[string]string
	// AuthTime is when an authentication became AUTHENTICATED.
	AuthTime time.Time
	// StepUpUsedAt is when the mfa_token of an AUTHENTICATED authentication was spent as the
	// step-up proof of a factor change (X-MFA-Token); it can be spent once.
	StepUpUsedAt time.Time
	// Number is the two-digit number a push authentication's frontend shows; Candidates are the
	// three the device offers (Number among them). Neither is ever in an event.
	Number     string
	Candidates []string
	// PendingCredential is the registry's sealed pending credential of an enrollment (see
	// Registry): opaque here, handed back with the code, dropped when the enrollment ends. It
	// is never in an event, a reply or a log.
	PendingCredential []byte
	// EnrollProof is the keyed hash of the companion's enroll frame that made the enrollment
	// ENROLLED (code, device id, device key thumbprint), so that the same frame repeated shortly
	// after is answered again (repeat.go). Never the code itself; never in an event, a reply or
	// a log.
	EnrollProof []byte
	// Version is the store's revision of this enrollment, for compare-and-set.
	Version uint64
	// Seq counts this enrollment's writes: 1 when created, one more with every
	// compare-and-set write. Unlike Version it is the same number on every backend (a KV
	// revision counts the bucket's writes, not the enrollment's), and unlike UpdatedAt it does
	// not depend on any replica's clock, so live streams and ETags order versions by it.
	Seq uint64
}

// Caller is who asks about a status object: the subject and client id of the Bearer token, and
// whether it is a service token (scope mfa:verify) that acts for the users it names.
type Caller struct {
	Sub, ClientID string
	Service       bool
}

// clientID is the caller's client id as an authentication records it: the token's, else its
// subject (see StartAuthentication).
func (c Caller) clientID() string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return c.Sub
}

// VisibleTo reports whether c may see and act on e. An enrollment is its user's. A sign-in
// belongs to the caller that started it: the user's own, to a token with the user's subject;
// one a service started for the user, to a service token with the same subject and client id
// (not to the user, nor to another client of the same service account).
func (e Enrollment) VisibleTo(c Caller) bool {
	if c.Sub == "" {
		return false
	}
	if e.Kind != KindAuthentication {
		return e.Sub == c.Sub
	}
	if e.Initiator != c.Sub {
		return false
	}
	return e.Initiator == e.Sub || c.Service && e.ClientID == c.clientID()
}

// DueToExpire reports whether e is still open at or after its expiry time.
func (e Enrollment) DueToExpire(now time.Time) bool {
	return !e.State.Terminal() && !now.Before(e.ExpiresAt)
}
