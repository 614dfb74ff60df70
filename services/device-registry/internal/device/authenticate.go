package device

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// The errors a sign-in check ends in, besides ErrInvalid, are pkg/factor's (ErrInvalidCode,
// ErrReplayed, ErrMalformedCode, ErrNoFactor, ErrLocked with a *factor.LockedError): the status
// service's domain speaks of the same outcomes.

// Lockout counts a user's wrong codes across authentications. It is separate from any
// password counter of the identity provider: it protects the second factor only.
type Lockout struct {
	Sub string
	// Failures counts wrong codes since the last lock, success or unlock.
	Failures int
	// Locks counts locks in a row since the last success or unlock; each doubles the back-off.
	Locks int
	// LockedUntil is when code checks open again; zero or past means not locked.
	LockedUntil time.Time
	// ResetAt is when the user's factors were last reset (zero if never): pending credentials
	// made before it are void.
	ResetAt time.Time
	// Version is the store's revision, 0 for a user who has none yet.
	Version uint64
}

// LockoutPolicy is when and for how long wrong codes lock a user.
type LockoutPolicy struct {
	// Threshold wrong codes in a row lock the user; 0 means DefaultLockoutThreshold.
	Threshold int
	// Duration is the first lock's length, doubled per further lock; 0 means 1 minute.
	Duration time.Duration
	// MaxDuration caps a lock's length; 0 means 15 minutes.
	MaxDuration time.Duration
}

// DefaultLockoutThreshold wrong codes in a row lock a user.
const DefaultLockoutThreshold = 5

func (p LockoutPolicy) withDefaults() LockoutPolicy {
	if p.Threshold <= 0 {
		p.Threshold = DefaultLockoutThreshold
	}
	if p.Duration <= 0 {
		p.Duration = time.Minute
	}
	if p.MaxDuration <= 0 {
		p.MaxDuration = 15 * time.Minute
	}
	p.MaxDuration = max(p.MaxDuration, p.Duration)
	return p
}

// lockFor is the length of the n-th lock in a row (n ≥ 1).
func (p LockoutPolicy) lockFor(n int) time.Duration {
	d := p.Duration
	for i := 1; i < n && d < p.MaxDuration; i++ {
		d *= 2
	}
	return min(d, p.MaxDuration)
}

// Authenticated is what a right code proved.
type Authenticated struct {
	Method string
	// PHID is the device whose code matched (TOTP only).
	PHID string
	// Remaining is how many recovery codes are left (BACKUPCODE only).
	Remaining int
	// UserVerified: the passkey's authenticator verified the user (WEBAUTHN only).
	UserVerified bool
}

// factorCheck is how the registry answers for one registered method (events/method) at
// sign-in: whether a user can be asked for it now (ready) and how a code of it is checked
// (check; nil for a method answered on a device, push). A method the registry does not answer
// for has no entry; TestFactorChecksCoverTheRegistration keeps the table and the registration
// together.
type factorCheck struct {
	// ready only reads: Ready runs it beside the lockout's read, so it runs for a locked user
	// too (whose answer is then the lock).
	ready func(s *Service, ctx context.Context, sub string) error
	check func(s *Service, ctx context.Context, in checkInput) (Authenticated, error)
}

// checkInput is one sign-in code to check: whose, the code, the sign-in it is for, and (codes by
// email and SMS) the sealed challenge the sign-in keeps.
type checkInput struct {
	sub, code, statusID string
	challenge           []byte
	// devices, when not nil, delivers the user's credentials read beside the lockout (TOTP):
	// the check's first attempt uses them instead of reading again.
	devices <-chan listedDevices
}

// listedDevices is one read of a user's credentials: all of them, or (hinted) those the user's
// readiness found noted (see deviceHints).
type listedDevices struct {
	creds  []Credential
	hinted bool
	err    error
}

// prefetchDevices starts reading sub's credentials and returns where they will be delivered:
// the hinted devices when this replica's readiness left a hint (each read directly, without the
// index), else the index's listing.
func (s *Service) prefetchDevices(ctx context.Context, sub string) <-chan listedDevices {
	out := make(chan listedDevices, 1)
	hint := s.hints.get(sub, s.clock.Now())
	go func() {
		if len(hint) == 0 {
			creds, err := s.store.ListBySub(ctx, sub)
			out <- listedDevices{creds: creds, err: err}
			return
		}
		var creds []Credential
		for _, phid := range hint {
			c, err := s.store.Get(ctx, phid)
			if errors.Is(err, ErrNotFound) {
				continue // removed since: the check falls back to the listing
			}
			if err != nil {
				out <- listedDevices{err: err}
				return
			}
			creds = append(creds, c)
		}
		out <- listedDevices{creds: creds, hinted: true}
	}()
	return out
}

var factorChecks = map[string]factorCheck{
	method.TOTP:       {ready: (*Service).readyTOTP, check: (*Service).checkTOTP},
	method.BackupCode: {ready: (*Service).readyRecoveryCode, check: (*Service).useRecoveryCode},
	method.Push:       {ready: (*Service).readyPush},
	method.Email:      {ready: readyOOB(method.Email), check: checkOOB(method.Email)},
	method.SMS:        {ready: readyOOB(method.SMS), check: checkOOB(method.SMS)},
	method.WebAuthn:   {ready: readyWebAuthn, check: checkWebAuthn},
}

// Ready reports whether sub can be asked for a code of the method called name now:
// factor.ErrLocked (a *factor.LockedError) while locked, factor.ErrNoFactor without a usable
// factor, ErrInvalid for a method the registry does not answer for.
func (s *Service) Ready(ctx context.Context, sub, name string) error {
	if sub == "" {
		return invalid("sub is missing")
	}
	fc, ok := factorChecks[name]
	if !ok {
		return invalid("unsupported method " + strconv.Quote(name))
	}
	// The lockout and the method's own reads go out together (one round trip of a sign-in
	// initiation's latency fewer); a lock answers first whatever the method found.
	locked := make(chan error, 1)
	go func() { locked <- s.checkLock(ctx, sub) }()
	err := fc.ready(s, ctx, sub)
	if lerr := <-locked; lerr != nil {
		return lerr
	}
	return err
}

// Authenticate checks a sign-in code of sub: a TOTP code against every verified device of the
// user (±1 step, constant time, each device's secret opened only inside the check), or a
// recovery code against the user's current set.
//
// A right code is accepted once: the matched time step is stored on the device with
// compare-and-set (a recovery code is marked spent the same way), so of concurrent submissions
// of one code exactly one succeeds and the others get factor.ErrReplayed. A wrong code counts towards
// the user's lockout; the one that reaches the threshold locks the user and is answered with
// factor.ErrLocked. While locked, nothing is checked, a right code included. A replayed or malformed
// code does not count: neither can be a guess that got lucky (see docs/architecture.md).
//
// challenge is the sealed challenge of a sign-in whose code was sent (EMAIL, SMS; Challenge);
// nil for the others.
func (s *Service) Authenticate(ctx context.Context, sub, name, code, statusID string, challenge []byte) (Authenticated, error) {
	if sub == "" {
		return Authenticated{}, invalid("sub is missing")
	}
	fc, ok := factorChecks[name]
	if !ok || fc.check == nil {
		return Authenticated{}, invalid("unsupported method " + strconv.Quote(name) + ": not answered with a code")
	}
	in := checkInput{sub: sub, code: code, statusID: statusID, challenge: challenge}
	if name == method.TOTP {
		// The user's devices are read while the lockout is: nothing is checked before the
		// lockout says so, but the check's first look at the devices costs no round trip.
		in.devices = s.prefetchDevices(ctx, sub)
	}
	clean, err := s.lockState(ctx, sub)
	if err != nil {
		return Authenticated{}, err
	}
	res, err := fc.check(s, ctx, in)
	switch {
	case err == nil && clean:
		return res, nil // nothing to reset: no read of the lockout again
	case err == nil:
		return res, s.resetFailures(ctx, sub)
	case errors.Is(err, factor.ErrInvalidCode), errors.Is(err, factor.ErrInvalidCredential):
		// A passkey assertion that does not verify counts like a wrong code.
		if lerr := s.countFailure(ctx, sub); lerr != nil {
			return Authenticated{}, lerr
		}
	}
	return Authenticated{}, err
}

// checkLock returns a *factor.LockedError while sub is locked.
func (s *Service) checkLock(ctx context.Context, sub string) error {
	_, err := s.lockState(ctx, sub)
	return err
}

// lockState is checkLock that also says whether sub's record counts nothing (no wrong codes,
// no locks in a row), so that a right code needs no reset: the common sign-in reads the
// lockout once.
func (s *Service) lockState(ctx context.Context, sub string) (clean bool, err error) {
	l, err := s.store.GetLockout(ctx, sub)
	if errors.Is(err, ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("lockout: %w", err)
	}
	if now := s.clock.Now(); now.Before(l.LockedUntil) {
		return false, &factor.LockedError{Until: l.LockedUntil}
	}
	return l.Failures == 0 && l.Locks == 0, nil
}

// changeLockout is the read–modify–compare-and-set of sub's lockout record that every lockout
// change goes through. change edits the record read (a new one when the user has none and
// orNew, else nothing happens) and returns the events the write carries; write false leaves
// the record as it is. A lost race reads again, at most maxAttempts times. Errors from change
// are returned as they are; the others are wrapped with op.
func (s *Service) changeLockout(ctx context.Context, op, sub string, orNew bool, change func(l *Lockout) (msgs []outbox.Message, write bool, err error)) error {
	for range maxAttempts {
		l, err := s.store.GetLockout(ctx, sub)
		if errors.Is(err, ErrNotFound) {
			if !orNew {
				return nil
			}
			l, err = Lockout{Sub: sub}, nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		msgs, write, err := change(&l)
		if err != nil || !write {
			return err
		}
		if _, err := s.store.PutLockout(ctx, l, msgs...); errors.Is(err, ErrStale) {
			continue
		} else if err != nil {
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	}
	return fmt.Errorf("%s: %w", op, ErrStale)
}

// countFailure records one wrong code of sub. The one that reaches the threshold locks the user
// and emits mfa.verification.locked in the same write (so exactly once per lock); it returns
// the *factor.LockedError then.
func (s *Service) countFailure(ctx context.Context, sub string) error {
	p := s.lockout
	var lockedUntil time.Time
	err := s.changeLockout(ctx, "count failure", sub, true, func(l *Lockout) ([]outbox.Message, bool, error) {
		now := s.clock.Now().UTC()
		if now.Before(l.LockedUntil) {
			return nil, false, &factor.LockedError{Until: l.LockedUntil} // a concurrent wrong code locked first
		}
		l.Failures++
		lockedUntil = time.Time{}
		if l.Failures < p.Threshold {
			return nil, true, nil
		}
		l.Locks++
		l.LockedUntil = now.Add(p.lockFor(l.Locks))
		msg, err := lockEvent(*l, l.Failures, now)
		if err != nil {
			return nil, false, fmt.Errorf("count failure: %w", err)
		}
		l.Failures = 0
		lockedUntil = l.LockedUntil
		return []outbox.Message{msg}, true, nil
	})
	if err == nil && !lockedUntil.IsZero() {
		return &factor.LockedError{Until: lockedUntil}
	}
	return err
}

// resetFailures forgets sub's wrong codes and locks in a row after a right code. It writes only
// when there is something to forget, so a sign-in without earlier mistakes costs no write.
func (s *Service) resetFailures(ctx context.Context, sub string) error {
	return s.changeLockout(ctx, "reset failures", sub, false, func(l *Lockout) ([]outbox.Message, bool, error) {
		if l.Failures == 0 && l.Locks == 0 {
			return nil, false, nil
		}
		l.Failures, l.Locks = 0, 0
		return nil, true, nil
	})
}

// LockStatus returns sub's lockout record (a zero one for a user without mistakes), with
// LockedUntil zero unless the user is locked now.
func (s *Service) LockStatus(ctx context.Context, sub string) (Lockout, error) {
	l, err := s.store.GetLockout(ctx, sub)
	if errors.Is(err, ErrNotFound) {
		return Lockout{Sub: sub}, nil
	}
	if err == nil && !s.clock.Now().Before(l.LockedUntil) {
		l.LockedUntil = time.Time{}
	}
	return l, err
}

func lockEvent(l Lockout, failures int, at time.Time) (outbox.Message, error) {
	// The version read is part of the id: each lock is its own write of the record.
	seed := l.Sub + "/locked/" + strconv.FormatUint(l.Version, 10)
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(seed)).String(),
		events.SourceRegistry, events.VerificationLocked, l.Sub, at,
		events.Lock{Sub: l.Sub, LockedUntil: l.LockedUntil.UTC(), Lock: l.Locks, FailedAttempts: failures})
	if err != nil {
		return outbox.Message{}, fmt.Errorf("build %s event: %w", events.VerificationLocked, err)
	}
	return outbox.FromEnvelope(env)
}
