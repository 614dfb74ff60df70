package device

import (
	"context"
	"errors"
	"fmt"
)

// ErrStepUpRequired: a change to the factors of a user who has one came without a step-up
// proof (DESIGN.md Part 3: X-MFA-Token, a fresh mfa_token of the user, used once).
var ErrStepUpRequired = errors.New("step-up required")

// StepUp spends a step-up proof. The status service signs mfa_tokens and records which were
// spent, so the registry asks it: Redeem succeeds once per token, for the token's own user,
// while its sign-in is recent enough; its refusals say why (fault step_up_required).
type StepUp interface {
	Redeem(ctx context.Context, sub, token string) error
}

// WithStepUp makes factor changes of a user who has a factor need a step-up proof that su
// redeems. Without it (MFA_STEP_UP=off) no proof is asked for.
func WithStepUp(su StepUp) Option { return func(s *Service) { s.stepUp, s.redeemer = su, su } }

// WithRedeemer lets the registry spend a proof a user offers where one replaces another
// confirmation (disabling MFA at once instead of by an emailed link), also when the step-up rule
// is off: a header that merely names a token must never skip the link.
func WithRedeemer(su StepUp) Option { return func(s *Service) { s.redeemer = su } }

// RequireStepUp is the gate in front of every change to sub's factors by the user (enrolling
// another factor, removing one, new recovery codes): once sub has an active factor, token must
// be a step-up proof, which it spends. A user without one (their first factor) passes, as does
// everyone when step-up is off. Administrators' routes do not come through here.
func (s *Service) RequireStepUp(ctx context.Context, sub, token string) error {
	if s.stepUp == nil {
		return nil
	}
	has, err := s.HasActiveFactor(ctx, sub)
	if err != nil {
		return fmt.Errorf("step-up: %w", err)
	}
	if !has {
		return nil
	}
	if token == "" {
		return ErrStepUpRequired
	}
	return s.stepUp.Redeem(ctx, sub, token)
}

// HasActiveFactor reports whether sub can sign in with a factor today: a registered device, or
// a recovery code not yet used. Either one is what a stolen session must not be able to add
// to or replace without proving it.
func (s *Service) HasActiveFactor(ctx context.Context, sub string) (bool, error) {
	devices, err := s.List(ctx, sub)
	if err != nil {
		return false, err
	}
	if len(devices) > 0 {
		return true, nil
	}
	set, err := s.RecoveryStatus(ctx, sub)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return set.Remaining() > 0, nil
}
