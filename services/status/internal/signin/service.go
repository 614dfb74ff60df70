package signin

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
	"github.com/mfaflow/mfaflow/pkg/ids"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Store keeps sign-ins. Writes carry their events (outbox) and are compare-and-set on
// Authentication.Version.
type Store interface {
	// Create stores a new sign-in; ErrConflict if its id or exchange id is taken.
	Create(ctx context.Context, a Authentication, msgs ...outbox.Message) (Authentication, error)
	// Get returns the sign-in with status id id, or ErrNotFound (also when the id names
	// something else, such as an enrollment).
	Get(ctx context.Context, id string) (Authentication, error)
	// GetByExchangeID returns the sign-in with that exchange id, or ErrNotFound.
	GetByExchangeID(ctx context.Context, exchangeID string) (Authentication, error)
	// Update replaces a if the stored version is still a.Version; ErrStale otherwise. It
	// returns a with its new Version.
	Update(ctx context.Context, a Authentication, msgs ...outbox.Message) (Authentication, error)
	// DueForExpiry returns open sign-ins whose expires_at is not after now.
	DueForExpiry(ctx context.Context, now time.Time) ([]Authentication, error)
}

// Authenticator is the device registry as sign-in needs it: it alone holds the secrets, checks
// codes and keeps each user's lockout.
type Authenticator interface {
	// Ready reports whether sub can be asked for a code of method now: a *factor.LockedError while
	// locked, factor.ErrNoFactor without a usable factor.
	Ready(ctx context.Context, sub, methodName string) error
	// CheckCode checks a sign-in code and returns the device that matched (TOTP). Refusals are
	// factor.ErrInvalidCode (counted towards the lockout), factor.ErrReplayed,
	// factor.ErrMalformedCode, a *factor.LockedError or factor.ErrNoFactor.
	//
	// challenge is the sign-in's sealed challenge when its code was sent (Challenge).
	CheckCode(ctx context.Context, sub, methodName, code, statusID string, challenge []byte) (phid string, err error)
	// Challenge sends a code of a method whose codes are sent (EMAIL, SMS) to sub's factor phid
	// (empty: the one used most recently) for sign-in statusID, in the language locale. It
	// returns what the status object shows and the sealed challenge to keep. Refusals as Ready,
	// plus a *fault-worthy error of the registry (method inactive, SMS limits) passed on.
	Challenge(ctx context.Context, sub, methodName, phid, statusID, locale string) (factor.Sent, []byte, error)
}

// Assertions is the registry as a passkey (WEBAUTHN) sign-in needs it.
type Assertions interface {
	// BeginAssertion makes the request options of a passkey sign-in of sub (the user's passkeys
	// in allowCredentials) and the sealed session the sign-in keeps. Refusals as Ready, plus the
	// registry's method_inactive passed on.
	BeginAssertion(ctx context.Context, sub, statusID string) (options, challenge []byte, err error)
	// CheckAssertion verifies the browser's assertion against the sealed session and returns
	// the passkey used and whether its authenticator verified the user. Refusals:
	// factor.ErrInvalidCredential (counted towards the lockout), factor.ErrClonedAuthenticator,
	// a *factor.LockedError, factor.ErrNoFactor.
	CheckAssertion(ctx context.Context, sub, statusID string, assertion, challenge []byte) (phid string, userVerified bool, err error)
}

// Notifier announces a written change to live subscribers. It is best effort: subscribers
// also re-read the store now and then, so a lost announcement only delays an update.
type Notifier interface {
	Changed(a Authentication)
}

// eventNamespace makes event ids deterministic: the same fact gets the same id on every retry
// and every replica, so JetStream's dedupe stores it once. It is the namespace the status
// service has always used, so ids of facts recorded before the sign-in had its own package
// stay the same.
var eventNamespace = uuid.MustParse("5b0f1f4e-8a43-4d8e-9a39-0b8f3c1d2e7a")

// Service applies the sign-in state machine.
type Service struct {
	Store Store
	// Authenticator checks codes and readiness (the registry).
	Authenticator Authenticator
	// Passkeys runs passkey sign-ins (the registry); without it WEBAUTHN sign-ins are refused.
	Passkeys Assertions
	// Push, PushLedger and PushSender make push sign-in work; MaxPushes bounds pushes per user
	// in PushWindow (0 means DefaultMaxPushes).
	Push       PushDirectory
	PushLedger PushLedger
	PushSender PushSender
	MaxPushes  int
	Now        func() time.Time
	// Notify, when set, hears of every written change.
	Notify Notifier
	// OnTransition, when set, hears of every state a sign-in enters (prev is "" for a new one),
	// after the write; for metrics.
	OnTransition func(a Authentication, prev State)
	// KeySecret keys the ids of initiations sent with an Idempotency-Key (see KeyedIDs); without
	// it keyed initiations are refused with ErrKeyedUnavailable.
	KeySecret []byte
}

func (s *Service) entered(a Authentication, prev State) {
	if s.OnTransition != nil && a.State != prev {
		s.OnTransition(a, prev)
	}
}

func (s *Service) changed(a Authentication) {
	if s.Notify != nil {
		s.Notify.Changed(a)
	}
}

// Time is the service's clock, for adapters that schedule around its time rules.
func (s *Service) Time() time.Time { return s.now() }

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

// NewAuthentication is what the caller of Start knows.
type NewAuthentication struct {
	ID, ExchangeID string
	// Sub is the user to authenticate; Initiator the subject of the token that asked (the user
	// itself, or a service acting for the user).
	Sub, Initiator string
	// Method is a registered method name (events/method).
	Method string
	// ClientID is the relying app (the mfa_token audience); empty means the initiator.
	ClientID string
	// Service says the initiator is a service token (scope mfa:verify) acting for Sub.
	Service bool
	// Context is what the relying app says about the sign-in; the caller bounds its size.
	Context map[string]string
	TTL     time.Duration
	// Keyed says ID and ExchangeID are KeyedIDs of an Idempotency-Key: a sign-in already
	// stored under ID is the answer, whatever its state.
	Keyed bool
	// PHID picks the factor a sent code goes to (EMAIL, SMS); empty means the one used most
	// recently. Locale is the language of the message.
	PHID, Locale string
}

// caller is the initiator as a Caller: who the sign-in will be visible to.
func (in NewAuthentication) caller() Caller {
	return Caller{Sub: in.Initiator, ClientID: in.ClientID, Service: in.Service}
}

// KeyScope is the scope of the keyed ids of a sign-in of method (see ids.Keyed).
func KeyScope(methodName string) string { return "authentication/" + methodName }

// KeyedIDs derives the status id and exchange id of sub's sign-in of method sent with
// Idempotency-Key key (ids.Keyed, scope KeyScope(method)).
func (s *Service) KeyedIDs(methodName, sub, key string) (id, exchangeID string, err error) {
	if len(s.KeySecret) == 0 {
		return "", "", ErrKeyedUnavailable
	}
	if key == "" {
		return "", "", fmt.Errorf("%w: an empty Idempotency-Key", ErrBadRequest)
	}
	id, exchangeID = ids.Keyed(s.KeySecret, KeyScope(methodName), sub, key)
	return id, exchangeID, nil
}

// keyed returns the sign-in stored under a keyed id, if the first attempt got as far as
// storing it: ok is false when there is none. One of another caller is not found, since Get
// hides it.
func (s *Service) keyed(ctx context.Context, id string, caller Caller) (a Authentication, ok bool, err error) {
	// Get, not Store.Get: one past its expiry is answered EXPIRED, as a poll would show it.
	a, err = s.Get(ctx, id, caller)
	if errors.Is(err, ErrNotFound) {
		return Authentication{}, false, nil
	}
	if err != nil {
		return Authentication{}, false, err
	}
	return a, true, nil
}

// Start opens a sign-in of sub (INITIATED) with its mfa.verification.initiated event, once the
// registry says the user has a usable factor of the method and is not locked. A push sign-in
// also draws its numbers and reaches the devices (StartPush).
func (s *Service) Start(ctx context.Context, in NewAuthentication) (Authentication, error) {
	if in.ID == "" || in.ExchangeID == "" || in.Sub == "" || in.Initiator == "" {
		return Authentication{}, fmt.Errorf("%w: id, exchange id, sub and initiator are required", ErrBadRequest)
	}
	if in.Keyed {
		// A retry: the first attempt's sign-in is the answer, and neither the factor check nor
		// a second push happens again.
		if a, ok, err := s.keyed(ctx, in.ID, in.caller()); err != nil || ok {
			return a, err
		}
	}
	m, ok := method.ByName(in.Method)
	if !ok {
		return Authentication{}, fmt.Errorf("%w: unsupported method %q", ErrBadRequest, in.Method)
	}
	if m.SignIn == method.Device {
		return s.StartPush(ctx, in)
	}
	if in.TTL <= 0 {
		return Authentication{}, fmt.Errorf("%w: the sign-in needs a lifetime", ErrBadRequest)
	}
	if s.Authenticator == nil {
		return Authentication{}, errors.New("status: no authenticator configured")
	}
	var (
		sent      factor.Sent
		challenge []byte
		options   []byte
	)
	if m.SignIn == method.Assertion {
		if s.Passkeys == nil {
			return Authentication{}, fmt.Errorf("%w: passkeys are not available here", ErrBadRequest)
		}
		var err error
		if options, challenge, err = s.Passkeys.BeginAssertion(ctx, in.Sub, in.ID); err != nil {
			return Authentication{}, err
		}
	} else if m.Channel != "" {
		// The code goes out before the sign-in is stored: the registry checks readiness and
		// sends in one step. Should the store then fail, the code simply expires unused.
		var err error
		if sent, challenge, err = s.Authenticator.Challenge(ctx, in.Sub, in.Method, in.PHID, in.ID, in.Locale); err != nil {
			return Authentication{}, err
		}
		sent.Delivery, sent.SentAt = factor.DeliveryPending, s.now()
	} else if err := s.Authenticator.Ready(ctx, in.Sub, in.Method); err != nil {
		return Authentication{}, err
	}
	if in.ClientID == "" {
		in.ClientID = in.Initiator
	}
	now := s.now()
	a := Authentication{
		ID: in.ID, ExchangeID: in.ExchangeID, Sub: in.Sub, Method: in.Method,
		State: Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(in.TTL), Seq: 1,
		Initiator: in.Initiator, ClientID: in.ClientID, Context: in.Context,
		Sent: sent, Challenge: challenge, PublicKey: options,
	}
	msg, err := event(a, "", &change{})
	if err != nil {
		return Authentication{}, err
	}
	created, err := s.Store.Create(ctx, a, msg)
	if err != nil {
		return s.keyedRace(ctx, in, err)
	}
	s.changed(created)
	s.entered(created, "")
	return created, nil
}

// keyedRace answers a keyed sign-in whose create lost to a concurrent attempt with the same
// Idempotency-Key with that attempt's sign-in; any other error stays.
func (s *Service) keyedRace(ctx context.Context, in NewAuthentication, err error) (Authentication, error) {
	if in.Keyed && errors.Is(err, ErrConflict) {
		if a, ok, kerr := s.keyed(ctx, in.ID, in.caller()); kerr == nil && ok {
			return a, nil
		}
	}
	return Authentication{}, err
}

// Verify finishes the sign-in with exchange id exchangeID with a code: INITIATED →
// AUTHENTICATED when the registry accepts it. caller is who sends it: the sign-in's initiator
// (see VisibleTo); anyone else gets ErrNotFound. A refused code leaves the sign-in open (it may
// be retried until it expires or the user is locked) and is recorded with
// mfa.verification.failed; the error says why.
func (s *Service) Verify(ctx context.Context, exchangeID, methodName string, caller Caller, code string) (Authentication, error) {
	if exchangeID == "" {
		return Authentication{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	if s.Authenticator == nil {
		return Authentication{}, errors.New("status: no authenticator configured")
	}
	a, err := s.Store.GetByExchangeID(ctx, exchangeID)
	if err != nil {
		return Authentication{}, err
	}
	if !a.VisibleTo(caller) {
		return Authentication{}, ErrNotFound
	}
	if a.Method != methodName {
		return Authentication{}, fmt.Errorf("%w: this sign-in is for method %s", ErrConflict, a.Method)
	}
	if a.Method == method.Push {
		return Authentication{}, fmt.Errorf("%w: a push sign-in is answered on the device, not with a code", ErrConflict)
	}
	return s.check(ctx, a, code, false)
}

// check checks code for the open sign-in a and records the outcome; end makes a refused code end
// the sign-in (FAILED) instead of leaving it open for another try.
func (s *Service) check(ctx context.Context, a Authentication, code string, end bool) (Authentication, error) {
	m, _ := method.ByName(a.Method)
	passkey := m.SignIn == method.Assertion
	a, err := s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		switch a.State {
		case Initiated:
			return a, nil, nil
		case Expired:
			return a, nil, ErrExpired
		case Authenticated:
			if passkey {
				// The challenge was answered once; an assertion sent again is a replay.
				return a, nil, fmt.Errorf("this sign-in's challenge was used already: %w", factor.ErrInvalidCredential)
			}
		}
		return a, nil, fmt.Errorf("%w: sign-in is %s", ErrConflict, a.State)
	})
	if err != nil {
		return a, err
	}
	var (
		phid         string
		userVerified bool
	)
	if passkey {
		if s.Passkeys == nil {
			return a, fmt.Errorf("%w: passkeys are not available here", ErrBadRequest)
		}
		phid, userVerified, err = s.Passkeys.CheckAssertion(ctx, a.Sub, a.ID, []byte(code), a.Challenge)
	} else {
		phid, err = s.Authenticator.CheckCode(ctx, a.Sub, a.Method, code, a.ID, a.Challenge)
	}
	switch {
	case errors.Is(err, factor.ErrInvalidCode):
		return s.refuse(ctx, a, "invalid_code", err, end)
	case errors.Is(err, factor.ErrInvalidCredential):
		return s.refuse(ctx, a, "invalid_credential", err, end)
	case errors.Is(err, factor.ErrClonedAuthenticator):
		return s.refuse(ctx, a, "cloned_authenticator", err, end)
	case errors.Is(err, factor.ErrReplayed):
		return s.refuse(ctx, a, "code_replayed", err, end)
	case err != nil && end && refusalReason(err) != "":
		// Locked, malformed, no factor: a single-step sign-in does not stay open either.
		if a, ferr := s.refuse(ctx, a, refusalReason(err), err, true); ferr != err {
			return a, ferr
		}
		return a, err
	case err != nil:
		return a, err
	}
	return s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		switch {
		case a.State == Expired:
			return a, nil, ErrExpired
		case a.State.Terminal():
			// A cancel won the race; the code is spent, the sign-in is not.
			return a, nil, fmt.Errorf("%w: sign-in became %s", ErrConflict, a.State)
		}
		a.State, a.PHID, a.AuthTime, a.UserVerified = Authenticated, phid, s.now(), userVerified
		a.Challenge, a.PublicKey = nil, nil // the code is spent; nothing of it stays
		return a, &change{}, nil
	})
}

// VerifyOnce is a sign-in started and finished in one request (Keystone's "all methods in one
// request", privacyIDEA's validate/check): a service acting for in.Sub sends the code with the
// initiation. It is an authentication like any other, with its events: INITIATED, then
// AUTHENTICATED, or FAILED with mfa.verification.failed when the code is refused (it does not
// stay open for another try: the caller sends another request). Only methods whose code the
// user already has (TOTP, recovery codes) can be checked in one step.
func (s *Service) VerifyOnce(ctx context.Context, in NewAuthentication, code string) (Authentication, error) {
	m, ok := method.ByName(in.Method)
	if !ok || m.SignIn != method.Code || m.Channel != "" {
		return Authentication{}, fmt.Errorf("%w: a single-step verification takes a code the user already has (totp, backupcode)", ErrBadRequest)
	}
	if in.Keyed {
		return Authentication{}, fmt.Errorf("%w: a single-step verification takes no Idempotency-Key", ErrBadRequest)
	}
	a, err := s.Start(ctx, in)
	if err != nil {
		return a, err
	}
	return s.check(ctx, a, code, true)
}

// Resend sends a new code for the open sign-in with exchange id exchangeID (EMAIL, SMS) to the
// same factor; the previous code stops working. At most one per factor.ResendInterval and
// factor.MaxResends per sign-in, else a *factor.RetryLaterError.
func (s *Service) Resend(ctx context.Context, exchangeID, methodName string, caller Caller, locale string) (Authentication, error) {
	if exchangeID == "" {
		return Authentication{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	a, err := s.Store.GetByExchangeID(ctx, exchangeID)
	if err != nil {
		return Authentication{}, err
	}
	if !a.VisibleTo(caller) {
		return Authentication{}, ErrNotFound
	}
	if a.Method != methodName {
		return Authentication{}, fmt.Errorf("%w: this sign-in is for method %s", ErrConflict, a.Method)
	}
	if m, _ := method.ByName(a.Method); m.Channel == "" {
		return Authentication{}, fmt.Errorf("%w: codes of %s are not sent; there is nothing to resend", ErrConflict, a.Method)
	}
	a, err = s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		switch a.State {
		case Initiated:
			return a, nil, a.Sent.ResendAllowed(s.now())
		case Expired:
			return a, nil, ErrExpired
		default:
			return a, nil, fmt.Errorf("%w: sign-in is %s", ErrConflict, a.State)
		}
	})
	if err != nil {
		return a, err
	}
	sent, challenge, err := s.Authenticator.Challenge(ctx, a.Sub, a.Method, a.Sent.PHID, a.ID, locale)
	if err != nil {
		return a, err
	}
	return s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		if a.State != Initiated {
			return a, nil, fmt.Errorf("%w: sign-in is %s", ErrConflict, a.State)
		}
		sent.Resends, sent.Delivery, sent.SentAt = a.Sent.Resends+1, factor.DeliveryPending, s.now()
		a.Sent, a.Challenge = sent, challenge
		return a, &change{silent: true}, nil
	})
}

// SetDelivery records the notifier's report on delivery deliveryID of sign-in id: state is
// factor.DeliverySent or factor.DeliveryFailed. A report on a code a resend replaced, or one
// already recorded, changes nothing.
func (s *Service) SetDelivery(ctx context.Context, id, deliveryID, state string) error {
	a, err := s.Store.Get(ctx, id)
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		if a.Sent.DeliveryID != deliveryID || a.Sent.Delivery == state || a.State.Terminal() {
			return a, nil, nil
		}
		a.Sent.Delivery = state
		return a, &change{silent: true}, nil
	})
	if errors.Is(err, ErrExpired) {
		return nil
	}
	return err
}

// refusalReason is the mfa.verification.failed reason of a refusal other than a wrong or
// replayed code; "" for an error that is no refusal (the registry out of reach).
func refusalReason(err error) string {
	switch {
	case errors.Is(err, factor.ErrLocked):
		return "locked"
	case errors.Is(err, factor.ErrMalformedCode):
		return "malformed_code"
	case errors.Is(err, factor.ErrNoFactor):
		return "no_factor"
	}
	return ""
}

// refuse records a refused code on an open sign-in and returns cause; end makes the sign-in
// FAILED (a single-step sign-in), else it stays open.
func (s *Service) refuse(ctx context.Context, a Authentication, reason string, cause error, end bool) (Authentication, error) {
	a, err := s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		if a.State.Terminal() {
			return a, nil, fmt.Errorf("%w: sign-in is %s", ErrConflict, a.State)
		}
		if end {
			a.State = Failed
		}
		a.FailedAttempts++
		return a, &change{refused: true, reason: reason}, nil
	})
	if err != nil {
		return a, err
	}
	return a, cause
}

// RedeemStepUp spends the mfa_token of sign-in statusID as the step-up proof of a factor change
// of sub: the sign-in must be sub's, AUTHENTICATED at or after notBefore, and its token not
// spent before. The mark is a compare-and-set on the sign-in, so of two concurrent redemptions
// of one token exactly one succeeds. Every refusal is ErrStepUpRequired.
func (s *Service) RedeemStepUp(ctx context.Context, statusID, sub string, notBefore time.Time) error {
	a, err := s.Store.Get(ctx, statusID)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: the mfa_token names no sign-in", ErrStepUpRequired)
	}
	if err != nil {
		return err
	}
	if a.Sub != sub || a.State != Authenticated {
		return fmt.Errorf("%w: the mfa_token is not one of this user's sign-ins", ErrStepUpRequired)
	}
	if a.AuthTime.Before(notBefore) {
		return fmt.Errorf("%w: the mfa_token's sign-in is too old; sign in again", ErrStepUpRequired)
	}
	_, err = s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		if !a.StepUpUsedAt.IsZero() {
			return a, nil, fmt.Errorf("%w: the mfa_token was used already; sign in again", ErrStepUpRequired)
		}
		a.StepUpUsedAt = s.now()
		return a, &change{silent: true}, nil
	})
	return err
}

// Get returns sign-in id as caller may see it; a sign-in of another caller is ErrNotFound, so
// ids cannot be probed. One past its expiry is expired now, so a poll never shows it open.
func (s *Service) Get(ctx context.Context, id string, caller Caller) (Authentication, error) {
	a, err := s.Store.Get(ctx, id)
	if err != nil {
		return Authentication{}, err
	}
	if !a.VisibleTo(caller) {
		return Authentication{}, ErrNotFound
	}
	if a.DueToExpire(s.now()) {
		a, err = s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) { return a, nil, nil })
		if errors.Is(err, ErrExpired) {
			err = nil
		}
	}
	return a, err
}

// Cancel ends caller's open sign-in: INITIATED | PUSH_ACKNOWLEDGED → CANCELLED. Cancelling a
// cancelled sign-in answers it unchanged.
func (s *Service) Cancel(ctx context.Context, id string, caller Caller) (Authentication, error) {
	a, err := s.Store.Get(ctx, id)
	if err != nil {
		return Authentication{}, err
	}
	if !a.VisibleTo(caller) {
		return Authentication{}, ErrNotFound
	}
	return s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) {
		switch a.State {
		case Initiated, PushAcknowledged:
			a.State = Cancelled
			return a, &change{}, nil
		case Cancelled:
			return a, nil, nil
		case Expired:
			return a, nil, ErrExpired
		default:
			return a, nil, fmt.Errorf("%w: sign-in is %s", ErrConflict, a.State)
		}
	})
}

// ExpireDue moves every open sign-in past its expiry to EXPIRED and returns how many it
// expired. Replicas may run it concurrently: compare-and-set lets one win.
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	due, err := s.Store.DueForExpiry(ctx, s.now())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range due {
		_, err := s.apply(ctx, a, func(a Authentication) (Authentication, *change, error) { return a, nil, nil })
		switch {
		case errors.Is(err, ErrExpired):
			n++
		case err != nil && !errors.Is(err, ErrNotFound):
			return n, err
		}
	}
	return n, nil
}

// change describes a write: the event it emits (none when silent), and its context.
type change struct {
	silent bool
	reason string
	// refused marks a refused code: the state stays, the event is mfa.verification.failed.
	refused bool
}

// maxCASRetries bounds retries when concurrent writers keep winning. Each lost race means
// another write succeeded, so this is the number of concurrent writers one write outlasts
// (twenty submissions of codes for one sign-in must not starve the right one).
const maxCASRetries = 64

// apply runs fn on a and writes the result with compare-and-set, re-reading and re-running fn
// when another writer got there first. Before fn, an open sign-in past its expiry becomes
// EXPIRED (written, with its event) and apply returns ErrExpired.
func (s *Service) apply(ctx context.Context, a Authentication, fn func(Authentication) (Authentication, *change, error)) (Authentication, error) {
	for range maxCASRetries {
		now := s.now()
		var (
			next Authentication
			ch   *change
			err  error
		)
		if a.DueToExpire(now) {
			next, ch, err = a, &change{}, ErrExpired
			next.State = Expired
		} else {
			next, ch, err = fn(a)
			if ch == nil {
				return next, err
			}
		}
		next.UpdatedAt = now
		next.Seq = a.Seq + 1
		var msgs []outbox.Message
		if !ch.silent {
			msg, merr := event(next, a.State, ch)
			if merr != nil {
				return a, merr
			}
			msgs = append(msgs, msg)
		}
		written, werr := s.Store.Update(ctx, next, msgs...)
		if errors.Is(werr, ErrStale) {
			if a, werr = s.Store.Get(ctx, a.ID); werr != nil {
				return Authentication{}, werr
			}
			continue
		}
		if werr != nil {
			return a, werr
		}
		s.changed(written)
		s.entered(written, a.State)
		return written, err
	}
	return a, fmt.Errorf("%w: gave up after %d attempts", ErrStale, maxCASRetries)
}

var verificationEvents = map[State]events.Type{
	Initiated:     events.VerificationInitiated,
	Authenticated: events.VerificationSucceeded,
	Expired:       events.VerificationExpired,
	Cancelled:     events.VerificationCancelled,
	Denied:        events.VerificationDenied,
}

// event builds the event of a sign-in's write: mfa.verification.*, or mfa.push.acknowledged
// when a push reached a device.
func event(a Authentication, prev State, ch *change) (outbox.Message, error) {
	if a.State == PushAcknowledged && !ch.refused {
		return pushEvent(events.PushAcknowledged, a, a.PHID, 0)
	}
	typ, ok := verificationEvents[a.State]
	data := events.Verification{
		StatusID: a.ID, Sub: a.Sub, Method: a.Method, Status: string(a.State),
		PreviousStatus: string(prev), ExpiresAt: a.ExpiresAt, ClientID: a.ClientID, Context: a.Context,
	}
	seed := a.ID + "/" + string(typ)
	switch {
	case ch.refused:
		typ, ok = events.VerificationFailed, true
		data.PreviousStatus, data.Reason, data.FailedAttempts = "", ch.reason, a.FailedAttempts
		seed = a.ID + "/" + string(typ) + "/" + strconv.Itoa(a.FailedAttempts)
	case a.State == Initiated:
		data.PreviousStatus = ""
	case a.State == Authenticated:
		data.PHID = a.PHID
	case a.State == Denied:
		data.PHID, data.Reason = a.PHID, ch.reason
	}
	if !ok {
		return outbox.Message{}, fmt.Errorf("no verification event for state %s", a.State)
	}
	env, err := events.New(uuid.NewSHA1(eventNamespace, []byte(seed)).String(), events.SourceStatus, typ, a.ID, a.UpdatedAt, data)
	if err != nil {
		return outbox.Message{}, err
	}
	return outbox.FromEnvelope(env)
}
