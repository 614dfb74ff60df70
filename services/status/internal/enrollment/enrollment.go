// Package enrollment is the enrollment aggregate of mfaflow's status service (cidaas style): a
// user enrolling an authenticator, with its events (mfa.enrollment.*). Its state machine:
//
//	INITIATED → SCANNED → ENROLLED
//	INITIATED → ENROLLED                 (code typed into the frontend)
//	INITIATED | SCANNED → EXPIRED | CANCELLED | FAILED
//
// Sign-ins are another aggregate, package signin, though they share the status routes.
// Terminal states never change. Every transition is a compare-and-set on the stored enrollment
// and carries its CloudEvent in the same write (outbox), so the state and the fact that it
// changed can never disagree. The package imports no transport.
package enrollment

import (
	"errors"
	"time"

	"github.com/mfaflow/mfaflow/pkg/factor"
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
)

// Terminal reports whether s can never change again.
func (s State) Terminal() bool {
	return s == Enrolled || s == Expired || s == Cancelled || s == Failed
}

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

// Enrollment is an attempt of a user to enroll an authenticator.
type Enrollment struct {
	ID         string // status_id
	ExchangeID string
	Sub        string
	Method     string
	State      State
	CreatedAt  time.Time
	UpdatedAt  time.Time
	ExpiresAt  time.Time
	// Device is what the companion reported at scan, if it scanned.
	Device Device
	// DeviceID and PHID name the registered device once ENROLLED.
	DeviceID string
	PHID     string
	// FailedAttempts counts wrong codes; MaxAttempts of them make an enrollment FAILED.
	FailedAttempts int
	// PendingCredential is the registry's sealed pending credential of an enrollment (see
	// Registry): opaque here, handed back with the code, dropped when the enrollment ends. It
	// is never in an event, a reply or a log.
	PendingCredential []byte
	// EnrollProof is the keyed hash of the companion's enroll frame that made the enrollment
	// ENROLLED (code, device id, device key thumbprint), so that the same frame repeated shortly
	// after is answered again (repeat.go). Never the code itself; never in an event, a reply or
	// a log.
	EnrollProof []byte
	// Sent is the code of an enrollment whose codes are sent (EMAIL, SMS): where it went, its
	// delivery, the resends. The code's keyed hash is inside PendingCredential.
	Sent factor.Sent
	// Version is the store's revision of this enrollment, for compare-and-set.
	Version uint64
	// Seq counts this enrollment's writes: 1 when created, one more with every
	// compare-and-set write. Unlike Version it is the same number on every backend (a KV
	// revision counts the bucket's writes, not the enrollment's), and unlike UpdatedAt it does
	// not depend on any replica's clock, so live streams and ETags order versions by it.
	Seq uint64
}

// Caller is who asks about an enrollment: the subject of the Bearer token.
type Caller struct {
	Sub string
}

// VisibleTo reports whether c may see and act on e: an enrollment is its user's.
func (e Enrollment) VisibleTo(c Caller) bool {
	return c.Sub != "" && e.Sub == c.Sub
}

// DueToExpire reports whether e is still open at or after its expiry time.
func (e Enrollment) DueToExpire(now time.Time) bool {
	return !e.State.Terminal() && !now.Before(e.ExpiresAt)
}
