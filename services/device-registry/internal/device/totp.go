package device

import (
	"context"
	"errors"
	"fmt"

	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/totp"
)

// The TOTP method at sign-in (its entry in factorChecks): a user is ready with a verified
// device, and a code is checked against every verified device of the user.

func (s *Service) readyTOTP(ctx context.Context, sub string) error {
	vi, noted := s.store.(VerifiedIndex)
	if noted {
		if phids, err := vi.Verified(ctx, sub, method.TOTP); err == nil && len(phids) > 0 {
			s.hints.put(sub, phids, s.clock.Now())
			return nil // one read of the user's index instead of every credential
		}
	}
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return fmt.Errorf("ready: %w", err)
	}
	for _, c := range creds {
		if usableTOTP(c, sub) {
			if noted {
				// Activated before the index noted activations (or its note was lost): noted
				// now, so the user's next sign-ins take the one read.
				_ = vi.NoteVerified(ctx, c)
			}
			return nil
		}
	}
	return fmt.Errorf("ready: %w", factor.ErrNoFactor)
}

func usableTOTP(c Credential, sub string) bool {
	return c.Verified && c.Sub == sub && c.Method == method.TOTP && len(c.SealedSecret) > 0
}

// checkTOTP checks a TOTP code of sub against every verified device of the user.
func (s *Service) checkTOTP(ctx context.Context, in checkInput) (Authenticated, error) {
	sub, code, statusID := in.sub, in.code, in.statusID
	code = normaliseCode(code)
	if len(code) != totp.Default.Digits || !allDigits(code) {
		return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrMalformedCode)
	}
	hinted := false // creds are the devices readiness hinted at, not the index's listing
	for attempt := range maxAttempts {
		var (
			creds []Credential
			err   error
		)
		if attempt == 0 && in.devices != nil {
			l := <-in.devices
			creds, hinted, err = l.creds, l.hinted, l.err
		} else {
			hinted = false
			creds, err = s.store.ListBySub(ctx, sub)
		}
		if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		now := s.clock.Now().UTC()
		var (
			match    Credential
			step     int64
			replayed bool
			retried  Credential
			usable   int
		)
		// Every device is checked, whatever matched before it, so timing does not tell which
		// device (if any) the code belongs to.
		for _, c := range creds {
			if !usableTOTP(c, sub) {
				continue
			}
			usable++
			st, err := s.check(c, code, now, 0)
			if errors.Is(err, factor.ErrInvalidCode) {
				continue
			}
			if err != nil {
				return Authenticated{}, fmt.Errorf("authenticate: %w", err)
			}
			if st <= c.LastStep {
				if st == c.LastStep && statusID != "" && c.LastStepFor == statusID && retried.PHID == "" {
					retried = c // this authentication's own code, sent again
				}
				replayed = true
				continue
			}
			if match.PHID == "" {
				match, step = c, st
			}
		}
		switch {
		case hinted && match.PHID == "" && retried.PHID == "":
			// The hinted devices did not take the code: decide on the index's listing, which
			// also has a device added since the hint (attempts counts it as a retry).
			continue
		case usable == 0:
			return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrNoFactor)
		case match.PHID == "" && retried.PHID != "":
			// The code was accepted for this very authentication and its answer was lost (a
			// replica or node died before the authentication was written): the same answer
			// again. It still cannot complete any other authentication.
			return Authenticated{Method: method.TOTP, PHID: retried.PHID}, nil
		case match.PHID == "" && replayed:
			return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrReplayed)
		case match.PHID == "":
			return Authenticated{}, fmt.Errorf("authenticate: %w", factor.ErrInvalidCode)
		}
		match.LastStep = step
		match.LastStepFor = statusID
		match.LastUsedAt = now
		updated, err := s.store.Update(ctx, match)
		if errors.Is(err, ErrStale) {
			continue // a concurrent check of the same code may have won: look again
		}
		if err != nil {
			return Authenticated{}, fmt.Errorf("authenticate: %w", err)
		}
		return Authenticated{Method: method.TOTP, PHID: updated.PHID}, nil
	}
	return Authenticated{}, fmt.Errorf("authenticate: %w", ErrStale)
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
