// Package factor holds the errors a factor check can end in. The registry (which checks a
// code against a user's factors) and the status service (which runs the sign-in exchange and
// hears the registry's answer over NATS) both speak of them; declaring them once keeps the
// two domains' errors one and the same without either importing the other.
//
// Each transport maps them to its own codes (the registry's factor reply results, the status
// service's HTTP problems) in one place; these values never cross a service boundary.
package factor

import (
	"errors"
	"time"
)

var (
	// ErrInvalidCode: the code does not prove possession of the secret (wrong, or outside the
	// time window). A sign-in counts it towards the lockout; an enrollment towards its attempts.
	ErrInvalidCode = errors.New("invalid verification code")
	// ErrReplayed: the code is right but was already accepted once (its time step is at or
	// below the device's last accepted step, or the recovery code is spent). Nothing changes.
	ErrReplayed = errors.New("code already used")
	// ErrMalformedCode: the code cannot be right whatever the secret (wrong length or
	// characters). It is refused without counting as a guess.
	ErrMalformedCode = errors.New("malformed code")
	// ErrNoFactor: the user has no usable factor of the method (no verified device, no unused
	// recovery code).
	ErrNoFactor = errors.New("no usable factor")
	// ErrLocked: the user's code checks are locked; the error in the chain is a *LockedError.
	ErrLocked = errors.New("code checks locked")
)

// LockedError says until when a user's code checks are locked.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return "code checks locked until " + e.Until.UTC().Format(time.RFC3339)
}

// Is makes every LockedError match ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }
