package device

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Administration: what a holder of scope mfa:admin may do to any user's factors. Every action
// names its actor (the administrator's sub) in the events it emits.

// Reset is what ResetFactors did.
type Reset struct {
	// DevicesRemoved counts the verified devices removed.
	DevicesRemoved int
	// RecoveryCodesRemoved says whether a set of recovery codes was deleted.
	RecoveryCodesRemoved bool
}

// Unlock lifts sub's lock and forgets its wrong codes (an administrator's action) and emits
// mfa.verification.unlocked, naming actor, in the same write. Unlocking a user who is neither
// locked nor has wrong codes counted changes nothing and emits nothing.
func (s *Service) Unlock(ctx context.Context, sub, actor string) error {
	if sub == "" {
		return invalid("sub is missing")
	}
	if actor == "" {
		return invalid("actor is missing")
	}
	return s.changeLockout(ctx, "unlock", sub, false, func(l *Lockout) ([]outbox.Message, bool, error) {
		if l.Failures == 0 && l.Locks == 0 && l.LockedUntil.IsZero() {
			return nil, false, nil
		}
		// The version read is part of the id: each unlock is its own write of the record.
		seed := sub + "/unlocked/" + strconv.FormatUint(l.Version, 10)
		msg, err := adminEvent(events.VerificationUnlocked, seed, sub, s.clock.Now(), events.Unlock{Sub: sub, Actor: actor})
		if err != nil {
			return nil, false, fmt.Errorf("unlock: %w", err)
		}
		l.Failures, l.Locks, l.LockedUntil = 0, 0, time.Time{}
		return []outbox.Message{msg}, true, nil
	})
}

// ResetFactors removes every factor of sub (Okta's reset_factors), as administrator actor:
// every verified device (each with its mfa.device.removed naming actor), every enrollment in
// progress (its claimed credential is discarded, and the sealed pending credential the status
// service holds for an unclaimed one no longer verifies: see voidIfReset; no event, it never
// was a device), the recovery codes
// (their hashes are overwritten by an empty set, which counts as none), and the lockout, whose
// write carries mfa.factors.reset. The user can enroll again at once.
//
// It is idempotent: a repeated reset finds nothing to remove and says so in its event. Every
// step is its own compare-and-set write, so a reset that fails half-way has removed some
// factors and can simply be repeated.
func (s *Service) ResetFactors(ctx context.Context, sub, actor string) (Reset, error) {
	return s.resetFactors(ctx, sub, actor, ReasonAdminReset)
}

// Why factors are reset (mfa.factors.reset's reason).
const (
	ReasonAdminReset   = "admin_reset"
	ReasonUserDisabled = "user_disabled"
)

// resetFactors is ResetFactors for reason: an administrator's reset, or the user disabling MFA.
func (s *Service) resetFactors(ctx context.Context, sub, actor, reason string) (Reset, error) {
	if sub == "" {
		return Reset{}, invalid("sub is missing")
	}
	if actor == "" {
		return Reset{}, invalid("actor is missing")
	}
	var res Reset
	// The reset time first: enrollments begun before it are void from now on, and any claim
	// stored before this write is in the listing below (see voidIfReset).
	if err := s.markReset(ctx, sub); err != nil {
		return Reset{}, fmt.Errorf("reset factors: %w", err)
	}
	creds, err := s.store.ListBySub(ctx, sub)
	if err != nil {
		return Reset{}, fmt.Errorf("reset factors: %w", err)
	}
	for _, c := range creds {
		if c.Sub != sub {
			continue
		}
		if !c.Verified {
			if err := s.DiscardPending(ctx, c.StatusID); err != nil {
				return res, fmt.Errorf("reset factors: %w", err)
			}
			continue
		}
		switch err := s.remove(ctx, sub, c.PHID, actor); {
		case err == nil:
			res.DevicesRemoved++
		case errors.Is(err, ErrNotFound):
			// removed meanwhile (by the user, or a concurrent reset)
		default:
			return res, fmt.Errorf("reset factors: %w", err)
		}
	}
	removed, err := s.clearRecoverySet(ctx, sub)
	if err != nil {
		return res, fmt.Errorf("reset factors: %w", err)
	}
	res.RecoveryCodesRemoved = removed
	if err := s.clearLockout(ctx, sub, actor, reason, res); err != nil {
		return res, fmt.Errorf("reset factors: %w", err)
	}
	return res, nil
}

// clearRecoverySet deletes sub's recovery codes by overwriting the set with an empty one (no
// hashes, no creation time): the codes are gone at once, readers treat the set as absent, and a
// later GenerateRecoveryCodes simply writes the next version. It reports whether there were
// codes to delete.
func (s *Service) clearRecoverySet(ctx context.Context, sub string) (bool, error) {
	for range maxAttempts {
		set, err := s.store.GetRecoverySet(ctx, sub)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("clear recovery codes: %w", err)
		}
		if len(set.Hashes) == 0 {
			return false, nil
		}
		if _, err := s.store.PutRecoverySet(ctx, RecoverySet{Sub: sub, Version: set.Version}); errors.Is(err, ErrStale) {
			continue
		} else if err != nil {
			return false, fmt.Errorf("clear recovery codes: %w", err)
		}
		return true, nil
	}
	return false, fmt.Errorf("clear recovery codes: %w", ErrStale)
}

// markReset records now as sub's last reset on the lockout record (created if there is none).
func (s *Service) markReset(ctx context.Context, sub string) error {
	return s.changeLockout(ctx, "mark reset", sub, true, func(l *Lockout) ([]outbox.Message, bool, error) {
		l.ResetAt = s.clock.Now().UTC().Truncate(time.Millisecond) // as precise as a pending credential's time
		return nil, true, nil
	})
}

// clearLockout forgets sub's lock and wrong codes, creating the record if there is none, and
// writes mfa.factors.reset with it.
func (s *Service) clearLockout(ctx context.Context, sub, actor, reason string, res Reset) error {
	return s.changeLockout(ctx, "clear lockout", sub, true, func(l *Lockout) ([]outbox.Message, bool, error) {
		seed := sub + "/factors/reset/" + strconv.FormatUint(l.Version, 10)
		msg, err := adminEvent(events.FactorsReset, seed, sub, s.clock.Now(), events.Reset{
			Sub: sub, DevicesRemoved: res.DevicesRemoved, RecoveryCodesRemoved: res.RecoveryCodesRemoved, Actor: actor, Reason: reason})
		if err != nil {
			return nil, false, fmt.Errorf("clear lockout: %w", err)
		}
		l.Failures, l.Locks, l.LockedUntil = 0, 0, time.Time{}
		return []outbox.Message{msg}, true, nil
	})
}

// adminEvent builds an event about user sub (its CloudEvent subject) as an outbox message.
func adminEvent(t events.Type, seed, sub string, at time.Time, data any) (outbox.Message, error) {
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(seed)).String(),
		events.SourceRegistry, t, sub, at, data)
	if err != nil {
		return outbox.Message{}, fmt.Errorf("build %s event: %w", t, err)
	}
	return outbox.FromEnvelope(env)
}
