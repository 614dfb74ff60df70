// Package faults is the one mapping of the status service's domain errors (enrollment, signin,
// pkg/factor) to pkg/fault's stable codes and client messages, shared by its HTTP and NATS
// adapters.
package faults

import (
	"errors"

	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/fault"
	"github.com/mfaflow/mfaflow/services/status/internal/enrollment"
	"github.com/mfaflow/mfaflow/services/status/internal/signin"
)

// Of maps the status domain's errors to the stable codes and messages clients see, with the end
// of a refusal that ends at a known time (Until: a lock, too many pushes). Both adapters answer
// through it, HTTP as problem+json and NATS as a micro error, so a domain error reads the same
// on either. Errors that are already *fault.Error (authentication, request decoding, a refusal
// of the registry the domain passed on) pass through; anything else stays as it is and is
// answered "internal" (and logged) by the transport.
func Of(err error) error {
	var (
		fe     *fault.Error
		locked *factor.LockedError
		pushes *signin.TooManyPushesError
		later  *factor.RetryLaterError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return err
	case errors.Is(err, enrollment.ErrNotFound):
		return fault.New(fault.NotFound, "no such enrollment")
	case errors.Is(err, signin.ErrNotFound):
		return fault.New(fault.NotFound, "no such sign-in")
	case errors.Is(err, signin.ErrExpired):
		return fault.New(fault.Expired, "the sign-in has expired; start a new one")
	case errors.Is(err, signin.ErrConflict):
		return fault.New(fault.Conflict, trimSentinel(err, signin.ErrConflict))
	case errors.Is(err, signin.ErrBadRequest):
		return fault.New(fault.BadRequest, trimSentinel(err, signin.ErrBadRequest))
	case errors.Is(err, signin.ErrStale):
		return fault.New(fault.Conflict, "the sign-in is changing concurrently; retry")
	case errors.Is(err, enrollment.ErrExpired):
		return fault.New(fault.Expired, "the enrollment has expired; start a new one")
	case errors.Is(err, enrollment.ErrFailed):
		return fault.New(fault.InvalidCode, "invalid verification code; too many attempts, the enrollment has failed")
	case errors.Is(err, factor.ErrInvalidCode):
		return fault.New(fault.InvalidCode, "invalid verification code")
	case errors.Is(err, enrollment.ErrConflict):
		return fault.New(fault.Conflict, trimSentinel(err, enrollment.ErrConflict))
	case errors.Is(err, enrollment.ErrBadRequest):
		return fault.New(fault.BadRequest, trimSentinel(err, enrollment.ErrBadRequest))
	case errors.Is(err, enrollment.ErrStale):
		return fault.New(fault.Conflict, "the enrollment is changing concurrently; retry")
	case errors.Is(err, factor.ErrClonedAuthenticator):
		return fault.New(fault.InvalidCredential, "this passkey's signature counter went backwards, so a copy of it may be in use: it is refused; remove it and register a new one")
	case errors.Is(err, factor.ErrInvalidCredential):
		return fault.New(fault.InvalidCredential, "the passkey's response does not verify (wrong origin or relying party, a challenge of another or a finished exchange, or a bad signature or attestation)")
	case errors.Is(err, factor.ErrReplayed):
		return fault.New(fault.CodeReplayed, "this code was already used; wait for the next one")
	case errors.Is(err, factor.ErrMalformedCode):
		return fault.New(fault.InvalidCode, "invalid code: a TOTP code is 6 digits, a recovery code 10 characters (XXXXX-XXXXX)")
	case errors.As(err, &locked):
		return &fault.Error{Code: fault.Locked, Message: "too many wrong codes: code checks are locked for a while (see Retry-After)", Until: locked.Until}
	case errors.Is(err, factor.ErrLocked):
		return fault.New(fault.Locked, "too many wrong codes: code checks are locked for a while (see Retry-After)")
	case errors.As(err, &later):
		return &fault.Error{Code: fault.TooManyRequests, Message: later.Reason, Until: later.Until}
	case errors.As(err, &pushes):
		return &fault.Error{Code: fault.TooManyRequests, Message: "too many push sign-ins for this user; wait for Retry-After", Until: pushes.RetryAt}
	case errors.Is(err, signin.ErrTooManyPushes):
		return fault.New(fault.TooManyRequests, "too many push sign-ins for this user; wait for Retry-After")
	case errors.Is(err, signin.ErrStepUpRequired):
		return fault.New(fault.StepUpRequired, trimSentinel(err, signin.ErrStepUpRequired)+": "+fault.StepUpHint)
	case errors.Is(err, factor.ErrNoFactor):
		return fault.New(fault.NoFactor, "the user has no usable factor of this method (enroll a device, or generate recovery codes)")
	}
	return err
}

// trimSentinel is err's message without the sentinel's prefix: the domain's conflict, bad
// request and step-up messages are written for clients (they name states and fields, never
// internals), so they are passed on.
func trimSentinel(err, sentinel error) string {
	msg := err.Error()
	prefix := sentinel.Error() + ": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return msg
}
