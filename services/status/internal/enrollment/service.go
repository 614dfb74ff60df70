package enrollment

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/mfaflow/mfaflow/events"
	"github.com/mfaflow/mfaflow/events/method"
	"github.com/mfaflow/mfaflow/pkg/factor"
	"github.com/mfaflow/mfaflow/pkg/outbox"
)

// Store keeps enrollments. Writes carry their events (outbox) and are compare-and-set on
// Enrollment.Version.
type Store interface {
	// Create stores a new enrollment; ErrConflict if its id or exchange id is taken.
	Create(ctx context.Context, e Enrollment, msgs ...outbox.Message) (Enrollment, error)
	// Get returns the enrollment with status id id, or ErrNotFound.
	Get(ctx context.Context, id string) (Enrollment, error)
	// GetByExchangeID returns the enrollment with that exchange id, or ErrNotFound.
	GetByExchangeID(ctx context.Context, exchangeID string) (Enrollment, error)
	// Update replaces e if the stored version is still e.Version; ErrStale otherwise. It
	// returns e with its new Version.
	Update(ctx context.Context, e Enrollment, msgs ...outbox.Message) (Enrollment, error)
	// DueForExpiry returns open enrollments whose expires_at is not after now.
	DueForExpiry(ctx context.Context, now time.Time) ([]Enrollment, error)
}

// Registry is the device registry as the state machine needs it.
//
// The registry stores nothing at initiation: it seals the pending credential (secret
// included) and the enrollment keeps the sealed value, which only the registry can open, until
// a code claims it or the enrollment ends.
//
// Enrolling is two steps so that the status store owns the outcome: Verify checks the code and
// claims the pending credential without registering anything; the ENROLLED write commits (or
// loses to a cancel or an expiry, and then no device ever exists: the claim is discarded);
// Activate registers the claimed device. The registry also activates on the
// mfa.enrollment.enrolled event, so a lost Activate call is completed from the event that the
// ENROLLED write carries, and discards claims on the other ending events.
type Registry interface {
	// Verify proves possession of the enrollment's pending credential (pending, as the
	// registry sealed it) with code and returns the device it would register. A wrong code is
	// factor.ErrInvalidCode.
	Verify(ctx context.Context, statusID, sub, code string, dev Device, pending []byte) (Claim, error)
	// Activate registers the claimed device of an ENROLLED enrollment.
	Activate(ctx context.Context, statusID, sub string, claim Claim) error
	// Discard destroys the claim of an enrollment that ended without it.
	Discard(ctx context.Context, statusID string) error
	// Resend sends a new code for an enrollment whose codes are sent (EMAIL, SMS) and returns
	// where it went and the new sealed pending credential, which replaces the old one (the old
	// code stops working).
	Resend(ctx context.Context, statusID, sub string, pending []byte) (factor.Sent, []byte, error)
}

// PasskeyRegistry is the registry as a passkey (WEBAUTHN) enrollment needs it.
type PasskeyRegistry interface {
	// VerifyPasskey verifies the browser's registration response against the enrollment's
	// sealed registration session (pending) and claims the passkey, registering nothing yet
	// (Activate does, as for a code). A response that does not verify is
	// factor.ErrInvalidCredential.
	VerifyPasskey(ctx context.Context, statusID, sub string, credential, pending []byte) (Claim, error)
}

// Claim names the device an accepted code will register.
type Claim struct {
	PHID     string
	DeviceID string
}

// Notifier announces a written change to live subscribers. It is best effort: subscribers
// also re-read the store now and then, so a lost announcement only delays an update.
type Notifier interface {
	Changed(e Enrollment)
}

// Channels say how a step reached mfaflow.
const (
	ChannelCompanion = "companion"
	ChannelFrontend  = "frontend"
)

// DefaultMaxAttempts wrong codes make an enrollment FAILED.
const DefaultMaxAttempts = 5

// eventNamespace makes event ids deterministic: the same fact gets the same id on every retry
// and every replica, so JetStream's dedupe stores it once.
var eventNamespace = uuid.MustParse("5b0f1f4e-8a43-4d8e-9a39-0b8f3c1d2e7a")

// Service applies the state machine.
type Service struct {
	Store    Store
	Registry Registry
	// Passkeys completes passkey enrollments (the registry); without it they are refused.
	Passkeys    PasskeyRegistry
	Now         func() time.Time
	MaxAttempts int
	// MaxSentAttempts wrong codes make an enrollment of a method whose codes are sent (EMAIL,
	// SMS) FAILED (MFA_OOB_MAX_ATTEMPTS); 0 means DefaultMaxAttempts.
	MaxSentAttempts int
	// Notify, when set, hears of every written change.
	Notify Notifier
	// OnTransition, when set, hears of every state an enrollment enters
	// (prev is "" for a new one), after the write; for metrics.
	OnTransition func(e Enrollment, prev State)
	// KeySecret keys the ids of initiations sent with an Idempotency-Key (see KeyedIDs); without
	// it keyed initiations are refused with ErrKeyedUnavailable.
	KeySecret []byte
	// ProofSecret keys the hash of the enroll frame that made an enrollment ENROLLED (see
	// repeat.go); without it a repeated enroll frame is ErrConflict.
	ProofSecret []byte
	// RepeatWindow is how long after enrolling the companion's enroll frame may be repeated
	// (0 means DefaultRepeatWindow).
	RepeatWindow time.Duration
	// OnRegistryError, when set, hears of a registry call that failed after the enrollment's
	// outcome was committed: "activate" after ENROLLED, "discard" after a cancel or an expiry
	// beat a right code. The registry completes either from the outcome's event; this is for
	// logs.
	OnRegistryError func(op, statusID string, err error)
}

func (s *Service) entered(e Enrollment, prev State) {
	if s.OnTransition != nil && e.State != prev {
		s.OnTransition(e, prev)
	}
}

func (s *Service) changed(e Enrollment) {
	if s.Notify != nil {
		s.Notify.Changed(e)
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

func (s *Service) maxAttempts(e Enrollment) int {
	if m, _ := method.ByName(e.Method); m.Channel != "" && s.MaxSentAttempts > 0 {
		return s.MaxSentAttempts
	}
	if s.MaxAttempts > 0 {
		return s.MaxAttempts
	}
	return DefaultMaxAttempts
}

// NewEnrollment is what initiation knows about a new enrollment.
type NewEnrollment struct {
	ID, ExchangeID, Sub, Method string
	ExpiresAt                   time.Time
	// PendingCredential is the registry's sealed pending credential.
	PendingCredential []byte
	// Sent is where the first code went, for a method whose codes are sent (EMAIL, SMS).
	Sent factor.Sent
}

// Create records a new INITIATED enrollment. Repeating the same request is harmless; repeating
// it with another pending credential (a retried keyed initiation, which handed out a new
// secret) replaces the stored one while the enrollment is still INITIATED, so the secret of
// the latest answer is the one that enrolls.
func (s *Service) Create(ctx context.Context, in NewEnrollment) (Enrollment, error) {
	if in.ID == "" || in.ExchangeID == "" || in.Sub == "" {
		return Enrollment{}, fmt.Errorf("%w: id, exchange id and sub are required", ErrBadRequest)
	}
	m, ok := method.ByName(strings.ToUpper(in.Method))
	if !ok || !m.Enrolls {
		return Enrollment{}, fmt.Errorf("%w: unsupported verification type %q", ErrBadRequest, in.Method)
	}
	now := s.now()
	if !in.ExpiresAt.After(now) {
		return Enrollment{}, fmt.Errorf("%w: expires_at is in the past", ErrBadRequest)
	}
	e := Enrollment{
		ID: in.ID, ExchangeID: in.ExchangeID, Sub: in.Sub, Method: m.Name,
		State: Initiated, CreatedAt: now, UpdatedAt: now, ExpiresAt: in.ExpiresAt.UTC(), Seq: 1,
		PendingCredential: in.PendingCredential,
	}
	if m.Channel != "" {
		e.Sent = in.Sent
		e.Sent.Delivery, e.Sent.SentAt = factor.DeliveryPending, now
	}
	msg, err := s.event(e, "", &change{})
	if err != nil {
		return Enrollment{}, err
	}
	// No live announcement: nobody can be watching an enrollment whose status id the
	// initiation has not answered yet.
	created, err := s.Store.Create(ctx, e, msg)
	if err == nil {
		s.entered(created, "")
	}
	if errors.Is(err, ErrConflict) {
		if old, gerr := s.Store.Get(ctx, in.ID); gerr == nil && old.ExchangeID == in.ExchangeID && old.Sub == in.Sub {
			if bytes.Equal(old.PendingCredential, in.PendingCredential) {
				return old, nil
			}
			return s.apply(ctx, old, func(e Enrollment) (Enrollment, *change, error) {
				if e.State != Initiated {
					return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
				}
				e.PendingCredential = in.PendingCredential
				if in.Sent.DeliveryID != "" {
					// A retried EMAIL or SMS initiation sent a new code: show its delivery.
					e.Sent = in.Sent
					e.Sent.Delivery, e.Sent.SentAt = factor.DeliveryPending, s.now()
				}
				return e, &change{silent: true}, nil
			})
		}
	}
	return created, err
}

// Get returns sub's enrollment id. Another user's enrollment is ErrNotFound, so ids cannot be
// probed. An enrollment past its expiry is expired now, so a poll never shows it open.
func (s *Service) Get(ctx context.Context, id string, caller Caller) (Enrollment, error) {
	e, err := s.Store.Get(ctx, id)
	if err != nil {
		return Enrollment{}, err
	}
	if !e.VisibleTo(caller) {
		return Enrollment{}, ErrNotFound
	}
	if e.DueToExpire(s.now()) {
		e, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) { return e, nil, nil })
		if errors.Is(err, ErrExpired) {
			err = nil
		}
	}
	return e, err
}

// Scan records that a companion scanned the QR: INITIATED → SCANNED. A repeated scan by the
// same device is answered with the current state; a scan by another device is a conflict.
func (s *Service) Scan(ctx context.Context, exchangeID string, dev Device) (Enrollment, error) {
	if exchangeID == "" {
		return Enrollment{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	e, err := s.Store.GetByExchangeID(ctx, exchangeID)
	if err != nil {
		return Enrollment{}, err
	}
	return s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch e.State {
		case Initiated:
			e.State, e.Device = Scanned, dev
			return e, &change{channel: ChannelCompanion}, nil
		case Scanned:
			if e.Device.DeviceID == dev.DeviceID {
				return e, nil, nil
			}
			return e, nil, fmt.Errorf("%w: scanned by another device", ErrConflict)
		case Expired:
			return e, nil, ErrExpired
		default:
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
	})
}

// EnrollInput completes an enrollment with a code.
type EnrollInput struct {
	ExchangeID string
	Code       string
	// Sub is the authenticated user for frontend requests; empty for the companion, whose
	// capability is the exchange id itself.
	Sub     string
	Device  Device
	Channel string
	// Method, when set (the frontend's enroll/{type}), must be the enrollment's method.
	Method string
	// Credential is a passkey's registration response (WEBAUTHN), in place of Code.
	Credential []byte
}

// Enroll completes an enrollment with a code: INITIATED|SCANNED → ENROLLED. A wrong code counts
// an attempt; the MaxAttempts-th makes the enrollment FAILED. An enrollment that is already
// ENROLLED (or otherwise finished) is ErrConflict, whatever the code: a frontend that lost the
// answer reads the status instead. The one exception is the companion repeating the enroll
// frame that enrolled it, shortly after (see repeat.go): it gets the enrollment again.
func (s *Service) Enroll(ctx context.Context, in EnrollInput) (Enrollment, error) {
	if in.ExchangeID == "" {
		return Enrollment{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	passkey := len(in.Credential) > 0
	// Apps show codes as "123 456"; people type them that way.
	in.Code = strings.ReplaceAll(in.Code, " ", "")
	if !passkey && !validCodeFormat(in.Code) {
		return Enrollment{}, fmt.Errorf("%w: verification_code must be 6 to 8 digits", ErrBadRequest)
	}
	e, err := s.Store.GetByExchangeID(ctx, in.ExchangeID)
	if err != nil {
		return Enrollment{}, err
	}
	if in.Sub != "" && e.Sub != in.Sub {
		return Enrollment{}, ErrNotFound
	}
	if in.Method != "" && in.Method != e.Method {
		return Enrollment{}, fmt.Errorf("%w: this enrollment is of type %s, not %s", ErrConflict, e.Method, in.Method)
	}
	if m, _ := method.ByName(e.Method); (m.SignIn == method.Assertion) != passkey {
		return Enrollment{}, fmt.Errorf("%w: a passkey enrollment takes credential (the registration response), other enrollments a verification_code", ErrBadRequest)
	}
	// Settle expiry and terminal states before asking the registry. A finished enrollment
	// takes no more codes: answering success would accept any code from any device. Only the
	// frame that enrolled it, repeated by its device, is answered again.
	repeat := false
	e, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch e.State {
		case Initiated, Scanned:
			return e, nil, nil
		case Expired:
			return e, nil, ErrExpired
		case Enrolled:
			if passkey {
				// The registration's challenge was answered once; a response sent again is a
				// replay, and nothing more is stored.
				return e, nil, fmt.Errorf("this enrollment's challenge was used already: %w", factor.ErrInvalidCredential)
			}
			if repeat = s.isRepeat(e, in); repeat {
				return e, nil, nil
			}
		}
		return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
	})
	if err != nil || repeat {
		return e, err
	}
	dev := in.Device
	if dev.DeviceID == "" {
		dev.DeviceID = e.Device.DeviceID
	}
	if dev.Name == "" {
		dev.Name = e.Device.Name
	}
	if dev.Platform == "" {
		dev.Platform = e.Device.Platform
	}
	var claim Claim
	switch {
	case passkey && s.Passkeys == nil:
		return e, fmt.Errorf("%w: passkeys are not available here", ErrBadRequest)
	case passkey:
		claim, err = s.Passkeys.VerifyPasskey(ctx, e.ID, e.Sub, in.Credential, e.PendingCredential)
	default:
		claim, err = s.Registry.Verify(ctx, e.ID, e.Sub, in.Code, dev, e.PendingCredential)
	}
	if errors.Is(err, factor.ErrInvalidCode) {
		return s.countFailure(ctx, e, in.Channel)
	}
	if errors.Is(err, ErrCredentialVoid) {
		return s.failVoid(ctx, e, in.Channel)
	}
	if err != nil {
		return Enrollment{}, err
	}
	// The outcome is decided here, by compare-and-set against cancels and expiry.
	e, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch {
		case e.State == Enrolled && e.PHID == claim.PHID && e.DeviceID == claim.DeviceID:
			return e, nil, nil // a concurrent request with the same claim won
		case e.State == Expired:
			return e, nil, ErrExpired
		case e.State.Terminal():
			return e, nil, fmt.Errorf("%w: enrollment became %s", ErrConflict, e.State)
		}
		e.State, e.PHID, e.DeviceID = Enrolled, claim.PHID, claim.DeviceID
		e.Device.DeviceID, e.Device.Name, e.Device.Platform = claim.DeviceID, dev.Name, dev.Platform
		if in.Channel == ChannelCompanion {
			e.EnrollProof = s.enrollProof(e.ID, in.Code, claim.DeviceID, dev.Key)
		}
		return e, &change{channel: in.Channel, announceLater: true}, nil
	})
	if err != nil {
		if e.State.Terminal() && e.State != Enrolled {
			// A cancel or an expiry won after the code was accepted. The registry also
			// discards the claim on the ending's event, but that may have been handled before
			// the claim was stored; discarding here covers that order.
			if derr := s.Registry.Discard(context.WithoutCancel(ctx), e.ID); derr != nil && s.OnRegistryError != nil {
				s.OnRegistryError("discard", e.ID, derr)
			}
		}
		return e, err
	}
	// Registering now lets the device list show the device as soon as the caller sees
	// ENROLLED. Should it fail, the registry registers it from the enrolled event instead;
	// the enrollment's answer stands either way.
	if aerr := s.Registry.Activate(ctx, e.ID, e.Sub, claim); aerr != nil && s.OnRegistryError != nil {
		s.OnRegistryError("activate", e.ID, aerr)
	}
	s.changed(e)
	return e, nil
}

// Resend sends a new code for sub's open enrollment with exchange id exchangeID (EMAIL, SMS);
// the previous code stops working. At most one per factor.ResendInterval and factor.MaxResends
// per enrollment, else a *factor.RetryLaterError.
func (s *Service) Resend(ctx context.Context, exchangeID, sub, methodName string) (Enrollment, error) {
	if exchangeID == "" {
		return Enrollment{}, fmt.Errorf("%w: exchange_id is required", ErrBadRequest)
	}
	e, err := s.Store.GetByExchangeID(ctx, exchangeID)
	if err != nil {
		return Enrollment{}, err
	}
	if e.Sub != sub {
		return Enrollment{}, ErrNotFound
	}
	if methodName != "" && methodName != e.Method {
		return Enrollment{}, fmt.Errorf("%w: this enrollment is of type %s, not %s", ErrConflict, e.Method, methodName)
	}
	if m, _ := method.ByName(e.Method); m.Channel == "" {
		return Enrollment{}, fmt.Errorf("%w: codes of %s are not sent; there is nothing to resend", ErrConflict, e.Method)
	}
	e, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch e.State {
		case Initiated:
			return e, nil, e.Sent.ResendAllowed(s.now())
		case Expired:
			return e, nil, ErrExpired
		default:
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
	})
	if err != nil {
		return e, err
	}
	sent, pending, err := s.Registry.Resend(ctx, e.ID, e.Sub, e.PendingCredential)
	if err != nil {
		return e, err
	}
	return s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if e.State != Initiated {
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
		sent.Resends, sent.Delivery, sent.SentAt = e.Sent.Resends+1, factor.DeliveryPending, s.now()
		e.Sent, e.PendingCredential = sent, pending
		return e, &change{silent: true}, nil
	})
}

// SetDelivery records the notifier's report on delivery deliveryID of enrollment id: state is
// factor.DeliverySent or factor.DeliveryFailed. A report on a code a resend replaced, or one
// already recorded, changes nothing.
func (s *Service) SetDelivery(ctx context.Context, id, deliveryID, state string) error {
	e, err := s.Store.Get(ctx, id)
	if err != nil {
		return err
	}
	_, err = s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if e.Sent.DeliveryID != deliveryID || e.Sent.Delivery == state || e.State.Terminal() {
			return e, nil, nil
		}
		e.Sent.Delivery = state
		return e, &change{silent: true}, nil
	})
	if errors.Is(err, ErrExpired) {
		return nil
	}
	return err
}

// failVoid ends an enrollment whose credential the registry will never verify (ErrCredentialVoid)
// as FAILED with reason credential_void, so that the frontend, reading a terminal status, starts
// a new one instead of sending codes until the enrollment expires.
func (s *Service) failVoid(ctx context.Context, e Enrollment, channel string) (Enrollment, error) {
	e, err := s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if e.State.Terminal() {
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
		e.State = Failed
		return e, &change{channel: channel, reason: "credential_void"}, nil
	})
	if err != nil {
		return e, err
	}
	return e, fmt.Errorf("%w: the enrollment's credential is void (the user's factors were reset); start a new enrollment", ErrConflict)
}

func (s *Service) countFailure(ctx context.Context, e Enrollment, channel string) (Enrollment, error) {
	failed := false
	e, err := s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		if e.State.Terminal() {
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
		e.FailedAttempts++
		if e.FailedAttempts < s.maxAttempts(e) {
			return e, &change{silent: true}, nil
		}
		failed = true
		e.State = Failed
		return e, &change{channel: channel, reason: "too_many_attempts"}, nil
	})
	if err != nil {
		return e, err
	}
	if failed {
		return e, ErrFailed
	}
	return e, factor.ErrInvalidCode
}

// Cancel ends sub's pending enrollment: INITIATED|SCANNED → CANCELLED. Cancelling a cancelled
// enrollment answers it unchanged.
func (s *Service) Cancel(ctx context.Context, id string, caller Caller) (Enrollment, error) {
	e, err := s.Store.Get(ctx, id)
	if err != nil {
		return Enrollment{}, err
	}
	if !e.VisibleTo(caller) {
		return Enrollment{}, ErrNotFound
	}
	return s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) {
		switch e.State {
		case Initiated, Scanned:
			e.State = Cancelled
			return e, &change{channel: ChannelFrontend}, nil
		case Cancelled:
			return e, nil, nil
		case Expired:
			return e, nil, ErrExpired
		default:
			return e, nil, fmt.Errorf("%w: enrollment is %s", ErrConflict, e.State)
		}
	})
}

// ExpireDue moves every open enrollment past its expiry to EXPIRED and returns how many it
// expired. Replicas may run it concurrently: compare-and-set lets one win.
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	due, err := s.Store.DueForExpiry(ctx, s.now())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range due {
		_, err := s.apply(ctx, e, func(e Enrollment) (Enrollment, *change, error) { return e, nil, nil })
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
	silent  bool
	channel string
	reason  string
	// announceLater: the caller announces the change itself, after more work (ENROLLED is
	// announced once the registry has registered the device, so a frontend that lists the
	// devices on ENROLLED finds it).
	announceLater bool
}

// maxCASRetries bounds retries when concurrent writers keep winning. Each lost race means
// another write succeeded, so this is the number of concurrent writers one write outlasts
// (twenty submissions of codes for one enrollment must not starve the right one).
const maxCASRetries = 64

// apply runs fn on e and writes the result with compare-and-set, re-reading and re-running fn
// when another writer got there first. Before fn, an open enrollment past its expiry becomes
// EXPIRED (written, with its event) and apply returns ErrExpired.
func (s *Service) apply(ctx context.Context, e Enrollment, fn func(Enrollment) (Enrollment, *change, error)) (Enrollment, error) {
	for range maxCASRetries {
		now := s.now()
		var (
			next Enrollment
			ch   *change
			err  error
		)
		if e.DueToExpire(now) {
			next, ch, err = e, &change{}, ErrExpired
			next.State = Expired
		} else {
			next, ch, err = fn(e)
			if ch == nil {
				return next, err
			}
		}
		next.UpdatedAt = now
		next.Seq = e.Seq + 1
		if next.State.Terminal() {
			// The registry holds the claimed credential from here on, or none is needed.
			next.PendingCredential = nil
		}
		var msgs []outbox.Message
		if !ch.silent {
			msg, merr := s.event(next, e.State, ch)
			if merr != nil {
				return e, merr
			}
			msgs = append(msgs, msg)
		}
		written, werr := s.Store.Update(ctx, next, msgs...)
		if errors.Is(werr, ErrStale) {
			if e, werr = s.Store.Get(ctx, e.ID); werr != nil {
				return Enrollment{}, werr
			}
			continue
		}
		if werr != nil {
			return e, werr
		}
		if !ch.announceLater {
			s.changed(written)
		}
		s.entered(written, e.State)
		return written, err
	}
	return e, fmt.Errorf("%w: gave up after %d attempts", ErrStale, maxCASRetries)
}

var stateEvents = map[State]events.Type{
	Initiated: events.EnrollmentInitiated,
	Scanned:   events.EnrollmentScanned,
	Enrolled:  events.EnrollmentEnrolled,
	Expired:   events.EnrollmentExpired,
	Cancelled: events.EnrollmentCancelled,
	Failed:    events.EnrollmentFailed,
}

// event builds the CloudEvent for e having entered its state from prev.
func (s *Service) event(e Enrollment, prev State, ch *change) (outbox.Message, error) {
	typ := stateEvents[e.State]
	data := events.Enrollment{
		StatusID: e.ID, Sub: e.Sub, Method: e.Method, Status: string(e.State),
		PreviousStatus: string(prev), ExpiresAt: e.ExpiresAt, DeviceID: e.Device.DeviceID,
		Platform: e.Device.Platform, PHID: e.PHID, Channel: ch.channel, Reason: ch.reason,
	}
	if e.State == Failed {
		data.FailedAttempts = e.FailedAttempts
	}
	id := uuid.NewSHA1(eventNamespace, []byte(e.ID+"/"+string(typ))).String()
	env, err := events.New(id, events.SourceStatus, typ, e.ID, e.UpdatedAt, data)
	if err != nil {
		return outbox.Message{}, err
	}
	return outbox.FromEnvelope(env)
}

func validCodeFormat(code string) bool {
	if len(code) < 6 || len(code) > 8 {
		return false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
