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
	// ErrInvalidCredential: a passkey's assertion (or registration) does not verify: wrong
	// origin or RP ID, a foreign or spent challenge, a bad signature. A sign-in counts it
	// towards the lockout like a wrong code.
	ErrInvalidCredential = errors.New("invalid passkey credential")
	// ErrClonedAuthenticator: a passkey's signature counter went backwards (and is not 0/0): a
	// copy of its private key may be in use. Refused; the sign-in records the reason.
	ErrClonedAuthenticator = errors.New("passkey signature counter went backwards")
)

// LockedError says until when a user's code checks are locked.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return "code checks locked until " + e.Until.UTC().Format(time.RFC3339)
}

// Is makes every LockedError match ErrLocked.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Sent describes the code an enrollment or a sign-in sent by email or SMS, as the status object
// shows it. The code itself is never here: the registry keeps its keyed hash in a sealed value.
type Sent struct {
	// PHID is the factor the code went to (sign-in).
	PHID string
	// Destination is the masked address (a***@example.org, +49 ••• •••• 78).
	Destination string
	// DeliveryID names the delivery of the code last sent; Delivery is its state: pending,
	// sent or failed (the notifier reports it).
	DeliveryID string
	Delivery   string
	// Resends counts the codes sent after the first; SentAt is when the last one was.
	Resends int
	SentAt  time.Time
	// CodeExpiresAt is when the code last sent stops working.
	CodeExpiresAt time.Time
}

// The delivery states of Sent.
const (
	DeliveryPending = "pending"
	DeliverySent    = "sent"
	DeliveryFailed  = "failed"
)

// Resend limits: one code per ResendInterval, at most MaxResends more per exchange.
const (
	ResendInterval = 30 * time.Second
	MaxResends     = 5
)

// RetryLaterError refuses a request that may be made again at Until (a resend too soon, or
// too many).
type RetryLaterError struct {
	Until  time.Time
	Reason string
}

func (e *RetryLaterError) Error() string { return e.Reason }

// ResendAllowed applies the resend limits to s at now: nil, or a *RetryLaterError.
func (s Sent) ResendAllowed(now time.Time) error {
	if s.Resends >= MaxResends {
		return &RetryLaterError{Reason: "no more codes can be sent for this exchange; start a new one"}
	}
	if next := s.SentAt.Add(ResendInterval); now.Before(next) {
		return &RetryLaterError{Until: next, Reason: "a code was sent moments ago; wait for Retry-After"}
	}
	return nil
}
