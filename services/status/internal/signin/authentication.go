package signin

import (
	"errors"
	"time"

	"github.com/mfaflow/mfaflow/pkg/factor"
)

// State is a sign-in state.
type State string

// The states (DESIGN.md Part 2). FAILED is part of the contract's set; no transition of this
// service enters it today (a refused code leaves a sign-in open, a wrong push number DENIES it).
const (
	Initiated        State = "INITIATED"
	PushAcknowledged State = "PUSH_ACKNOWLEDGED"
	Allowed          State = "ALLOWED"
	Authenticated    State = "AUTHENTICATED"
	Denied           State = "DENIED"
	Expired          State = "EXPIRED"
	Cancelled        State = "CANCELLED"
	Failed           State = "FAILED"
)

// Terminal reports whether s can never change again.
func (s State) Terminal() bool {
	return s == Authenticated || s == Denied || s == Expired || s == Cancelled || s == Failed
}

// Domain errors. Transports map them to codes in one place each, with sign-in wording. The
// outcomes of a code check are pkg/factor's (ErrInvalidCode, ErrReplayed, ErrMalformedCode,
// ErrNoFactor, ErrLocked with a *factor.LockedError).
var (
	ErrNotFound = errors.New("sign-in not found")
	ErrExpired  = errors.New("sign-in expired")
	// ErrConflict: the request contradicts the sign-in's state (e.g. a code for a finished one).
	ErrConflict = errors.New("sign-in state conflict")
	// ErrStale: the stored sign-in changed since it was read (compare-and-set lost).
	ErrStale = errors.New("sign-in changed concurrently")
	// ErrBadRequest: the request itself is malformed.
	ErrBadRequest = errors.New("bad request")
	// ErrStepUpRequired: a factor change came without a valid step-up proof (an mfa_token of
	// the user, fresh and unused); the wrapped text says which part failed.
	ErrStepUpRequired = errors.New("step-up required")
	// ErrTooManyPushes: the user had MaxPushes pushes in the last PushWindow.
	ErrTooManyPushes = errors.New("too many push sign-ins")
	// ErrKeyedUnavailable: the service has no secret to derive keyed ids with.
	ErrKeyedUnavailable = errors.New("idempotency keys are not configured")
)

// Authentication is one sign-in: a user proving a factor, started by the user or by a service
// acting for the user, for a relying app.
type Authentication struct {
	ID         string // status_id
	ExchangeID string // the challenge id of a push sign-in
	Sub        string
	Method     string
	State      State
	CreatedAt  time.Time
	UpdatedAt  time.Time
	ExpiresAt  time.Time
	// Initiator is the subject of the token that started it (the user, or the service acting
	// for the user); it may read and finish it, and gets its mfa_token.
	Initiator string
	// ClientID is the relying app: the audience of its mfa_token.
	ClientID string
	// Context is what the relying app said about the sign-in (app, ip, user_agent, location).
	Context map[string]string
	// PHID is the device that proved the factor (AUTHENTICATED) or answered the push.
	PHID string
	// FailedAttempts counts refused codes; the sign-in stays open until the user's lockout or
	// its expiry.
	FailedAttempts int
	// AuthTime is when it became AUTHENTICATED.
	AuthTime time.Time
	// StepUpUsedAt is when its mfa_token was spent as the step-up proof of a factor change
	// (X-MFA-Token); it can be spent once.
	StepUpUsedAt time.Time
	// Number is the two-digit number a push sign-in's frontend shows; Candidates are the
	// three the device offers (Number among them). Neither is ever in an event.
	Number     string
	Candidates []string
	// Sent is the code of a sign-in whose codes are sent (EMAIL, SMS); Challenge its sealed
	// keyed hash, which only the registry opens. Never in an event or a reply.
	Sent      factor.Sent
	Challenge []byte
	// UserVerified: the passkey's authenticator verified the user (WEBAUTHN); the mfa_token's
	// amr then has "user".
	UserVerified bool
	// PublicKey is a passkey sign-in's request options as Start made them (nothing secret: the
	// browser gets them), kept while the sign-in is open so that a keyed retry of the initiation
	// answers them again.
	PublicKey []byte
	// Version is the store's revision, for compare-and-set.
	Version uint64
	// Seq counts its writes: 1 when created, one more with every compare-and-set write; the
	// same number on every backend, so live streams and ETags order versions by it.
	Seq uint64
}

// Caller is who asks about a sign-in: the subject and client id of the Bearer token, and
// whether it is a service token (scope mfa:verify) that acts for the users it names.
type Caller struct {
	Sub, ClientID string
	Service       bool
}

// clientID is the caller's client id as a sign-in records it: the token's, else its subject.
func (c Caller) clientID() string {
	if c.ClientID != "" {
		return c.ClientID
	}
	return c.Sub
}

// VisibleTo reports whether c may see and act on a. A sign-in belongs to the caller that
// started it: the user's own, to a token with the user's subject; one a service started for the
// user, to a service token with the same subject and client id (not to the user, nor to another
// client of the same service account).
func (a Authentication) VisibleTo(c Caller) bool {
	if c.Sub == "" || a.Initiator != c.Sub {
		return false
	}
	return a.Initiator == a.Sub || c.Service && a.ClientID == c.clientID()
}

// DueToExpire reports whether a is still open at or after its expiry time.
func (a Authentication) DueToExpire(now time.Time) bool {
	return !a.State.Terminal() && !now.Before(a.ExpiresAt)
}
