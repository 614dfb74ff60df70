// Package enrollment is the enrollment state machine of mfaflow (cidaas style):
//
//	INITIATED → SCANNED → ENROLLED
//	INITIATED → ENROLLED                 (code typed into the frontend)
//	INITIATED | SCANNED → EXPIRED | CANCELLED | FAILED
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
)

// Terminal reports whether s can never change again.
func (s State) Terminal() bool {
	return s == Enrolled || s == Expired || s == Cancelled || s == Failed
}

// MethodTOTP is the only verification type so far.
const MethodTOTP = "TOTP"

// Domain errors. Transports map them to codes in one place each.
var (
	ErrNotFound = errors.New("enrollment not found")
	ErrExpired  = errors.New("enrollment expired")
	// ErrConflict: the request contradicts the enrollment's state (e.g. scanning an enrolled one).
	ErrConflict = errors.New("enrollment state conflict")
	// ErrInvalidCode: the code was wrong; the enrollment stays open until too many attempts.
	ErrInvalidCode = errors.New("invalid verification code")
	// ErrFailed: this wrong code was one too many; the enrollment is now FAILED.
	ErrFailed = errors.New("too many invalid codes")
	// ErrStale: the stored enrollment changed since it was read (compare-and-set lost).
	ErrStale = errors.New("enrollment changed concurrently")
	// ErrBadRequest: the request itself is malformed.
	ErrBadRequest = errors.New("bad request")
)

// Device is the authenticator device as the companion app describes it.
type Device struct {
	DeviceID string
	Name     string
	Platform string
}

// Enrollment is one attempt of a user to enroll an authenticator.
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
	// FailedAttempts counts wrong codes; MaxAttempts of them make the enrollment FAILED.
	FailedAttempts int
	// Version is the store's revision of this enrollment, for compare-and-set.
	Version uint64
	// Seq counts this enrollment's writes: 1 when created, one more with every
	// compare-and-set write. Unlike Version it does not move when the outbox relay rewrites the
	// stored document, and unlike UpdatedAt it does not depend on any replica's clock, so live
	// streams and ETags order versions by it.
	Seq uint64
}

// DueToExpire reports whether e is still open at or after its expiry time.
func (e Enrollment) DueToExpire(now time.Time) bool {
	return !e.State.Terminal() && !now.Before(e.ExpiresAt)
}
